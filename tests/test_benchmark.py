"""benchmark.py end to end on the demo data: two tiny configs (one fixed, its reference-compatible twin), both
tables written, and a second invocation that finds every run complete and trains nothing; a second seed as runs
of their own. The run list over (config, fold, seed) and the tables' aggregation over seeds on hand-made results."""
import csv
import json
import subprocess
import threading
from pathlib import Path

import pytest
import torch

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

    # seeds: the config's own (42) is the run above; seed 7 is a run of its own, resumable like the others.
    # Shard 2 of 4 of (T_MP, T_MP_seed-7, REF_T_MP, REF_T_MP_seed-7) is T_MP_seed-7 alone.
    benchmark.main(args + ["--seeds", "42"])
    assert "2 run(s), 2 in shard 1/1, 0 to do" in capsys.readouterr().out
    seeded = args + ["--seeds", "42,7", "--shard", "2/4"]
    benchmark.main(seeded)
    assert "4 run(s), 1 in shard 2/4, 1 to do" in capsys.readouterr().out
    trained = torch.load(bench_dir / "checkpoints" / "T_MP_seed-7" / "ckpt_fold-01.pth", weights_only=False)
    assert (trained["config"]["exp_name"], trained["config"]["trainer"]["seed"]) == ("T_MP_seed-7", 7)
    for run in ("T_MP_seed-7", "T_MP_seed-7_mlp-probe", "T_MP_seed-7/latent"):
        assert json.loads((results / run / "metrics.json").read_text())["folds"] == [1]
    assert (bench_dir / "logs" / "benchmark" / "T_MP_seed-7_fold-01.log").is_file()
    assert stamps == {p: p.stat().st_mtime_ns for p in stamps}  # seed 42's checkpoints untouched
    text = (results / "key_results.md").read_text()
    assert "| MP | CNN | fixed | linear | 1 of 1 × 2 seeds |" in text
    assert "| MP | CNN | reference-compatible | linear | 1 run of 1 × 2 seeds |" in text
    assert "- REF_T_MP_seed-7 fold-01 (trainer.seed 7): pretraining, probe linear, probe mlp, latent" in text
    benchmark.main(seeded)
    assert "4 run(s), 1 in shard 2/4, 0 to do" in capsys.readouterr().out


def test_two_folds_of_one_config_both_complete(bench_dir, capsys):
    """--folds 1,2 of a config without a twin: fold 2 trains into the exp_name that fold 1 already holds."""
    (bench_dir / "solo").mkdir()
    (bench_dir / "solo" / "T_SOLO.json").write_text(json.dumps(tiny_config("T_SOLO", 0.5)))
    benchmark.main(["--configs", "solo/T_SOLO.json", "--folds", "1,2", "--gpu", "cpu"])
    assert "2 run(s), 2 in shard 1/1, 2 to do" in capsys.readouterr().out
    for run in ("T_SOLO", "T_SOLO_mlp-probe"):
        assert json.loads((bench_dir / "results" / run / "metrics.json").read_text())["folds"] == [1, 2]
    assert sorted(p.name for p in (bench_dir / "checkpoints" / "T_SOLO").glob("ckpt_fold-*.pth")) == \
        ["ckpt_fold-01.pth", "ckpt_fold-02.pth"]
    assert json.loads((bench_dir / "results" / "T_SOLO" / "latent" / "metrics.json").read_text())["folds"] == [1, 2]


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


def test_seeds_make_one_run_per_config_fold_and_seed_split_over_shards(bench_dir):
    configs = benchmark.load_configs([Path("configs/T_MP.json")])  # T_MP and its twin REF_T_MP, trainer.seed 42
    variants = benchmark.seed_variants(configs, [42, 1, 2])
    runs = benchmark.plan(configs, {"T_MP": [1], "REF_T_MP": [1]}, variants)
    assert [r.name for r in runs] == ["T_MP fold-01", "T_MP_seed-1 fold-01", "T_MP_seed-2 fold-01",
                                      "REF_T_MP fold-01", "REF_T_MP_seed-1 fold-01", "REF_T_MP_seed-2 fold-01"]
    assert [r.config.seed for r in runs] == [42, 1, 2, 42, 1, 2]
    assert [r.config.reference for r in runs] == [False] * 3 + [True] * 3
    own, other = (benchmark.step_command(runs[i], "pretraining", "cpu", ["trainer.max_epochs=3"]) for i in (0, 1))
    assert own[-2:] == ["--set", "trainer.max_epochs=3"]  # the config's own seed: today's command
    assert other[-6:] == ["--set", "trainer.max_epochs=3", "--set", "exp_name=T_MP_seed-1", "--set", "trainer.seed=1"]
    probe = benchmark.step_command(runs[5], "probe mlp", "cpu", [])
    assert probe[-4:] == ["--set", "exp_name=REF_T_MP_seed-2", "--set", "trainer.seed=2"]
    latent = benchmark.step_command(runs[5], "latent", "cpu", [])
    assert latent[1:] == ["--embeddings", str(Path("checkpoints/REF_T_MP_seed-2/embeddings_fold-01.pt")),
                          "--self-comparison"]
    assert [[r.name for r in benchmark.shard_of(runs, k, 4)] for k in (1, 2, 3, 4)] == [
        ["T_MP fold-01", "REF_T_MP_seed-1 fold-01"], ["T_MP_seed-1 fold-01", "REF_T_MP_seed-2 fold-01"],
        ["T_MP_seed-2 fold-01"], ["REF_T_MP fold-01"]]
    assert [v.exp_name for v in benchmark.seed_variants(configs, None)["T_MP"]] == ["T_MP"]  # default: own seed
    assert [v.exp_name for v in benchmark.seed_variants(configs, [7])["T_MP"]] == ["T_MP_seed-7"]


def write_probe_metrics(run: str, scores: tuple[float, float, float]) -> None:
    """results/<run>/metrics.json with fold 1's accuracy, macro-F1 and kappa, as probing.results writes them."""
    out = Path("results") / run
    out.mkdir(parents=True)
    row = {"fold": 1, **dict(zip(("accuracy", "macro_f1", "kappa"), scores))}
    (out / "metrics.json").write_text(json.dumps({"folds": [1], "per_fold": [row]}))


def write_latent_metrics(exp: str, purity: float) -> None:
    out = Path("results") / exp / "latent"
    out.mkdir(parents=True)
    row = {"metric": "purity_hungarian_kmeans", "space": "latent", "value": purity, "std": None,
           "per_fold": [{"fold": 1, "value": purity, "points": 100}]}
    (out / "metrics.json").write_text(json.dumps({"folds": [1], "metrics": [row]}))


def test_tables_show_mean_and_std_over_seeds_and_list_missing_runs_with_their_seed(bench_dir):
    fixed = {"T_MP": (0.70, 0.50, 0.60), "T_MP_seed-1": (0.72, 0.52, 0.62), "T_MP_seed-2": (0.74, 0.54, 0.64)}
    compatible = {"REF_T_MP": (0.60, 0.40, 0.50), "REF_T_MP_seed-1": (0.62, 0.42, 0.52)}  # seed 2 not run
    for run, scores in {**fixed, **compatible}.items():
        for name in (run, f"{run}_mlp-probe"):
            write_probe_metrics(name, scores)
    for exp, purity in {"T_MP": 0.5, "T_MP_seed-1": 0.6, "T_MP_seed-2": 0.7, "REF_T_MP": 0.4}.items():
        write_latent_metrics(exp, purity)
    benchmark.main(["--configs", "configs/T_MP.json", "--seeds", "42,1,2", "--tables-only"])
    text = (bench_dir / "results" / "key_results.md").read_text()
    # 0.70, 0.72, 0.74: mean 72.0, sample std 2.0; kappa 0.620 ± 0.020; the twin 61.0 ± sqrt(2) of two runs
    assert "| MP | CNN | fixed | linear | 1 of 1 × 3 seeds | 72.0 ± 2.0 | 52.0 ± 2.0 | 0.620 ± 0.020 |" in text
    assert "| MP | CNN | reference-compatible | mlp | 2 runs of 1 × 3 seeds | 61.0 ± 1.4 | 41.0 ± 1.4 | " \
           "0.510 ± 0.014 |" in text
    # difference 72.0 - 61.0 = 11.0, standard error sqrt(2.0²/3 + 1.414²/2) = sqrt(7/3) = 1.53
    assert ("| MP | CNN | linear | 61.0 ± 1.4 / 41.0 ± 1.4 / 0.510 ± 0.014 "
            "| 72.0 ± 2.0 / 52.0 ± 2.0 / 0.620 ± 0.020 | +11.0 ± 1.5 / +11.0 ± 1.5 / +0.110 ± 0.015 |") in text
    # latent purity: fixed 0.5, 0.6, 0.7 -> 0.6 ± 0.1 against the twin's one run 0.4
    assert "| Purity Score | purity_hungarian_kmeans | reference | latent | 0.4 | 0.6 ± 0.1 | +0.2 |" in text
    assert "(reference-compatible folds [1] at trainer.seed 42, – at trainer.seed 1, – at trainer.seed 2; " \
           "fixed folds [1] at trainer.seed 42, [1] at trainer.seed 1, [1] at trainer.seed 2)" in text
    assert "- T_MP_seed-1 fold-01 (trainer.seed 1): pretraining, probe linear, probe mlp, latent" in text
    assert "- REF_T_MP fold-01 (trainer.seed 42): pretraining" in text
    rows = list(csv.DictReader(open(bench_dir / "results" / "key_results.csv")))
    change = next(r for r in rows if r["table"] == "what_the_fixes_change" and r["probe"] == "linear")
    assert float(change["accuracy_difference"]) == pytest.approx(11.0)
    assert float(change["accuracy_difference_se"]) == pytest.approx((7 / 3) ** 0.5)
    linear = next(r for r in rows if r["table"] == "key_results" and r["exp_name"] == "T_MP" and r["probe"] == "linear")
    assert (linear["runs_done"], linear["trainer_seeds"], float(linear["accuracy_std"])) == ("3", "42 1 2",
                                                                                              pytest.approx(2.0))


@pytest.mark.parametrize("spec, named", [("42,x", "'x' is not"), ("1,-2", "'-2' is not"), ("1,1", "given twice")])
def test_bad_seeds_are_a_one_line_error_naming_the_value(bench_dir, spec, named):
    with pytest.raises(SystemExit) as exit_info:
        benchmark.main(["--configs", "configs/T_MP.json", "--seeds", spec, "--tables-only"])
    message = str(exit_info.value)
    assert message.startswith(f"error: --seeds {spec}: ") and named in message and "\n" not in message


def test_memoised_hashes_read_an_unchanged_file_once_and_a_rewritten_one_again(tmp_path, monkeypatch):
    import hashlib
    import os

    import utils

    reads = []
    monkeypatch.setattr(utils, "_read_sha256", lambda path, read=utils._read_sha256: reads.append(path) or read(path))
    path = tmp_path / "ckpt_fold-01.pth"
    path.write_bytes(b"a" * 10)
    with utils.memoised_hashes():
        assert utils.file_sha256(path) == utils.file_sha256(path) == hashlib.sha256(b"a" * 10).hexdigest()
        assert len(reads) == 1
        stat = path.stat()
        path.write_bytes(b"b" * 10)  # same size; a later mtime
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        assert utils.file_sha256(path) == hashlib.sha256(b"b" * 10).hexdigest() and len(reads) == 2
    utils.file_sha256(path), utils.file_sha256(path)
    assert len(reads) == 4  # outside the block every call reads the bytes (download verification relies on it)


def test_on_a_gpu_the_next_run_trains_while_the_last_one_evaluates_its_latents(tmp_path, monkeypatch):
    """Two runs, one GPU: run A's latent evaluation (CPU only) waits until run B has started pretraining on
    the GPU, which it can only do once A has handed the GPU back."""
    monkeypatch.chdir(tmp_path)
    config = benchmark.Config(tmp_path / "T.json", {"exp_name": "T", "trainer": {"seed": 42}}, False, ())
    runs = [benchmark.Run(config, 1), benchmark.Run(config, 2)]
    done = {run.fold: [] for run in runs}
    b_pretraining = threading.Event()
    events = []

    monkeypatch.setattr(benchmark, "missing_steps",
                        lambda run: [s for s in ("pretraining", "probe linear", "probe mlp", "latent") if s not in done[run.fold]])

    def step_command(run, step, gpu, overrides):
        return [step, str(run.fold), gpu]

    def fake_subprocess_run(command, stdout, stderr, env):
        step, fold = Path(command[1]).name, int(command[2])  # [python, REPO / step, fold, gpu]
        events.append((step, fold, env.get("CUDA_VISIBLE_DEVICES")))
        if (step, fold) == ("pretraining", 2):
            b_pretraining.set()
        if (step, fold) == ("latent", 1):
            assert b_pretraining.wait(timeout=120), "run 2 never got the GPU while run 1 evaluated its latents"
        done[fold].append(step)
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(benchmark, "step_command", step_command)
    monkeypatch.setattr(benchmark.subprocess, "run", fake_subprocess_run)
    assert benchmark.run_all(runs, ["0"], []) == []
    assert all(done[run.fold] == ["pretraining", "probe linear", "probe mlp", "latent"] for run in runs)
    assert {device for step, _, device in events if step != "latent"} == {"0"}


def test_a_gpu_named_twice_warns_unless_an_mps_daemon_answers(tmp_path):
    pipe = tmp_path / "mps"
    pipe.mkdir()
    environ = {"CUDA_MPS_PIPE_DIRECTORY": str(pipe)}
    warning = benchmark.mps_warning(["0", "0", "1"], environ)
    assert warning.startswith("warning: GPU 0 named more than once") and "nvidia-cuda-mps-control -d" in warning
    assert "\n" not in warning
    assert benchmark.mps_warning(["0", "1"], environ) is None  # one run per GPU: nothing to share
    assert benchmark.mps_warning(["cpu", "cpu"], environ) is None
    (pipe / "control").touch()  # the daemon's control pipe
    assert benchmark.mps_warning(["0", "0"], environ) is None
