"""benchmarks/bench_probe.py: the rows it times, and their mean ± sd over seeds."""
import json
import sys

import pytest

from benchmarks import bench_probe


def test_variants_are_linear_before_and_after_then_the_mlp_before_and_at_each_batch_size():
    assert bench_probe.variants(["linear", "mlp"], [128, 1024]) == [
        ("linear", "before", 256), ("linear", "after", None),
        ("mlp", "before", 256), ("mlp", "after", 128), ("mlp", "after", 1024)]
    assert bench_probe.variants(["mlp"], [512]) == [("mlp", "before", 256), ("mlp", "after", 512)]


def test_summary_is_the_mean_and_sample_sd_per_variant_in_points():
    def row(batch, seed, seconds, accuracy, kappa):
        return {"probe": "mlp", "loop": "after", "batch_size": batch, "seed": seed, "seconds": seconds,
                "accuracy": accuracy, "macro_f1": accuracy - 0.1, "kappa": kappa}

    rows = [row(128, 0, 2.0, 0.60, 0.40), row(128, 1, 4.0, 0.62, 0.44), row(1024, 0, 1.0, 0.70, 0.50),
            {"probe": "linear", "loop": "after", "batch_size": None, "seed": 0, "seconds": 0.5,
             "accuracy": 0.5, "macro_f1": 0.4, "kappa": 0.3}]
    summary = {s["label"]: s for s in bench_probe.summarise(rows)}
    assert list(summary) == ["mlp after @128", "mlp after @1024", "linear after"]
    # by hand: accuracy 60 and 62 points -> mean 61, sample sd sqrt(2) = 1.41; kappa 0.40, 0.44 -> 0.42 ± 0.028
    assert summary["mlp after @128"] == {"label": "mlp after @128", "seeds": 2, "seconds": 3.0,
                                         "accuracy": "61.00 ± 1.41", "macro_f1": "51.00 ± 1.41",
                                         "kappa": "0.4200 ± 0.0283"}
    assert summary["mlp after @1024"]["accuracy"] == "70.00 ± 0.00"  # one seed: no spread


def test_cpu_smoke_run_writes_one_row_per_variant_and_seed(tmp_path, monkeypatch):
    out = tmp_path / "probe.json"
    monkeypatch.setattr(sys, "argv", ["bench_probe.py", "--gpu", "cpu", "--smoke", "--seeds", "2", "--kinds", "mlp",
                                      "--mlp-batch-sizes", "128", "1024", "--set", "probe.epochs=2",
                                      "--json", str(out)])
    bench_probe.main()
    result = json.loads(out.read_text())
    assert [(r["loop"], r["batch_size"], r["seed"]) for r in result["rows"]] == [
        ("before", 256, 0), ("before", 256, 1), ("after", 128, 0), ("after", 128, 1), ("after", 1024, 0),
        ("after", 1024, 1)]
    assert [s["label"] for s in result["summary"]] == ["mlp before @256", "mlp after @128", "mlp after @1024"]
    assert all(0.2 < r["accuracy"] <= 1 and r["seconds"] > 0 for r in result["rows"])  # better than chance (5 stages)
