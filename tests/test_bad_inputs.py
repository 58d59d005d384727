"""The bad-input catalogue (issue 14). Each case asserts four things: the exit status; a message of one line (a
checkpoint/config mismatch: one more line per differing key) naming the file or key; no traceback printed; every
file that existed before unchanged (SHA-256). Then the results derived from a checkpoint (probe, latent), which
record its hash and are flagged or recomputed when it is replaced, and the small ones of the issue."""
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import classifier_training
import latent_space_evaluator
import pipeline
import predict
from benchmarks.bench_latent import gaussian_mixture, write_embeddings
from dset.demo import hypnogram_bytes, write_night
from dset.sleep_edf import edf_start
from models.main_model import build_model
from test_engine import REPO, make_config, workdir, write_tiny_dataset  # noqa: F401  (workdir is a fixture)
from training.config import load_config
from training.engine import save_embeddings, train_fold
from training.paradigms import PARADIGMS
from utils import select_device


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def hashes(root) -> dict:
    """{path: sha256} of every file under root."""
    return {str(p): sha256(p) for p in sorted(root.rglob("*")) if p.is_file()}


def unchanged(before: dict, root, mutable=()) -> bool:
    """Every file of `before` is still under root with the same hash (files named in `mutable` excepted)."""
    after = hashes(root)
    return all(after.get(path) == digest for path, digest in before.items() if os.path.basename(path) not in mutable)


def refused(main, argv, root, capsys, lines=1) -> str:
    """Run a CLI main in-process: it must exit with a message 'error: ...' of `lines` line(s) (a message, not a
    number, makes the interpreter exit with status 1), print no traceback, and change no existing file."""
    before = hashes(root)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        main(argv)
    message = exc.value.code
    assert isinstance(message, str) and message.startswith("error: "), message
    assert len(message.splitlines()) == lines, message
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err + message
    assert unchanged(before, root)
    return message


def failed(main, argv, root, capsys, status, mutable=()) -> tuple[str, str]:
    """Run a CLI main that returns its exit status: it must return `status`, print no traceback, and change no
    existing file (but those named in `mutable`). Returns (stdout, stderr)."""
    before = hashes(root)
    capsys.readouterr()
    assert main(argv) == status
    printed = capsys.readouterr()
    assert "Traceback" not in printed.out + printed.err
    assert unchanged(before, root, mutable)
    return printed.out, printed.err


def train_cli(paradigm):
    return lambda argv: pipeline.main(paradigm, argv)


def fold_1(workdir, *extra) -> list[str]:
    """The training command line of fold 1 of the tiny MP config, on the CPU."""
    return ["--config", str(make_config(workdir)), "--gpu", "cpu", "--fold", "1", *extra]


class WritesMarker:
    """Unpickling this object would run `touch <marker>`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def fake_checkpoint(config_path, path, **config_overrides):
    """A checkpoint of an untrained model in the format training writes (no training needed)."""
    config = load_config(config_path, [f"{k}={json.dumps(v)}" for k, v in config_overrides.items()])
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": build_model(config).state_dict(), "config": config, "fold": 1,
                "input_norm": {"mean": 0.0, "std": 1.0}, "epoch": 0, "step": 0, "val_loss": 1.0}, path)
    return path


# ----------------------------------------------------------------------------- checkpoints (items 5, 8)
def test_checkpoint_that_runs_code_on_unpickling_is_refused_and_never_runs(workdir, capsys):
    tmp, _, _ = workdir
    marker, evil = tmp / "marker", tmp / "evil.pth"
    torch.save({"model": WritesMarker(marker), "config": {}, "fold": 1}, evil)
    message = refused(classifier_training.main, ["--encoder_ckpt", str(evil), "--config", str(make_config(workdir)),
                                                 "--gpu", "cpu"], tmp, capsys)
    assert str(evil) in message and "not loaded" in message
    assert not marker.exists()


def test_crafted_checkpoint_in_a_subprocess_exits_1_without_traceback(workdir):
    tmp, _, _ = workdir
    marker, evil = tmp / "marker", tmp / "evil.pth"
    torch.save({"fold": WritesMarker(marker)}, evil)
    before = hashes(tmp)
    run = subprocess.run([sys.executable, str(REPO / "classifier_training.py"), "--encoder_ckpt", str(evil),
                          "--config", str(make_config(workdir)), "--gpu", "cpu"], capture_output=True, text=True, cwd=tmp)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().count("\n") == 0 and str(evil) in run.stderr
    assert not marker.exists() and unchanged(before, tmp)


@pytest.mark.parametrize("crafted", ["--ckpt", "--probe"])
def test_crafted_checkpoint_or_probe_given_to_predict_is_refused_and_never_runs(workdir, capsys, crafted):
    tmp, _, _ = workdir
    write_night(tmp / "edf", 0, epochs=240, seed=0)
    marker, evil = tmp / "marker", tmp / "evil.pt"
    torch.save({"format": 1, "state_dict": WritesMarker(marker)}, evil)
    ckpt = evil if crafted == "--ckpt" else fake_checkpoint(make_config(workdir), tmp / "ckpt.pth")
    argv = ["--ckpt", str(ckpt), "--edf", str(tmp / "edf" / "SC4001E0-PSG.edf"), "--gpu", "cpu",
            "--out", str(tmp / "out")]
    message = refused(predict.main, argv + (["--probe", str(evil)] if crafted == "--probe" else []), tmp, capsys)
    assert str(evil) in message and "not loaded" in message
    assert not marker.exists()


def test_checkpoints_written_by_training_load_with_weights_only(workdir, monkeypatch):
    config = load_config(make_config(workdir, "MP", max_epochs=1))
    train_fold(config, 1, "cpu")
    for name in ("ckpt_fold-01.pth", "last_fold-01.pth"):  # embeddings: test_latent_results_record_...
        torch.load(workdir[0] / "checkpoints" / "test_MP_CNN" / name, weights_only=True)


def test_truncated_checkpoint_is_named(workdir, capsys):
    tmp, _, _ = workdir
    good = fake_checkpoint(make_config(workdir), tmp / "good.pth")
    cut = tmp / "cut.pth"
    cut.write_bytes(good.read_bytes()[:500])
    message = refused(classifier_training.main, ["--encoder_ckpt", str(cut), "--config", str(make_config(workdir)),
                                                 "--gpu", "cpu"], tmp, capsys)
    assert str(cut) in message and "truncated or corrupt" in message


def test_plain_data_that_is_no_checkpoint_is_named(workdir, capsys):
    tmp, _, _ = workdir
    other = tmp / "other.pth"
    torch.save({"model": {}, "config": {}, "fold": 1, "input_norm": {"mean": 0.0, "std": 1.0}}, other)
    message = refused(classifier_training.main, ["--encoder_ckpt", str(other), "--config", str(make_config(workdir)),
                                                 "--gpu", "cpu"], tmp, capsys)
    assert str(other) in message and "not a DeepSleepBench checkpoint" in message and "ssl.type" in message


def test_backbone_mismatch_names_each_differing_key_on_its_own_line(workdir, capsys):
    tmp, _, _ = workdir
    config = make_config(workdir, "MP")
    ckpt = fake_checkpoint(config, tmp / "checkpoints" / "test_MP_CNN" / "ckpt_fold-01.pth",
                           **{"backbone.params": {"dropout": 0.3}})
    data = json.loads(config.read_text())
    data["backbone"]["params"] = {"dropout": 0.1}
    config.write_text(json.dumps(data))
    message = refused(classifier_training.main, ["--encoder_ckpt", str(ckpt), "--config", str(config), "--gpu", "cpu"],
                      tmp, capsys, lines=2)
    lines = message.splitlines()
    assert str(ckpt) in lines[0] and lines[1:] == ["  backbone.params.dropout: checkpoint 0.3, config 0.1"]


def test_paradigm_mismatch_is_named(workdir, capsys):
    tmp, _, _ = workdir
    ckpt = fake_checkpoint(make_config(workdir, "CRL"), tmp / "crl.pth")
    message = refused(classifier_training.main, ["--encoder_ckpt", str(ckpt), "--config", str(make_config(workdir, "MP")),
                                                 "--gpu", "cpu"], tmp, capsys)
    assert str(ckpt) in message and "CRL checkpoint" in message and "MP config" in message


def test_checkpoint_of_another_fold_than_fold_is_named(workdir, capsys):
    tmp, _, _ = workdir
    ckpt = fake_checkpoint(make_config(workdir), tmp / "checkpoints" / "test_MP_CNN" / "ckpt_fold-01.pth")
    message = refused(classifier_training.main, ["--encoder_ckpt", str(ckpt), "--fold", "2", "--config",
                                                 str(make_config(workdir)), "--gpu", "cpu"], tmp, capsys)
    assert str(ckpt) in message and "trained on fold 1, not fold 2" in message and "ckpt_fold-02.pth" in message


# ----------------------------------------------------------------------------- embeddings (items 5, 8)
def test_embeddings_of_another_fold_than_their_name_are_named(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "checkpoints" / "tiny" / "embeddings_fold-02.pt"
    write_embeddings(path, *gaussian_mixture(60, 4, seed=0), fold=1, exp_name="tiny")
    message = refused(latent_space_evaluator.main, ["--embeddings", str(path)], tmp_path, capsys)
    assert str(path) in message and "fold 1 ('fold')" in message and "its name says fold 2" in message


def test_crafted_embeddings_file_is_refused_and_never_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    marker, evil = tmp_path / "marker", tmp_path / "embeddings_fold-01.pt"
    torch.save({"z": WritesMarker(marker), "y": [], "fold": 1}, evil)
    message = refused(latent_space_evaluator.main, ["--embeddings", str(evil)], tmp_path, capsys)
    assert str(evil) in message and "not loaded" in message
    assert not marker.exists()


# ----------------------------------------------------------------------------- runs (items 1, 3, 6)
def test_rerun_is_refused_then_overwrite_removes_every_derived_result(workdir, capsys):
    tmp, _, _ = workdir
    config = make_config(workdir, "MP", max_epochs=1)
    pipeline.main("MP", ["--config", str(config), "--gpu", "cpu", "--fold", "1"])
    report = capsys.readouterr().out
    assert "ACC" in report and "MF1" in report and "kappa" in report
    assert "checkpoints/test_MP_CNN/ckpt_fold-01.pth" in report and "results/test_MP_CNN" in report
    assert "logs/test_MP_CNN" in report
    derived = [tmp / "results" / "test_MP_CNN" / "latent" / "metrics.json", tmp / "results" / "test_MP_CNN_mlp-probe" / "x"]
    for path in derived:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("old")
    message = refused(train_cli("MP"), ["--config", str(config), "--gpu", "cpu", "--fold", "1"], tmp, capsys)
    assert "checkpoints/test_MP_CNN" in message and all(w in message for w in ("--resume", "--overwrite", "--set exp_name="))
    others = [tmp / "results" / name / "metrics.json"  # other runs that share the name's prefix
              for name in ("test_MP_CNN_seed-7_mlp-probe", "test_MP_CNN_random-init_mlp-probe", "test_MP_CNN_seed-7")]
    for path in others + [tmp / "results" / "test_MP_CNN_labels-0.1" / "x"]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("other" if path in others else "old")
    derived.append(tmp / "results" / "test_MP_CNN_labels-0.1" / "x")
    pipeline.main("MP", ["--config", str(config), "--gpu", "cpu", "--fold", "1", "--overwrite"])
    assert not any(path.exists() for path in derived)
    assert all(path.read_text() == "other" for path in others)
    assert (tmp / "results" / "test_MP_CNN" / "metrics.json").is_file()


def test_another_fold_trains_beside_a_run_and_a_trained_fold_is_refused(workdir, capsys):
    """Fold 2 of an exp_name whose fold 1 is done trains without a flag (benchmark.py trains folds one by one)
    and leaves fold 1 alone; fold 1 again is refused, naming the fold."""
    tmp, _, _ = workdir
    config = make_config(workdir, "MP", max_epochs=1)
    pipeline.main("MP", ["--config", str(config), "--gpu", "cpu", "--fold", "1"])
    fold_1_files = {p: sha256(p) for p in (tmp / "checkpoints" / "test_MP_CNN").glob("*fold-01*")}
    pipeline.main("MP", ["--config", str(config), "--gpu", "cpu", "--fold", "2"])
    assert fold_1_files and all(sha256(p) == digest for p, digest in fold_1_files.items())
    assert json.loads((tmp / "results" / "test_MP_CNN" / "metrics.json").read_text())["folds"] == [1, 2]
    message = refused(train_cli("MP"), ["--config", str(config), "--gpu", "cpu", "--fold", "3", "--fold", "1"], tmp, capsys)
    assert "checkpoints/test_MP_CNN" in message and "fold 1 of a run named 'test_MP_CNN'" in message


def test_results_alone_also_protect_a_run(workdir, capsys):
    tmp, _, _ = workdir
    (tmp / "results" / "test_MP_CNN").mkdir(parents=True)
    (tmp / "results" / "test_MP_CNN" / "metrics.json").write_text("{}")
    message = refused(train_cli("MP"), ["--config", str(make_config(workdir)), "--gpu", "cpu"], tmp, capsys)
    assert "results/test_MP_CNN" in message


def test_nan_loss_names_the_step_and_says_no_checkpoint_exists(workdir, monkeypatch, capsys):
    original = PARADIGMS["MP"].loss
    monkeypatch.setattr(PARADIGMS["MP"], "loss", lambda self, x: (original(self, x)[0] * float("nan"), {}))
    message = refused(train_cli("MP"), ["--config", str(make_config(workdir, "MP", max_epochs=1)), "--gpu", "cpu",
                                        "--fold", "1"], workdir[0], capsys)
    assert "test_MP_CNN fold-01" in message and "step 1" in message
    assert "No checkpoint of this fold was saved yet" in message
    assert "Possible causes" in message and "unchanged" not in message


def test_batch_larger_than_the_training_split_is_named(workdir, capsys):
    message = refused(train_cli("MP"), fold_1(workdir, "--set", "trainer.batch_size=4096"), workdir[0], capsys)
    assert "trainer.batch_size=4096: fold 1 has 120 training epochs" in message  # 5 subjects x 24 epochs


def test_empty_validation_split_is_named(workdir, capsys):
    tmp, _, splits = workdir
    folds = json.loads(splits.read_text())
    folds["folds"]["1"]["val"] = []  # subject 5 is still tested in fold 4
    splits.write_text(json.dumps(folds))
    message = refused(train_cli("MP"), fold_1(workdir), tmp, capsys)
    assert "fold 1: 0 validation epochs" in message and str(splits) in message


# ----------------------------------------------------------------------------- devices (item 4)
def test_gpu_auto_falls_back_to_cpu_with_a_notice(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto").type == "cpu"
    assert capsys.readouterr().out.strip() == "--gpu auto: no CUDA device found, running on the CPU"


def test_every_command_defaults_to_gpu_auto():
    import benchmark

    assert predict.parse_args(["--ckpt", "c.pth", "--edf", "n.edf"]).gpu == "auto"
    assert benchmark.parse_args(["--configs", "c.json"]).gpu == "auto"
    assert classifier_training.parse_args(["--config", "c.json", "--fold", "1"]).gpu == "auto"


def test_invalid_gpu_value_is_named_as_invalid(workdir, capsys):
    message = refused(train_cli("MP"), ["--config", str(make_config(workdir)), "--gpu", "banana"], workdir[0], capsys)
    assert "--gpu banana: invalid value" in message


# ----------------------------------------------------------------------------- prepared data (items 5, 6)
def test_missing_data_root_gives_the_prepare_command(workdir, capsys):
    tmp, _, _ = workdir
    config = make_config(workdir)
    data = json.loads(config.read_text())
    data["data"]["root_dir"] = str(tmp / "nowhere")
    config.write_text(json.dumps(data))
    message = refused(train_cli("MP"), ["--config", str(config), "--gpu", "cpu"], tmp, capsys)
    assert str(tmp / "nowhere") in message and "prepare_sleep-edf-2018.py" in message


def test_unprepared_subjects_are_named_with_the_prepare_command(workdir, capsys):
    tmp, npz_dir, _ = workdir
    (npz_dir / "SC4061E0.npz").unlink()  # subject 6, tested in fold 1
    message = refused(train_cli("MP"), fold_1(workdir), tmp, capsys)
    assert f"in {npz_dir} for subject(s) [6]" in message and "prepare_sleep-edf-2018.py" in message


def test_truncated_npz_names_the_file_and_force(workdir, capsys):
    tmp, npz_dir, _ = workdir
    night = npz_dir / "SC4031E0.npz"
    night.write_bytes(night.read_bytes()[:1000])
    message = refused(train_cli("MP"), fold_1(workdir), tmp, capsys)
    assert str(night) in message and "re-run prepare with --force" in message


def test_nan_in_an_input_npz_names_the_file_and_the_first_bad_epochs(workdir, capsys):
    tmp, npz_dir, _ = workdir
    night = npz_dir / "SC4021E0.npz"
    with np.load(night) as npz:
        arrays = dict(npz)
    arrays["x"][[3, 7], 10] = [np.nan, np.inf]
    np.savez(night, **arrays)
    message = refused(train_cli("MP"), fold_1(workdir), tmp, capsys)
    assert str(night) in message and "epoch index(es) 3, 7" in message


# ----------------------------------------------------------------------------- config and command line
@pytest.mark.parametrize("argv, named", [(["--set", "trainer.bogus=1"], "trainer.bogus: unknown key"),
                                         (["--set", "trainer.batch_size=\"big\""], "trainer.batch_size: expected int"),
                                         (["--set", "trainer.learning_rate=-1"], "trainer.learning_rate: -1"),
                                         (["--fold", "99"], "--fold 99: folds are numbered 1..4")])
def test_bad_config_value_or_fold_names_the_key(workdir, capsys, argv, named):
    lines = 1 if argv[0] == "--fold" else 2  # config problems: a head line, then one line per problem
    message = refused(train_cli("MP"), ["--config", str(make_config(workdir)), "--gpu", "cpu", *argv], workdir[0],
                      capsys, lines=lines)
    assert named in message.splitlines()[-1]


def test_benchmark_of_a_config_that_is_not_there_is_named(tmp_path, monkeypatch, capsys):
    import benchmark

    monkeypatch.chdir(tmp_path)
    message = refused(benchmark.main, ["--configs", "configs/nowhere.json", "--tables-only"], tmp_path, capsys)
    assert message == "error: --configs: configs/nowhere.json not found"


def test_wrong_script_names_the_right_one(workdir, capsys):
    config = make_config(workdir, "MP")
    message = refused(train_cli("CRL"), ["--config", str(config), "--gpu", "cpu"], workdir[0], capsys)
    assert str(config) in message and "run it with: python train_mp.py" in message


# ----------------------------------------------------------------------------- prepare (item 7 and the earlier ones)
def _set_fpz_samples(psg, value, share):
    """Overwrite the first `share` of every 30-s record's Fpz-Cz samples (the first signal) with the digital `value`."""
    data = bytearray(psg.read_bytes())
    header, record = 256 * 8, 2 * (3 * 3000 + 4 * 30)
    for start in range(header, len(data), record):
        data[start : start + 2 * int(3000 * share)] = np.full(int(3000 * share), value, "<i2").tobytes()
    psg.write_bytes(bytes(data))


def _replace(path, old: bytes, new: bytes):
    path.write_bytes(path.read_bytes().replace(old, new, 1))


BROKEN_NIGHTS = {  # how night SC4011 is broken: (its file that is changed, how, the start of its FAILED line)
    "truncated EDF": ("PSG", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
                      "SC4011E0-PSG.edf: truncated EDF"),
    "corrupt header": ("PSG", lambda p: p.write_bytes(b"\0" * 256 + p.read_bytes()[256:]),
                       "SC4011E0-PSG.edf: cannot read EDF"),
    "missing hypnogram": ("Hypnogram", lambda p: p.unlink(), "SC4011E0-PSG.edf: no hypnogram SC4011E?-Hypnogram.edf"),
    "unknown stage label": ("Hypnogram", lambda p: _replace(p, b"Sleep stage R", b"Sleep stage X"),
                            "SC4011EC-Hypnogram.edf: unknown annotation label(s) ['Sleep stage X']"),
    "all-wake night": ("Hypnogram", lambda p: p.write_bytes(hypnogram_bytes(
        edf_start(p.with_name("SC4011E0-PSG.edf")), [(0, 240 * 30, "Sleep stage W")])),
        "SC4011E0-PSG.edf: no sleep epoch"),
    "missing channel": ("PSG", lambda p: _replace(p, b"EEG Fpz-Cz", b"EEG Fp1-Cz"),
                        "SC4011E0-PSG.edf: channel 'EEG Fpz-Cz' not found (channels: EEG Fp1-Cz, EEG Pz-Oz"),
    "flat channel": ("PSG", lambda p: _set_fpz_samples(p, 0, 1.0),
                     "SC4011E0-PSG.edf: EEG Fpz-Cz: flat channel (std 0.00 µV < 0.5 µV); "
                     "skipped (--allow-flat keeps it)"),
    "clipped channel": ("PSG", lambda p: _set_fpz_samples(p, 32767, 0.2),
                        "SC4011E0-PSG.edf: EEG Fpz-Cz: clipped channel ("),
}


def two_prepared_nights(root):
    """Nights SC4001 and SC4011 (demo signals) in root/edf, prepared into root/npz."""
    from dset.sleep_edf import main

    for subject in (0, 1):
        write_night(root / "edf", subject, epochs=240, seed=0)
    assert main(["--data-dir", str(root / "edf"), "--out-dir", str(root / "npz"), "--workers", "1"]) == 0
    return root / "edf", root / "npz"


@pytest.mark.parametrize("case", sorted(BROKEN_NIGHTS))
def test_a_broken_night_fails_alone_by_name_and_its_earlier_npz_survives(tmp_path, capsys, case):
    from dset.sleep_edf import main

    edf, npz = two_prepared_nights(tmp_path)
    kind, damage, expected = BROKEN_NIGHTS[case]
    damage(edf / ("SC4011E0-PSG.edf" if kind == "PSG" else "SC4011EC-Hypnogram.edf"))
    later = (npz / "SC4011E0.npz").stat().st_mtime + 10
    for path in edf.glob("SC4011*"):
        os.utime(path, (later, later))  # newer than its NPZ: the night is prepared again
    out, _ = failed(main, ["--data-dir", str(edf), "--out-dir", str(npz), "--workers", "1"], tmp_path, capsys, status=1)
    assert "prepared 0, up to date 1, failed 1" in out
    assert any(line.strip().startswith(f"FAILED {expected}") for line in out.splitlines()), out


def test_allow_flat_keeps_a_flat_night(tmp_path):
    from dset.sleep_edf import main

    for subject in (0, 1):
        write_night(tmp_path / "edf", subject, epochs=240, seed=0)
    _set_fpz_samples(tmp_path / "edf" / "SC4011E0-PSG.edf", 0, 1.0)
    out = tmp_path / "npz"
    assert main(["--data-dir", str(tmp_path / "edf"), "--out-dir", str(out), "--workers", "1", "--allow-flat"]) == 0
    assert sorted(p.name for p in out.glob("*.npz")) == ["SC4001E0.npz", "SC4011E0.npz"]


def test_missing_edf_folder_is_one_line(tmp_path, capsys):
    from dset.sleep_edf import main

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "SC4001E0.npz").write_bytes(b"an earlier night")
    _, err = failed(main, ["--data-dir", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "out")], tmp_path, capsys,
                    status=2)
    assert err.strip().startswith("error: no *-PSG.edf / *-Hypnogram.edf files in ") and str(tmp_path / "nowhere") in err
    assert err.strip().count("\n") == 0


def test_prepare_help_shows_the_defaults(capsys, monkeypatch):
    from dset.sleep_edf import main

    monkeypatch.setenv("COLUMNS", "1000")  # argparse wraps at the terminal width, hyphens included
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    text = capsys.readouterr().out
    assert exc.value.code == 0
    assert f"default: {REPO / 'dset' / 'Sleep-EDF-2018' / 'edf'})" in text
    assert "default: dset/Sleep-EDF-2018/npz/<channel without 'EEG '>/" in text
    assert "(default: EEG Fpz-Cz)" in text and f"(default: {min(8, os.cpu_count() or 1)})" in text


# ----------------------------------------------------------------------------- download (item 9 and the earlier ones)
SERVED = ("SC4001E0-PSG.edf", "SC4001EC-Hypnogram.edf", "SC4011E0-PSG.edf", "SC4011EH-Hypnogram.edf")
CACHE = ".verified-sha256.json"  # the downloader's own record of verified files: it grows with every file


@pytest.fixture
def physionet(tmp_path):
    """A local sleep-edfx top level serving two nights (subjects 0 and 1) whose files are 200 kB of random bytes."""
    from test_download import serving

    root = tmp_path / "server"
    (root / "sleep-cassette").mkdir(parents=True)
    rng = np.random.default_rng(0)
    sums = []
    for name in SERVED:
        body = rng.bytes(200_000)
        (root / "sleep-cassette" / name).write_bytes(body)
        sums.append(f"{hashlib.sha256(body).hexdigest()} sleep-cassette/{name}")
    (root / "RECORDS").write_text("sleep-cassette/SC4001E0-PSG.edf\nsleep-cassette/SC4011E0-PSG.edf\n")
    (root / "SHA256SUMS.txt").write_text("\n".join(sums) + "\n")
    with serving(root) as server:
        yield server


def download_main():
    """main() of dset/Sleep-EDF-2018/download_sleep-edf-2018.py (a file name that is no module name)."""
    spec = importlib.util.spec_from_file_location("download_script", REPO / "dset" / "Sleep-EDF-2018" /
                                                  "download_sleep-edf-2018.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def download(server, out, subjects, *extra):
    return ["--out", str(out), "--base-url", server.url, "--subjects", subjects, "--workers", "2", "--backoff", "0",
            *extra]


def test_checksum_mismatch_keeps_nothing_and_names_both_hashes(physionet, tmp_path, capsys):
    main, out = download_main(), tmp_path / "edf"
    assert main(download(physionet, out, "0")) == 0
    name = "sleep-cassette/SC4011EH-Hypnogram.edf"
    physionet.replace[name] = b"not the published file"
    printed, _ = failed(main, download(physionet, out, "0-1", "--retries", "0"), tmp_path, capsys, status=1,
                        mutable={CACHE})
    line = next(line for line in printed.splitlines() if line.startswith("FAILED SC4011EH-Hypnogram.edf: "))
    assert f"{physionet.url}{name}" in line and sha256(physionet.root / name) in line
    assert hashlib.sha256(b"not the published file").hexdigest() in line and "nothing kept" in line
    assert not (out / name).exists() and not (out / (name + ".partial")).exists()


def test_interrupted_transfer_keeps_its_part_and_a_rerun_resumes(physionet, tmp_path, capsys):
    main, out = download_main(), tmp_path / "edf"
    name = "sleep-cassette/SC4011E0-PSG.edf"
    physionet.cut_once[name] = 50_000
    printed, _ = failed(main, download(physionet, out, "0-1", "--retries", "0"), tmp_path, capsys, status=1,
                        mutable={CACHE})
    line = next(line for line in printed.splitlines() if line.startswith("FAILED SC4011E0-PSG.edf: "))
    assert f"{physionet.url}{name}" in line and "connection closed after 50000 of 200000 bytes" in line
    assert (out / (name + ".partial")).stat().st_size == 50_000
    assert main(download(physionet, out, "0-1", "--retries", "0")) == 0
    assert (name, "bytes=50000-") in physionet.requests
    assert (out / name).read_bytes() == (physionet.root / name).read_bytes()


def test_ctrl_c_keeps_the_partial_files_and_says_how_to_resume(physionet, tmp_path, capsys, monkeypatch):
    from dset.physionet import Downloader

    def interrupted(self, files):
        raise KeyboardInterrupt

    main, out = download_main(), tmp_path / "edf"
    assert main(download(physionet, out, "0")) == 0
    monkeypatch.setattr(Downloader, "fetch_all", interrupted)
    _, err = failed(main, download(physionet, out, "0-1"), tmp_path, capsys, status=130)
    assert err.strip() == f"interrupted: partial files are kept in {out}; run the same command again to resume"


@pytest.mark.parametrize("port, reason", [(None, "connection refused"), ("no-such-host.invalid", "host name not found")])
def test_refused_connection_or_unknown_host_fails_at_once_naming_the_url(tmp_path, capsys, port, reason):
    import socket

    if port is None:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            port = f"127.0.0.1:{s.getsockname()[1]}"
    base_url = f"http://{port}/"
    argv = ["--out", str(tmp_path / "edf"), "--base-url", base_url, "--retries", "5", "--backoff", "30"]
    _, err = failed(download_main(), argv, tmp_path, capsys, status=1)  # a retry would wait 30 s
    assert err.startswith(f"error: {base_url}RECORDS: {reason}") and "not retried" in err
    assert err.strip().count("\n") == 0 and not (tmp_path / "edf").exists()


@pytest.mark.parametrize("failure, requests, ok", [("HTTP 503", 2, True), ("HTTP 500", 2, True), ("cut", 2, True),
                                                   ("HTTP 404", 1, False), ("HTTP 403", 1, False)])
def test_downloader_retries_only_transient_failures(physionet, tmp_path, failure, requests, ok):
    from dset.physionet import download_sleep_edf

    name = "sleep-cassette/SC4001E0-PSG.edf"
    if failure == "cut":
        physionet.cut_once[name] = 50_000
    else:
        physionet.fail_once[name] = int(failure.split()[1])
    summary = download_sleep_edf(tmp_path / "edf", physionet.url, "0", workers=1, retries=1, backoff=0.0)
    assert [path for path, _ in physionet.requests].count(name) == requests
    assert summary.ok == ok
    if not ok:
        assert summary.failed["SC4001E0-PSG.edf"].startswith(f"{physionet.url}{name}: {failure}")


# ----------------------------------------------------------------------------- results derived from a checkpoint
def test_probe_results_record_the_checkpoint_hash_and_flag_a_replaced_checkpoint(workdir, capsys):
    from probing.probe import with_probe
    from probing.results import write_results

    tmp, _, _ = workdir
    config = make_config(workdir, "MP")
    ckpt = tmp / "checkpoints" / "test_MP_CNN" / "ckpt_fold-01.pth"
    torch.manual_seed(0)
    fake_checkpoint(config, ckpt)
    classifier_training.main(["--encoder_ckpt", str(ckpt), "--config", str(config), "--gpu", "cpu"])
    closing = capsys.readouterr().out  # the closing report of an evaluation run: scores and where they went
    assert "test_MP_CNN: 1 of 4 fold(s) pooled (48 test epochs): accuracy" in closing
    assert "results in results/test_MP_CNN/" in closing and f"checkpoints: {ckpt}" in closing
    record = json.loads((tmp / "results" / "test_MP_CNN" / "checkpoint_fold-01.json").read_text())
    assert record["sha256"] == sha256(ckpt)
    linear = with_probe(load_config(config), "linear")
    assert write_results(linear)["stale_folds"] == []
    torch.manual_seed(1)
    fake_checkpoint(config, ckpt)  # the checkpoint is replaced: the fold's predictions are stale
    assert write_results(linear)["stale_folds"] == [1]


def test_latent_results_record_the_checkpoint_and_a_replaced_one_is_flagged_or_recomputed(workdir, capsys):
    import benchmark

    tmp, _, _ = workdir
    config_path = make_config(workdir, "MP")
    config = load_config(config_path)
    ckpt = fake_checkpoint(config_path, tmp / "checkpoints" / "test_MP_CNN" / "ckpt_fold-01.pth").relative_to(tmp)
    z, stages = gaussian_mixture(260, 16, seed=0, separation=0.8)
    test_split = SimpleNamespace(y=stages, subject=np.zeros(260, np.int16), night=np.ones(260, np.int8))
    embeddings = save_embeddings(config, 1, test_split, z, ckpt)  # what pretraining writes
    assert torch.load(embeddings, weights_only=True)["checkpoint_sha256"] == sha256(ckpt)
    evaluate = ["--config", str(config_path), "--max-points", "200", "--map-points", "150"]
    latent_space_evaluator.main(evaluate)
    latent = tmp / "results" / "test_MP_CNN" / "latent"
    assert json.loads((latent / "metrics.json").read_text())["sources"] == [
        {"fold": 1, "embeddings": str(embeddings), "embeddings_sha256": sha256(embeddings), "checkpoint": str(ckpt),
         "checkpoint_sha256": sha256(ckpt)}]
    run = benchmark.Run(benchmark.Config(config_path, config, reference=False), 1)
    stored = hashes(latent)
    assert benchmark.missing_steps(run) == ["probe linear", "probe mlp"]  # unchanged: the latent step is done
    latent_space_evaluator.main(["--summarize"])
    assert "warning" not in capsys.readouterr().out and hashes(latent) == stored

    torch.manual_seed(1)
    fake_checkpoint(config_path, ckpt)  # replaced; the embeddings still describe the old one
    assert benchmark.missing_steps(run) == ["pretraining", "probe linear", "probe mlp", "latent"]
    latent_space_evaluator.main(["--summarize"])
    warnings = [line for line in capsys.readouterr().out.splitlines() if line.startswith("warning")]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"warning: results/test_MP_CNN/latent/metrics.json: fold 1 is stale: checkpoint {ckpt} has changed since")
    assert "| | folds evaluated | | | | 1 (stale) |" in (tmp / "results" / "latent_summary.md").read_text()
    message = refused(latent_space_evaluator.main, evaluate, tmp, capsys)
    assert str(embeddings) in message and f"checkpoint {ckpt} has changed since" in message

    save_embeddings(config, 1, test_split, z, ckpt)  # re-encoded with the new checkpoint (pretraining --resume)
    assert benchmark.missing_steps(run) == ["probe linear", "probe mlp", "latent"]  # the stored fold is stale
    latent_space_evaluator.main(evaluate)
    assert json.loads((latent / "metrics.json").read_text())["sources"][0]["checkpoint_sha256"] == sha256(ckpt)
    assert benchmark.missing_steps(run) == ["probe linear", "probe mlp"]


# ----------------------------------------------------------------------------- the small ones (items 2, 9)
def test_summary_names_each_run_its_probe_and_its_folds(tmp_path):
    from probing.results import write_summary

    scores = {"accuracy": 0.5, "macro_f1": 0.4, "kappa": 0.3}
    runs = (("MP_a", "linear", [1]), ("MP_a_mlp-probe", "mlp", [1, 2]), ("MP_b", "linear", [1, 2, 3, 4]))
    for run, probe, folds in runs:
        (tmp_path / run).mkdir()
        (tmp_path / run / "metrics.json").write_text(json.dumps({
            "run": run, "exp_name": run.split("_mlp")[0], "paradigm": "MP", "architecture": "CNN",
            "classifier": f"{probe} probe", "probe": probe, "label_fraction": 1.0, "dataset": "demo", "num_folds": 4,
            "n_folds": len(folds), "folds": folds, "n_epochs": 48, "pooled": scores, "fold_mean": scores,
            "fold_std": scores}))
    md, _ = write_summary(tmp_path)
    lines = md.read_text().splitlines()
    assert "| Run | Paradigm | Architecture | Classifier | Probe | Labels | Folds | Accuracy (%) |" in "\n".join(lines)
    assert any(line.startswith("| MP_a | MP | CNN | linear probe | linear | 100% | 1 of 4 | 50.0 |") for line in lines)
    assert any(line.startswith("| MP_a_mlp-probe | MP | CNN | mlp probe | mlp | 100% | 1, 2 of 4 |") for line in lines)
    assert any(line.startswith("| MP_b | MP | CNN | linear probe | linear | 100% | 4 |") for line in lines)


def test_maps_title_counts_the_epochs_actually_mapped(tmp_path, monkeypatch):
    from latent_space_evaluation import evaluate

    titles = []
    monkeypatch.setattr(evaluate, "plot_maps", lambda rows, path, title: titles.append(title))
    path = tmp_path / "embeddings_fold-01.pt"
    write_embeddings(path, *gaussian_mixture(260, 8, seed=0), 1, "tiny")
    evaluate.evaluate_run([path], "tiny", tmp_path / "latent", progress=lambda line: None)  # map_points 5000
    assert titles == ["tiny: test-set embeddings, 260 epochs per map"]


def test_classifier_help_prints_its_description_once(capsys):
    with pytest.raises(SystemExit) as exc:
        classifier_training.main(["--help"])
    assert exc.value.code == 0 and capsys.readouterr().out.count("Score pretrained encoders") == 1
