"""The bad-input catalogue (issue 14): each case exits with a one-line message naming the file or key, prints no
traceback, and leaves every file that existed before unchanged."""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import classifier_training
from models.main_model import build_model
from test_engine import REPO, make_config, workdir, write_tiny_dataset  # noqa: F401  (workdir is a fixture)
import pipeline
from training import cli
from training.config import load_config
from training.engine import TrainingDiverged, train_fold
from training.paradigms import PARADIGMS
from utils import select_device


def hashes(root) -> dict:
    """{path: sha256} of every file under root."""
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def refused(main, argv, root) -> str:
    """Run a CLI main in-process; assert it exits with one line 'error: ...' and changed no existing file."""
    before = hashes(root)
    with pytest.raises(SystemExit) as exc:
        main(argv)
    message = exc.value.code
    assert isinstance(message, str) and message.startswith("error: "), message
    after = hashes(root)
    assert {p: h for p, h in after.items() if p in before} == before
    return message


def train_cli(paradigm):
    return lambda argv: pipeline.main(paradigm, argv)


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


# ----------------------------------------------------------------------------- checkpoints
def test_checkpoint_that_runs_code_on_unpickling_is_refused_and_never_runs(workdir):
    tmp, _, _ = workdir
    marker, evil = tmp / "marker", tmp / "evil.pth"
    torch.save({"model": WritesMarker(marker), "config": {}, "fold": 1}, evil)
    message = refused(classifier_training.main, ["--encoder_ckpt", str(evil), "--config", str(make_config(workdir)),
                                                 "--gpu", "cpu"], tmp)
    assert str(evil) in message and "not loaded" in message and "\n" not in message
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
    assert not marker.exists() and {p: h for p, h in hashes(tmp).items() if p in before} == before


def test_checkpoints_written_by_training_load_with_weights_only(workdir, monkeypatch):
    config = load_config(make_config(workdir, "MP", max_epochs=1))
    train_fold(config, 1, "cpu")
    for name in ("ckpt_fold-01.pth", "last_fold-01.pth"):  # embeddings are written by the pipeline
        torch.load(workdir[0] / "checkpoints" / "test_MP_CNN" / name, weights_only=True)


def test_truncated_checkpoint_is_named(workdir):
    tmp, _, _ = workdir
    good = fake_checkpoint(make_config(workdir), tmp / "good.pth")
    cut = tmp / "cut.pth"
    cut.write_bytes(good.read_bytes()[:500])
    message = refused(classifier_training.main, ["--encoder_ckpt", str(cut), "--config", str(make_config(workdir)),
                                                 "--gpu", "cpu"], tmp)
    assert str(cut) in message and "truncated or corrupt" in message


def test_backbone_mismatch_names_each_differing_key_on_its_own_line(workdir):
    tmp, _, _ = workdir
    config = make_config(workdir, "MP")
    ckpt = fake_checkpoint(config, tmp / "checkpoints" / "test_MP_CNN" / "ckpt_fold-01.pth",
                           **{"backbone.params": {"dropout": 0.3}})
    data = json.loads(config.read_text())
    data["backbone"]["params"] = {"dropout": 0.1}
    config.write_text(json.dumps(data))
    message = refused(classifier_training.main, ["--encoder_ckpt", str(ckpt), "--config", str(config), "--gpu", "cpu"], tmp)
    lines = message.splitlines()
    assert str(ckpt) in lines[0] and lines[1:] == ["  backbone.params.dropout: checkpoint 0.3, config 0.1"]


def test_paradigm_mismatch_is_named(workdir):
    tmp, _, _ = workdir
    ckpt = fake_checkpoint(make_config(workdir, "CRL"), tmp / "crl.pth")
    message = refused(classifier_training.main, ["--encoder_ckpt", str(ckpt), "--config", str(make_config(workdir, "MP")),
                                                 "--gpu", "cpu"], tmp)
    assert str(ckpt) in message and "CRL checkpoint" in message and "MP config" in message and "\n" not in message


# ----------------------------------------------------------------------------- runs
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
    message = refused(train_cli("MP"), ["--config", str(config), "--gpu", "cpu", "--fold", "1"], tmp)
    assert "checkpoints/test_MP_CNN" in message and all(w in message for w in ("--resume", "--overwrite", "--set exp_name="))
    pipeline.main("MP", ["--config", str(config), "--gpu", "cpu", "--fold", "1", "--overwrite"])
    assert not any(path.exists() for path in derived)
    assert (tmp / "results" / "test_MP_CNN" / "metrics.json").is_file()


def test_results_alone_also_protect_a_run(workdir):
    tmp, _, _ = workdir
    (tmp / "results" / "test_MP_CNN").mkdir(parents=True)
    (tmp / "results" / "test_MP_CNN" / "metrics.json").write_text("{}")
    message = refused(train_cli("MP"), ["--config", str(make_config(workdir)), "--gpu", "cpu"], tmp)
    assert "results/test_MP_CNN" in message


def test_nan_loss_names_the_step_and_says_no_checkpoint_exists(workdir, monkeypatch):
    config = load_config(make_config(workdir, "MP", max_epochs=1))
    original = PARADIGMS["MP"].loss
    monkeypatch.setattr(PARADIGMS["MP"], "loss", lambda self, x: (original(self, x)[0] * float("nan"), {}))
    with pytest.raises(TrainingDiverged) as exc:
        train_fold(config, 1, "cpu")
    message = str(exc.value)
    assert "step 1" in message and "No checkpoint of this fold was saved yet" in message
    assert "Possible causes" in message and "unchanged" not in message


# ----------------------------------------------------------------------------- devices
def test_gpu_auto_falls_back_to_cpu_with_a_notice(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert select_device("auto").type == "cpu"
    assert capsys.readouterr().out.strip() == "--gpu auto: no CUDA device found, running on the CPU"


def test_invalid_gpu_value_is_named_as_invalid(workdir):
    message = refused(train_cli("MP"), ["--config", str(make_config(workdir)), "--gpu", "banana"], workdir[0])
    assert "--gpu banana: invalid value" in message


# ----------------------------------------------------------------------------- prepared data
def test_missing_data_root_gives_the_prepare_command(workdir):
    tmp, _, _ = workdir
    config = make_config(workdir)
    data = json.loads(config.read_text())
    data["data"]["root_dir"] = str(tmp / "nowhere")
    config.write_text(json.dumps(data))
    message = refused(train_cli("MP"), ["--config", str(config), "--gpu", "cpu"], tmp)
    assert str(tmp / "nowhere") in message and "prepare_sleep-edf-2018.py" in message and "\n" not in message


def test_truncated_npz_names_the_file_and_force(workdir):
    tmp, npz_dir, _ = workdir
    night = npz_dir / "SC4031E0.npz"
    night.write_bytes(night.read_bytes()[:1000])
    message = refused(train_cli("MP"), ["--config", str(make_config(workdir)), "--gpu", "cpu", "--fold", "1"], tmp)
    assert str(night) in message and "re-run prepare with --force" in message and "\n" not in message


def test_nan_in_an_input_npz_names_the_file_and_the_first_bad_epochs(workdir):
    tmp, npz_dir, _ = workdir
    night = npz_dir / "SC4021E0.npz"
    with np.load(night) as npz:
        arrays = dict(npz)
    arrays["x"][[3, 7], 10] = [np.nan, np.inf]
    np.savez(night, **arrays)
    message = refused(train_cli("MP"), ["--config", str(make_config(workdir)), "--gpu", "cpu", "--fold", "1"], tmp)
    assert str(night) in message and "epoch index(es) 3, 7" in message and "\n" not in message


# ----------------------------------------------------------------------------- prepare
def _set_fpz_samples(psg, value, share):
    """Overwrite the first `share` of every 30-s record's Fpz-Cz samples (the first signal) with the digital `value`."""
    data = bytearray(psg.read_bytes())
    header, record = 256 * 8, 2 * (3 * 3000 + 4 * 30)
    for start in range(header, len(data), record):
        data[start : start + 2 * int(3000 * share)] = np.full(int(3000 * share), value, "<i2").tobytes()
    psg.write_bytes(bytes(data))


@pytest.mark.parametrize("value, share, reason", [(0, 1.0, "flat channel (std 0.00 µV < 0.5 µV)"),
                                                  (32767, 0.2, "clipped channel (")])
def test_prepare_skips_a_flat_or_clipped_night_unless_allowed(tmp_path, capsys, value, share, reason):
    from dset.demo import write_night
    from dset.sleep_edf import main

    edf = tmp_path / "edf"
    for subject in (0, 1):
        write_night(edf, subject, epochs=240, seed=0)
    _set_fpz_samples(edf / "SC4011E0-PSG.edf", value, share)
    out = tmp_path / "npz"
    assert main(["--data-dir", str(edf), "--out-dir", str(out), "--workers", "1"]) == 1
    printed = capsys.readouterr().out
    assert f"SC4011E0-PSG.edf: EEG Fpz-Cz: {reason}" in printed and "--allow-flat" in printed
    assert sorted(p.name for p in out.glob("*.npz")) == ["SC4001E0.npz"]
    assert main(["--data-dir", str(edf), "--out-dir", str(out), "--workers", "1", "--allow-flat"]) == 0
    assert (out / "SC4011E0.npz").is_file()


# ----------------------------------------------------------------------------- download
def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("base_url, reason", [(f"http://127.0.0.1:{_closed_port()}/", "connection refused"),
                                              ("http://no-such-host.invalid/", "host name not found")])
def test_refused_connection_or_unknown_host_fails_at_once_naming_the_url(tmp_path, base_url, reason):
    from dset.physionet import DownloadError, download_sleep_edf

    with pytest.raises(DownloadError) as exc:
        download_sleep_edf(tmp_path, base_url, "0", retries=5, backoff=30.0)  # a retry would wait 30 s
    message = str(exc.value)
    assert message.startswith(f"{base_url}RECORDS: {reason}") and "not retried" in message and "\n" not in message
    assert not any(tmp_path.iterdir())


def test_classifier_help_prints_its_description_once(capsys):
    with pytest.raises(SystemExit) as exc:
        classifier_training.main(["--help"])
    assert exc.value.code == 0 and capsys.readouterr().out.count("Score pretrained encoders") == 1


def test_probe_results_record_the_checkpoint_hash_and_flag_a_replaced_checkpoint(workdir, capsys):
    from probing.probe import with_probe
    from probing.results import write_results

    tmp, _, _ = workdir
    config = make_config(workdir, "MP")
    ckpt = tmp / "checkpoints" / "test_MP_CNN" / "ckpt_fold-01.pth"
    torch.manual_seed(0)
    fake_checkpoint(config, ckpt)
    classifier_training.main(["--encoder_ckpt", str(ckpt), "--config", str(config), "--gpu", "cpu"])
    record = json.loads((tmp / "results" / "test_MP_CNN" / "checkpoint_fold-01.json").read_text())
    assert record["sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    linear = with_probe(load_config(config), "linear")
    assert write_results(linear)["stale_folds"] == []
    torch.manual_seed(1)
    fake_checkpoint(config, ckpt)  # the checkpoint is replaced: the fold's predictions are stale
    assert write_results(linear)["stale_folds"] == [1]


# ----------------------------------------------------------------------------- cases that already passed before issue 14
@pytest.mark.parametrize("argv, named", [(["--set", "trainer.bogus=1"], "trainer.bogus: unknown key"),
                                         (["--set", "trainer.batch_size=\"big\""], "trainer.batch_size: expected int"),
                                         (["--set", "trainer.learning_rate=-1"], "trainer.learning_rate: -1"),
                                         (["--fold", "99"], "--fold 99: folds are numbered 1..4")])
def test_bad_config_value_or_fold_names_the_key(workdir, argv, named):
    message = refused(train_cli("MP"), ["--config", str(make_config(workdir)), "--gpu", "cpu", *argv], workdir[0])
    assert named in message


def test_wrong_script_names_the_right_one(workdir):
    message = refused(train_cli("CRL"), ["--config", str(make_config(workdir, "MP")), "--gpu", "cpu"], workdir[0])
    assert "run it with: python train_mp.py" in message and "\n" not in message
