"""benchmarks/reference_throughput/throughput.py: the reference's steady samples/s from a timestamped log."""
import re
import subprocess
import sys

from utils import REPO_ROOT as REPO

SCRIPT = REPO / "benchmarks" / "reference_throughput" / "throughput.py"


def train_record(t, i, total=100):
    return f"{t:.4f}\tTrain: Step: 100ms | Tot: 1s | Lr: 1e-3 | Loss: 0.5 {i}/{total}"


def test_steady_rate_leaves_out_validation_epoch_starts_and_the_partial_last_batch(tmp_path):
    """Steps 0.1 s apart are 1,280 samples/s at batch 128; the 4-s validation, the 3-s start of epoch 2 and the
    1-s partial last batch of epoch 1 would each pull the figure down if they were counted."""
    lines = ["0.0000\t[INFO] Fold: 1, Epoch: 1"]
    lines += [train_record(10 + 0.1 * i, i) for i in range(1, 61)]
    lines += ["16.0500\t[INFO] Starting evaluation...", "18.0000\tEval: Step: 5ms | Tot: 1s 3/9", "20.0000\tEval-Loss: 1.0"]
    lines += [train_record(20 + 0.1 * (i - 60), i) for i in range(61, 100)]
    lines += [train_record(24.9 + 1.0, 100)]
    lines += ["26.0000\t[INFO] Fold: 1, Epoch: 2"]
    lines += [train_record(29 + 0.1 * i, i) for i in range(1, 31)]
    log = tmp_path / "ref.txt"
    log.write_text("\n".join(lines) + "\n")
    out = subprocess.run([sys.executable, str(SCRIPT), str(log), "MP_CNN", "--batch", "128", "--warmup", "5"],
                         capture_output=True, text=True, check=True).stdout
    steady = float(re.search(r"steady (\d+) samples/s", out).group(1))
    assert steady == 1280
    # 54 + 38 + 29 step intervals inside the three train stretches after the 5 warm-up steps
    assert "x 121 step intervals" in out
    assert "epochs started 2, validations 1" in out


def test_too_short_a_log_says_no_result(tmp_path):
    log = tmp_path / "ref.txt"
    log.write_text("0.0000\t[INFO] Fold: 1, Epoch: 1\n" + train_record(1.0, 1) + "\n")
    out = subprocess.run([sys.executable, str(SCRIPT), str(log), "MP_CNN"], capture_output=True, text=True, check=True).stdout
    assert "NO RESULT" in out
