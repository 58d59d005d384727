"""The GPU-only benchmarks (bench_concurrency.py, diagnose_two_graphs.py) refuse a machine without one in one line."""
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_cpu_is_refused_in_one_line_naming_the_gpu():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks/bench_concurrency.py"), "--config",
                           str(REPO / "configs/demo/DEMO_MP_CNN.json"), "--gpu", "cpu"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == ["bench_concurrency.py measures CUDA streams: give it a GPU (--gpu 0)"]


def test_the_two_graph_diagnosis_refuses_a_cpu_in_one_line():
    done = subprocess.run([sys.executable, str(REPO / "benchmarks/diagnose_two_graphs.py"), "--variants", "toy"],
                          capture_output=True, text=True, cwd=REPO)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == ["diagnose_two_graphs.py replays CUDA graphs: it needs a GPU"]
