"""benchmark.py end to end on the demo data: two tiny configs (one fixed, its reference-compatible twin), both
tables written, and a second invocation that finds every run complete and trains nothing."""
import csv
import json
from pathlib import Path

import pytest

import benchmark
from dset.demo import make_demo

REPO = Path(__file__).resolve().parents[1]


def tiny_config(exp_name: str, masking_ratio: float) -> dict:
    config = json.loads((REPO / "configs" / "demo" / "DEMO_MP_CNN.json").read_text())
    config.pop("_comment", None)
    config["exp_name"] = exp_name
    config["trainer"].update(max_epochs=1, max_steps_per_epoch=2, batch_size=16)
    config["data"]["masking_ratio"] = masking_ratio
    config["probe"].update(epochs=2, patience=1)
    return config


@pytest.fixture
def bench_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make_demo(tmp_path / "dset" / "demo", n_subjects=5, epochs_per_night=240, num_folds=5, progress=False)
    (tmp_path / "configs" / "reference").mkdir(parents=True)
    (tmp_path / "configs" / "T_MP.json").write_text(json.dumps(tiny_config("T_MP", 0.5)))
    (tmp_path / "configs" / "reference" / "T_MP.json").write_text(json.dumps(tiny_config("REF_T_MP", 0.25)))
    return tmp_path


def test_benchmark_writes_both_tables_and_a_rerun_trains_nothing(bench_dir, capsys):
    args = ["--configs", "configs/T_MP.json", "--folds", "1", "--gpus", "cpu,cpu"]  # two runs at a time
    benchmark.main(args)
    assert "2 run(s), 2 in shard 1/1, 2 to do" in capsys.readouterr().out
    for exp in ("T_MP", "REF_T_MP"):
        assert (bench_dir / "checkpoints" / exp / "embeddings_fold-01.pt").is_file()
        for run in (exp, f"{exp}_mlp-probe"):
            assert json.loads((bench_dir / "results" / run / "metrics.json").read_text())["folds"] == [1]
        assert (bench_dir / "results" / exp / "latent" / "folds" / "fold-01.npz").is_file()
    reference_latent = json.loads((bench_dir / "results" / "REF_T_MP" / "latent" / "metrics.json").read_text())
    assert any(r["metric"] == "trustworthiness_self" for r in reference_latent["metrics"])  # only the twin's
    fixed_latent = json.loads((bench_dir / "results" / "T_MP" / "latent" / "metrics.json").read_text())
    assert not any(r["metric"] == "trustworthiness_self" for r in fixed_latent["metrics"])

    text = (bench_dir / "results" / "key_results.md").read_text()
    assert "| MP | CNN | fixed | linear | 1 of 1 |" in text
    assert "| MP | CNN | reference-compatible | mlp | 1 of 1 |" in text
    assert "## What the fixes change" in text and "None: every selected run is complete." in text
    # the self-against-self trustworthiness: reference-compatible column only, labelled
    self_row = ("| Trustworthiness | trustworthiness_self | reference, self against self | latent->latent "
                "| 1 | – | – |")
    assert self_row in text
    assert "| Purity Score | purity_hungarian_kmeans | reference | latent |" in text
    rows = list(csv.DictReader(open(bench_dir / "results" / "key_results.csv")))
    changes = [r for r in rows if r["table"] == "what_the_fixes_change"]
    assert {r["probe"] for r in changes} == {"linear", "mlp"}
    for r in changes:  # the difference column is fixed minus reference-compatible
        difference = float(r["accuracy_fixed"]) - float(r["accuracy_reference"])
        assert float(r["accuracy_difference"]) == pytest.approx(difference)
    linear = next(r for r in rows
                  if r["table"] == "key_results" and r["exp_name"] == "T_MP" and r["probe"] == "linear")
    metrics = json.loads((bench_dir / "results" / "T_MP" / "metrics.json").read_text())["pooled"]
    assert float(linear["macro_f1"]) == pytest.approx(100 * metrics["macro_f1"])  # seed units: macro-F1 x 100

    stamps = {p: p.stat().st_mtime_ns for p in (bench_dir / "checkpoints").rglob("*") if p.is_file()}
    logs = {p: p.read_text() for p in (bench_dir / "logs" / "benchmark").iterdir()}
    benchmark.main(args)
    assert "2 run(s), 2 in shard 1/1, 0 to do" in capsys.readouterr().out
    assert stamps == {p: p.stat().st_mtime_ns for p in (bench_dir / "checkpoints").rglob("*") if p.is_file()}
    assert logs == {p: p.read_text() for p in (bench_dir / "logs" / "benchmark").iterdir()}

    # a report that lacks a stored fold (two shards finishing at once) is rebuilt from the stored folds
    results = bench_dir / "results"
    for report in (results / "T_MP" / "metrics.json", results / "T_MP" / "latent" / "metrics.json"):
        report.unlink()
    benchmark.main(args + ["--tables-only"])
    row = f"| MP | CNN | fixed | linear | 1 of 1 | {float(linear['accuracy']):.1f} |"
    assert row in (results / "key_results.md").read_text()
    assert json.loads((results / "T_MP" / "latent" / "metrics.json").read_text())["folds"] == [1]


def test_shards_partition_the_runs_and_missing_runs_are_listed(bench_dir, capsys):
    configs = benchmark.load_configs([Path("configs/T_MP.json")])
    assert [c.exp_name for c in configs] == ["T_MP", "REF_T_MP"] and configs[1].reference
    runs = [benchmark.Run(c, f) for c in configs for f in (1, 2, 3)]
    shards = [benchmark.shard_of(runs, k, 4) for k in (1, 2, 3, 4)]
    assert sorted(r.name for shard in shards for r in shard) == sorted(r.name for r in runs)  # each run once
    assert [len(s) for s in shards] == [2, 2, 1, 1]
    benchmark.main(["--configs", "configs/T_MP.json", "--folds", "1,2", "--tables-only"])
    text = (bench_dir / "results" / "key_results.md").read_text()
    assert "- T_MP fold-02: pretraining, probe linear, probe mlp, latent" in text
    assert "| MP | CNN | fixed | linear | 0 of 2 | – |" in text
    with pytest.raises(SystemExit, match="--folds 7"):
        benchmark.main(["--configs", "configs/T_MP.json", "--folds", "7", "--tables-only"])


def test_readme_section_between_the_markers_is_rewritten(tmp_path):
    readme, key_results = tmp_path / "README.md", tmp_path / "key_results.md"
    start, end = benchmark.README_START, benchmark.README_END
    readme.write_text(f"# Project\n## Key Results\n{start}\nold table\n{end}\n## Next\n")
    key_results.write_text("# Key results\n\n| a | b |\n")
    benchmark.update_readme(readme, key_results)
    assert readme.read_text() == f"# Project\n## Key Results\n{start}\n| a | b |\n{end}\n## Next\n"
    readme.write_text("no markers\n")
    with pytest.raises(FileNotFoundError, match="markers"):
        benchmark.update_readme(readme, key_results)
