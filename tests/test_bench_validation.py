"""benchmarks/bench_validation.py: one validation pass per chunk size; the chunk changes the time, not the loss."""
import json
import sys

import pytest

from benchmarks import bench_validation
from tests.test_engine import make_config, write_tiny_dataset


@pytest.mark.parametrize("paradigm", ["CRL", "Hybrid"])
def test_every_chunk_size_gives_the_same_validation_loss(tmp_path, monkeypatch, paradigm):
    npz_dir, splits = write_tiny_dataset(tmp_path / "data")
    config = make_config((tmp_path, npz_dir, splits), paradigm)
    out = tmp_path / "rows.json"
    monkeypatch.setattr(sys, "argv", ["bench_validation.py", "--configs", str(config), "--gpu", "cpu",
                                      "--chunks", "3", "64", "--json", str(out)])
    bench_validation.main()
    rows = json.loads(out.read_text())
    assert [r["chunk"] for r in rows] == [3, 64] and all(r["val_epochs"] == 24 for r in rows)
    assert rows[0]["loss"] == pytest.approx(rows[1]["loss"], rel=1e-5)
    assert all(r["seconds"] > 0 and r["peak_gpu_memory_gb"] is None for r in rows)  # no GPU figures on CPU
