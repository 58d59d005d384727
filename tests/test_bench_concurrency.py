"""benchmarks/bench_concurrency.py measures CUDA streams, so without a GPU it refuses in one line."""
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
