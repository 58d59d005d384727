"""predict.py: staging a new EDF night with a trained encoder and its saved probe."""
import csv
import json
import shutil

import mne
import numpy as np
import pytest
import torch
from sklearn.metrics import accuracy_score, cohen_kappa_score, f1_score

import classifier_training
import predict
from dset.demo import DIGITAL, edf_header, make_demo
from models.main_model import build_model
from training.config import load_config

REPO_CONFIG = "configs/demo/DEMO_MP_CNN.json"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A demo dataset, an (untrained) small-CNN checkpoint of fold 1, and its linear probe from classifier_training.py."""
    from conftest import REPO

    root = tmp_path_factory.mktemp("predict")
    demo = make_demo(root / "demo", n_subjects=5, epochs_per_night=240, num_folds=5, progress=False)
    config = json.loads((REPO / REPO_CONFIG).read_text())
    config["data"] |= {"root_dir": str(demo / "npz" / "Fpz-Cz"), "splits": str(demo / "splits.json")}
    config["backbone"]["params"] = {"preset": "small"}
    config["probe"] |= {"epochs": 5}
    config_path = root / "DEMO_MP_CNN.json"
    config_path.write_text(json.dumps(config))
    torch.manual_seed(0)
    model = build_model(load_config(config_path))
    ckpt = root / "checkpoints" / "DEMO_MP_CNN" / "ckpt_fold-01.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save({"model": model.state_dict(), "config": load_config(config_path), "fold": 1,
                "input_norm": {"mean": 0.0, "std": 20.0}, "epoch": 0, "step": 0, "val_loss": 0.0}, ckpt)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        classifier_training.main(["--encoder_ckpt", str(ckpt), "--config", str(config_path), "--gpu", "cpu"])
    test_subject = json.loads((demo / "splits.json").read_text())["folds"]["1"]["test"][0]
    return {"root": root, "ckpt": ckpt, "edf": demo / "edf" / "sleep-cassette", "subject": test_subject}


def run_predict(trained, monkeypatch, capsys, *args):
    monkeypatch.chdir(trained["root"])
    predict.main(["--ckpt", str(trained["ckpt"]), "--gpu", "cpu", *map(str, args)])
    return capsys.readouterr().out


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def write_edf(path, signal_uv: np.ndarray, fs: int, record_s: int, label="EEG Fpz-Cz"):
    """A one-channel plain EDF of signal_uv (µV), `record_s`-s data records (the demo's header writer)."""
    import datetime as dt

    per_record = fs * record_s
    n_records = signal_uv.size // per_record
    spec = (label, "Ag-AgCl electrodes", "uV", -500, 500, *DIGITAL, "HP:0.5Hz LP:100Hz", per_record)
    scale = (DIGITAL[1] - DIGITAL[0]) / 1000
    digital = np.clip(np.round((signal_uv[: n_records * per_record] + 500) * scale + DIGITAL[0]), *DIGITAL)
    path.write_bytes(edf_header(dt.datetime(1989, 1, 1, 22), n_records, record_s, [spec])
                     + digital.astype("<i2").tobytes())


def test_predicted_csv_has_one_row_per_epoch_and_probabilities_sum_to_one(trained, monkeypatch, capsys):
    psg = trained["edf"] / f"SC4{trained['subject']:02d}1E0-PSG.edf"
    run_predict(trained, monkeypatch, capsys, "--edf", psg, "--out", "out_plain")
    out = trained["root"] / "out_plain"
    rows = read_csv(out / f"{psg.stem}_hypnogram.csv")
    assert len(rows) == 240                                    # the demo night: 240 epochs of 30 s
    probabilities = np.array([[float(r[f"p_{s}"]) for s in ("W", "N1", "N2", "N3", "REM")] for r in rows])
    np.testing.assert_allclose(probabilities.sum(1), 1, atol=5e-6)
    assert [float(r["onset_s"]) for r in rows[:3]] == [0, 30, 60]
    annotations = mne.read_annotations(out / f"{psg.stem}_annotations.txt")
    assert len(annotations) == 240 and set(annotations.duration) == {30.0}
    assert annotations.description[5] == {"W": "Sleep stage W", "N1": "Sleep stage 1", "N2": "Sleep stage 2",
                                          "N3": "Sleep stage 3", "REM": "Sleep stage R"}[rows[5]["stage"]]
    assert (out / f"{psg.stem}_hypnogram.png").read_bytes()[:4] == b"\x89PNG"
    assert not (out / f"{psg.stem}_metrics.json").exists()


def test_metrics_with_the_hypnogram_equal_classifier_trainings_for_that_night(trained, monkeypatch, capsys):
    subject = trained["subject"]
    psg, hypnogram = (trained["edf"] / f"SC4{subject:02d}1E{s}" for s in ("0-PSG.edf", "C-Hypnogram.edf"))
    printed = run_predict(trained, monkeypatch, capsys, "--edf", psg, "--hypnogram", hypnogram, "--out", "out_hyp")
    with np.load(trained["root"] / "results" / "DEMO_MP_CNN_mlp-probe" / "predictions_fold-01.npz") as npz:
        night = npz["subject"] == subject
        y_true, y_pred = npz["y_true"][night], npz["y_pred"][night]
    accuracy, mf1 = accuracy_score(y_true, y_pred), f1_score(y_true, y_pred, average="macro")
    kappa = cohen_kappa_score(y_true, y_pred)
    assert f"ACC {100 * accuracy:.2f} %, MF1 {mf1:.4f}, kappa {kappa:.4f} over {night.sum()} " in printed
    metrics = json.loads((trained["root"] / "out_hyp" / f"{psg.stem}_metrics.json").read_text())
    assert metrics["n_epochs"] == night.sum()
    assert metrics["accuracy"] == pytest.approx(accuracy) and metrics["kappa"] == pytest.approx(kappa)


def test_a_200_hz_copy_gives_the_same_epochs(trained, monkeypatch, capsys, tmp_path):
    psg = trained["edf"] / f"SC4{trained['subject']:02d}1E0-PSG.edf"
    raw = mne.io.read_raw_edf(psg, include=["EEG Fpz-Cz"], preload=True, verbose="error").resample(200)
    copy = tmp_path / "night200-PSG.edf"
    write_edf(copy, raw.get_data(units="uV")[0], fs=200, record_s=30)
    assert mne.io.read_raw_edf(copy, verbose="error").info["sfreq"] == 200
    run_predict(trained, monkeypatch, capsys, "--edf", copy, "--out", tmp_path)
    assert len(read_csv(tmp_path / "night200-PSG_hypnogram.csv")) == 240


def test_bad_inputs_are_one_line_errors(trained, monkeypatch, capsys, tmp_path):
    short = tmp_path / "short-PSG.edf"
    write_edf(short, np.zeros(2000), fs=100, record_s=10)      # 20 s
    with pytest.raises(SystemExit, match=r"^error: short-PSG.edf: 20 s of signal, shorter than one 30-s epoch$"):
        run_predict(trained, monkeypatch, capsys, "--edf", short)
    psg = trained["edf"] / f"SC4{trained['subject']:02d}1E0-PSG.edf"
    with pytest.raises(SystemExit, match=r"channel 'EEG C3' not found \(channels: EEG Fpz-Cz, EEG Pz-Oz, EOG horizontal"):
        run_predict(trained, monkeypatch, capsys, "--edf", psg, "--channel", "EEG C3")
    lonely = tmp_path / "lonely.pth"
    shutil.copy(trained["ckpt"], lonely)
    monkeypatch.chdir(tmp_path)                                # no results/ here: the probe is missing
    with pytest.raises(SystemExit) as exc:
        predict.main(["--ckpt", str(lonely), "--gpu", "cpu", "--edf", str(psg)])
    message = str(exc.value)
    assert "\n" not in message and "has no trained probe" in message
    assert f"python classifier_training.py --encoder_ckpt {lonely} --config " in message


def test_real_five_minute_psg_is_staged_and_its_channels_are_listed(trained, monkeypatch, capsys, shared_sleep_edf):
    psg = shared_sleep_edf / "real_psg" / "SC4001E0-PSG-short.edf"
    header = psg.read_bytes()[:256]
    n_signals = int(header[252:256])
    labels = psg.read_bytes()[256 : 256 + 16 * n_signals].decode("ascii")
    channels = [labels[16 * i : 16 * (i + 1)].strip() for i in range(n_signals)]    # straight from the EDF header
    with pytest.raises(SystemExit) as exc:
        run_predict(trained, monkeypatch, capsys, "--edf", psg, "--channel", "EEG Cz")
    assert f"(channels: {', '.join(channels)})" in str(exc.value) and len(channels) == 7
    hypnogram = shared_sleep_edf / "hypnograms" / "SC4001EC-Hypnogram.edf"
    printed = run_predict(trained, monkeypatch, capsys, "--edf", psg, "--hypnogram", hypnogram, "--out", "real")
    rows = read_csv(trained["root"] / "real" / "SC4001E0-PSG-short_hypnogram.csv")
    assert len(rows) == 10 and {r["true_stage"] for r in rows} == {"W"}      # the first 5 minutes: wake
    assert "10 epochs of EEG Fpz-Cz staged" in printed
