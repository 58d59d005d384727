"""The synthetic demo dataset (dset/demo.py): Sleep-EDF file layout, prepared labels, learnability."""
import json

import mne
import numpy as np
import pytest
from scipy.signal import welch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dset.demo import make_demo
from dset.loader import load_fold
from test_prepare import expected_labels, n_epochs_of

CHANNELS = ["EEG Fpz-Cz", "EEG Pz-Oz", "EOG horizontal", "Resp oro-nasal", "EMG submental", "Temp rectal",
            "Event marker"]
SUBJECTS = 5


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo(tmp_path_factory.mktemp("demo") / "demo", n_subjects=SUBJECTS, epochs_per_night=300,
                     num_folds=5, progress=False)


def test_edf_files_have_the_sleep_edf_layout(demo):
    folder = demo / "edf" / "sleep-cassette"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        name for s in range(SUBJECTS) for name in (f"SC4{s:02d}1E0-PSG.edf", f"SC4{s:02d}1EC-Hypnogram.edf"))
    psg = folder / "SC4001E0-PSG.edf"
    raw = mne.io.read_raw_edf(psg, verbose="error")
    assert raw.ch_names == CHANNELS and raw.n_times == 300 * 3000
    header = psg.read_bytes()[: 256 * 8]
    samples_per_record = header[256 + 7 * 216: 256 + 7 * 224].decode().split()
    assert samples_per_record == ["3000"] * 3 + ["30"] * 4 and header[244:252].strip() == b"30"
    labels = set(mne.read_annotations(folder / "SC4001EC-Hypnogram.edf").description)
    assert {"Sleep stage W", "Sleep stage 1", "Sleep stage 2", "Sleep stage R", "Movement time", "Sleep stage ?"} <= labels
    assert labels <= {"Sleep stage W", "Sleep stage 1", "Sleep stage 2", "Sleep stage 3", "Sleep stage 4",
                      "Sleep stage R", "Sleep stage ?", "Movement time"}


def test_prepared_labels_match_the_hypnograms(demo):
    folder = demo / "edf" / "sleep-cassette"
    for s in range(SUBJECTS):
        y = np.load(demo / "npz" / "Fpz-Cz" / f"SC4{s:02d}1E0.npz")["y"]
        expected = expected_labels(folder / f"SC4{s:02d}1EC-Hypnogram.edf", n_epochs_of(folder / f"SC4{s:02d}1E0-PSG.edf"))
        np.testing.assert_array_equal(y, expected)
        assert y.size < 300 and (y[:60] == 0).all() and y[60] != 0            # 30 min of wake kept before sleep


def test_splits_load_and_second_call_is_a_no_op(demo):
    data_cfg = {"root_dir": str(demo / "npz" / "Fpz-Cz"), "splits": str(demo / "splits.json"), "dataset": "demo",
                "num_folds": 5}
    fold = load_fold(data_cfg, 1)
    total = sum(len(np.load(p)["y"]) for p in (demo / "npz" / "Fpz-Cz").glob("*.npz"))
    assert len(fold.train) + len(fold.val) + len(fold.test) == total
    assert json.loads((demo / "splits.json").read_text())["dataset"] == "demo"
    stamp = (demo / "npz" / "Fpz-Cz" / "SC4001E0.npz").stat().st_mtime_ns
    make_demo(demo, n_subjects=SUBJECTS, epochs_per_night=300, num_folds=5, progress=False)
    assert (demo / "npz" / "Fpz-Cz" / "SC4001E0.npz").stat().st_mtime_ns == stamp


def test_stages_are_learnable_from_band_powers(demo):
    """Logistic regression on 5 log band powers, trained on 4 subjects, tested on the 5th: far above chance."""
    nights = [np.load(demo / "npz" / "Fpz-Cz" / f"SC4{s:02d}1E0.npz") for s in range(SUBJECTS)]
    f, psd = welch(np.concatenate([n["x"] for n in nights]), fs=100, nperseg=200, axis=1)
    bands = [(0.5, 4), (4, 8), (8, 12), (12, 16), (16, 30)]
    features = np.log(np.stack([psd[:, (f >= lo) & (f < hi)].mean(axis=1) for lo, hi in bands], axis=1))
    y = np.concatenate([n["y"] for n in nights])
    test = np.arange(y.size) >= y.size - nights[-1]["y"].size
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(features[~test], y[~test])
    assert balanced_accuracy_score(y[test], model.predict(features[test])) > 0.55      # chance: 0.2
