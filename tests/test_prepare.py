"""Sleep-EDF EDF -> NPZ preparation (dset/sleep_edf.py): labels, trimming, signal values, metadata, bad inputs."""
import datetime as dt
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mne
import numpy as np
import pytest

from dset.demo import hypnogram_bytes, write_night
from dset import sleep_edf
from dset.sleep_edf import channel_folder, edf_start, main, prepare

REPO = Path(__file__).resolve().parents[1]
# SleePyCo's prepare_sleep-edf-2018.py (reference repo, dset/Sleep-EDF-2018/): "?" -> UNK (6), "Movement time" -> MOVE (5)
MOVE, UNK = 5, 6
CODES = {"Sleep stage W": 0, "Sleep stage 1": 1, "Sleep stage 2": 2, "Sleep stage 3": 3, "Sleep stage 4": 3,
         "Sleep stage R": 4, "Sleep stage ?": UNK, "Movement time": MOVE}
KEYS = {"x", "y", "fs", "ch_label", "subject", "night", "start_time", "onsets", "psg_file", "hypnogram_file"}


def sleepyco_labels(runs: list[tuple[str, int]], n_epochs: int, trim_first: bool = True) -> np.ndarray:
    """SleePyCo's label rule, written from its prepare script: expand the (stage, epochs) runs, cut to the
    signal, then select the sleep period (first to last epoch that is not W, MOVE and UNK included, +- 60
    epochs), then remove MOVE and UNK. `trim_first=False` swaps the last two steps (the order to catch)."""
    labels = np.repeat([CODES[stage] for stage, _ in runs], [count for _, count in runs])[:n_epochs]

    def trim(y):
        not_wake = np.flatnonzero(y != 0)
        return y[max(not_wake[0] - 60, 0): min(not_wake[-1] + 60, len(y) - 1) + 1]

    def drop(y):
        return y[(y != MOVE) & (y != UNK)]

    return drop(trim(labels)) if trim_first else trim(drop(labels))


def runs_of(hypnogram: Path) -> list[tuple[str, int]]:
    ann = mne.read_annotations(hypnogram)
    assert np.all(ann.onset % 30 == 0) and np.all(ann.duration % 30 == 0)
    return [(str(stage), int(duration // 30)) for stage, duration in zip(ann.description, ann.duration)]


def expected_labels(hypnogram: Path, n_epochs: int) -> np.ndarray:
    """SleePyCo's rule (sleepyco_labels) applied to a hypnogram file."""
    return sleepyco_labels(runs_of(hypnogram), n_epochs)


def n_epochs_of(psg: Path) -> int:
    return mne.io.read_raw_edf(psg, include=["EEG Fpz-Cz"], verbose="error").n_times // 3000


# ----------------------------------------------------------------------------- surrogate Sleep-EDF (../shared)
@pytest.fixture(scope="module")
def surrogate(shared_sleep_edf, tmp_path_factory):
    """Subjects 0-1 (4 nights, real hypnograms) as EDF and as the surrogate's own NPZ, and our NPZ of the EDF.

    1 h of wake padding instead of 2 h: still more than the 30 min the trim keeps, and faster.
    """
    root = tmp_path_factory.mktemp("surrogate")
    for fmt in ("edf", "npz"):
        subprocess.run([sys.executable, str(shared_sleep_edf / "make_surrogate.py"), "--out", str(root / fmt),
                        "--subjects", "0-1", "--pad-hours", "1", "--format", fmt, "--workers", "2"], check=True, capture_output=True)
    report = prepare(root / "edf", root / "ours", workers=2, progress=False)
    return root, report


def test_surrogate_nights_match_the_surrogate_npz(surrogate):
    root, report = surrogate
    assert sorted(report.prepared) == ["SC4001E0-PSG.edf", "SC4002E0-PSG.edf", "SC4011E0-PSG.edf", "SC4012E0-PSG.edf"]
    assert not report.failed
    for reference in sorted((root / "npz").glob("*.npz")):
        ours, theirs = np.load(root / "ours" / reference.name), np.load(reference)
        np.testing.assert_array_equal(ours["y"], theirs["y"])
        np.testing.assert_allclose(ours["x"], theirs["x"], rtol=0, atol=1e-4)


def test_npz_keys_dtypes_and_metadata(surrogate):
    root, _ = surrogate
    night = np.load(root / "ours" / "SC4012E0.npz")
    assert set(night.files) == KEYS
    n = len(night["y"])
    assert night["x"].shape == (n, 3000) and night["x"].dtype == np.float32
    assert night["y"].dtype == np.int64 and set(np.unique(night["y"])) <= {0, 1, 2, 3, 4}
    assert int(night["fs"]) == 100 and str(night["ch_label"]) == "EEG Fpz-Cz"
    assert (int(night["subject"]), int(night["night"])) == (1, 2)
    assert str(night["psg_file"]) == "SC4012E0-PSG.edf" and str(night["hypnogram_file"]) == "SC4012EC-Hypnogram.edf"
    psg = root / "edf" / "sleep-cassette" / "SC4012E0-PSG.edf"
    raw = mne.io.read_raw_edf(psg, include=["EEG Fpz-Cz"], preload=True, verbose="error")
    assert dt.datetime.fromisoformat(str(night["start_time"])) == raw.info["meas_date"].replace(tzinfo=None)
    onsets = night["onsets"]
    assert onsets.shape == (n,) and np.all(onsets % 30 == 0) and np.all(np.diff(onsets) > 0)
    k = n // 2                                   # an epoch's samples are the EDF samples at its onset
    start = int(onsets[k]) * 100
    np.testing.assert_allclose(night["x"][k], raw.get_data(units="uV")[0, start:start + 3000], atol=1e-4)


def test_labels_equal_the_real_hypnograms(surrogate, shared_sleep_edf):
    """The surrogate PSGs carry the real stage sequences: our y equals the rule applied to the original files."""
    root, _ = surrogate
    for hypnogram in sorted((shared_sleep_edf / "hypnograms").glob("SC40[01]*")):
        real_end = int(mne.read_annotations(hypnogram).onset[-1] // 30)      # the last "?" starts at the signal end
        y = np.load(root / "ours" / f"{hypnogram.name[:7]}0.npz")["y"]
        np.testing.assert_array_equal(y, expected_labels(hypnogram, real_end))


@pytest.mark.xfail(strict=True, reason="a surrogate night has unscored epochs in its wake edge, where dset/sleep_edf.py "
                                       "(?/movement removed before the wake trim) keeps fewer W epochs than SleePyCo")
def test_label_counts_follow_the_surrogate_hypnograms(surrogate):
    root, _ = surrogate
    for hypnogram in sorted((root / "edf" / "sleep-cassette").glob("*-Hypnogram.edf")):
        psg = hypnogram.with_name(f"{hypnogram.name[:7]}0-PSG.edf")
        expected = expected_labels(hypnogram, n_epochs_of(psg))
        y = np.load(root / "ours" / f"{hypnogram.name[:7]}0.npz")["y"]
        np.testing.assert_array_equal(np.bincount(y, minlength=5), np.bincount(expected, minlength=5))


# Per-night stage counts (W, N1, N2, N3, REM) of the 16 real hypnograms under SleePyCo's rule, the signal ending
# where the last "Sleep stage ?" starts (as in the originals). Swapping its order (remove MOVE/UNK, then trim)
# gives the same 16 nights: their "?" epochs lie past the signal and their few movement epochs inside the sleep
# period, so these counts do not check the order; test_movement_in_the_wake_edge_is_trimmed_as_sleepyco_does does.
REAL_COUNTS = {
    "SC4001E": [188, 58, 250, 220, 125], "SC4002E": [183, 59, 373, 297, 215], "SC4011E": [157, 109, 562, 105, 170],
    "SC4012E": [162, 92, 660, 96, 176], "SC4021E": [128, 94, 545, 95, 163], "SC4022E": [125, 184, 402, 119, 179],
    "SC4031E": [140, 61, 485, 57, 209], "SC4032E": [136, 45, 400, 131, 199], "SC4041E": [200, 166, 620, 53, 196],
    "SC4042E": [185, 137, 514, 94, 270], "SC4051E": [208, 44, 217, 135, 68], "SC4052E": [222, 114, 616, 114, 180],
    "SC4061E": [142, 56, 407, 136, 102], "SC4062E": [193, 90, 417, 129, 187], "SC4071E": [124, 89, 403, 162, 198],
    "SC4072E": [407, 84, 392, 222, 168],
}


class FlatSignal:
    """Stands in for the MNE Raw of a PSG of n_epochs 30-s epochs (read_night needs n_times and get_data)."""

    def __init__(self, n_epochs: int):
        self.n_times = n_epochs * 3000

    def get_data(self, units):
        return np.zeros((1, self.n_times), np.float32)


def labels_of(hypnogram: Path, n_epochs: int, folder: Path, monkeypatch) -> np.ndarray:
    """y of read_night for a hypnogram and a flat PSG of n_epochs epochs (its header: the hypnogram's start)."""
    psg = folder / f"{hypnogram.name[:7]}0-PSG.edf"
    shutil.copy(hypnogram, psg)                                   # edf_start reads only the header
    monkeypatch.setattr(sleep_edf, "read_signal", lambda path, channel: FlatSignal(n_epochs))
    return sleep_edf.read_night(sleep_edf.Night(hypnogram.name[:7], psg, hypnogram), allow_flat=True)["y"]


def test_real_hypnograms_give_sleepyco_counts(shared_sleep_edf, tmp_path, monkeypatch):
    hypnograms = sorted((shared_sleep_edf / "hypnograms").glob("*-Hypnogram.edf"))
    assert [h.name[:7] for h in hypnograms] == list(REAL_COUNTS)
    for hypnogram in hypnograms:
        n_epochs = int(mne.read_annotations(hypnogram).onset[-1] // 30)
        y = labels_of(hypnogram, n_epochs, tmp_path, monkeypatch)
        assert np.bincount(y, minlength=5).tolist() == REAL_COUNTS[hypnogram.name[:7]], hypnogram.name
        np.testing.assert_array_equal(y, expected_labels(hypnogram, n_epochs))


MOVEMENT_IN_WAKE = [("Sleep stage W", 100), ("Movement time", 2), ("Sleep stage W", 100), ("Sleep stage 2", 30),
                    ("Sleep stage W", 100)]


def test_the_two_orders_differ_on_movement_in_the_wake_edge():
    """SleePyCo trims first, so a movement epoch in the wake before sleep counts as sleep for the trim:
    60 + 100 W epochs before N2 (and 60 after) survive, against 60 when movement is removed first."""
    trim_first = sleepyco_labels(MOVEMENT_IN_WAKE, 332)
    drop_first = sleepyco_labels(MOVEMENT_IN_WAKE, 332, trim_first=False)
    assert np.bincount(trim_first, minlength=5).tolist() == [220, 0, 30, 0, 0]
    assert np.bincount(drop_first, minlength=5).tolist() == [120, 0, 30, 0, 0]


@pytest.mark.xfail(strict=True, reason="dset/sleep_edf.py removes ?/movement epochs before the wake trim; SleePyCo "
                                       "trims first (its prepare script); issue 17 reported it to the lead")
def test_movement_in_the_wake_edge_is_trimmed_as_sleepyco_does(tmp_path, monkeypatch):
    hypnogram = tmp_path / "SC4901EC-Hypnogram.edf"
    start = dt.datetime(1989, 1, 1, 21)
    onsets = np.cumsum([0] + [30 * count for _, count in MOVEMENT_IN_WAKE])
    hypnogram.write_bytes(hypnogram_bytes(start, [(int(onset), 30 * count, stage) for onset, (stage, count)
                                                  in zip(onsets, MOVEMENT_IN_WAKE)]))
    y = labels_of(hypnogram, 332, tmp_path, monkeypatch)
    assert np.bincount(y, minlength=5).tolist() == [220, 0, 30, 0, 0]


def test_real_short_psg_is_reported_as_a_night_without_sleep(shared_sleep_edf, tmp_path):
    data = tmp_path / "edf"
    data.mkdir()
    shutil.copy(shared_sleep_edf / "real_psg" / "SC4001E0-PSG-short.edf", data / "SC4001E0-PSG.edf")
    shutil.copy(shared_sleep_edf / "hypnograms" / "SC4001EC-Hypnogram.edf", data / "SC4001EC-Hypnogram.edf")
    report = prepare(data, tmp_path / "out", progress=False)
    assert report.failed == [("SC4001E0-PSG.edf", "SC4001E0-PSG.edf: no sleep epoch (10 scored epochs, all wake)")]
    assert not (tmp_path / "out" / "SC4001E0.npz").exists()


# ----------------------------------------------------------------------------- bad inputs (no ../shared needed)
def _patch(path: Path, old: bytes, new: bytes, count: int = -1) -> None:
    path.write_bytes(path.read_bytes().replace(old, new, count))


BAD_NIGHTS = {   # subject -> (how the night is broken, expected text in its failure message)
    11: ("truncated PSG", "SC4111E0-PSG.edf: truncated EDF"),
    12: ("corrupt PSG header", "SC4121E0-PSG.edf: cannot read EDF"),
    13: ("PSG without hypnogram", "SC4131E0-PSG.edf: no hypnogram SC4131E?-Hypnogram.edf"),
    14: ("hypnogram without PSG", "SC4141EC-Hypnogram.edf: no PSG SC4141E0-PSG.edf"),
    15: ("missing channel", "SC4151E0-PSG.edf: channel 'EEG Fpz-Cz' not found (channels: EEG Fp1-Cz, EEG Pz-Oz"),
    16: ("hypnogram of another day", "SC4161EC-Hypnogram.edf: hypnogram does not overlap the signal"),
    17: ("all wake", "SC4171E0-PSG.edf: no sleep epoch"),
    18: ("unknown label", "SC4181EC-Hypnogram.edf: unknown annotation label(s) ['Sleep stage X']"),
}


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory):
    """Demo-sized nights: subject 10 is fine, subjects 11-18 are each broken in one way (BAD_NIGHTS)."""
    data = tmp_path_factory.mktemp("bad")
    for subject in [10, *BAD_NIGHTS]:
        write_night(data, subject, epochs=240, seed=0)
    psg = {s: data / f"SC4{s}1E0-PSG.edf" for s in [10, *BAD_NIGHTS]}
    hypnogram = {s: data / f"SC4{s}1EC-Hypnogram.edf" for s in [10, *BAD_NIGHTS]}
    psg[11].write_bytes(psg[11].read_bytes()[: psg[11].stat().st_size // 2])
    psg[12].write_bytes(b"\x00" * 256 + psg[12].read_bytes()[256:])
    hypnogram[13].unlink()
    psg[14].unlink()
    _patch(psg[15], b"EEG Fpz-Cz", b"EEG Fp1-Cz", 1)
    hypnogram[16].write_bytes(hypnogram[16].read_bytes()[:168] + b"01.01.95" + hypnogram[16].read_bytes()[176:])
    hypnogram[17].write_bytes(hypnogram_bytes(edf_start(psg[17]), [(0, 240 * 30, "Sleep stage W")]))
    _patch(hypnogram[18], b"Sleep stage R", b"Sleep stage X")
    return data


@pytest.fixture(scope="module")
def bad_report(bad_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("bad_out")
    return prepare(bad_folder, out, workers=1, progress=False), out


def test_bad_nights_fail_alone_and_the_good_night_completes(bad_report):
    report, out = bad_report
    assert report.prepared == ["SC4101E0-PSG.edf"]
    assert len(report.failed) == len(BAD_NIGHTS)
    assert sorted(p.name for p in out.iterdir()) == ["SC4101E0.npz"]       # nothing half-written, no temp files
    assert np.load(out / "SC4101E0.npz")["x"].shape[1] == 3000


@pytest.mark.parametrize("subject", sorted(BAD_NIGHTS))
def test_bad_night_message_names_file_and_reason(bad_report, subject):
    report, _ = bad_report
    reasons = [reason for _, reason in report.failed]
    expected = BAD_NIGHTS[subject][1]
    assert any(reason.startswith(expected) for reason in reasons), (expected, reasons)


def test_cli_prints_summary_and_fails(bad_folder, tmp_path):
    result = subprocess.run([sys.executable, str(REPO / "dset" / "Sleep-EDF-2018" / "prepare_sleep-edf-2018.py"),
                             "--data-dir", str(bad_folder), "--out-dir", str(tmp_path), "--workers", "2"],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 1
    assert "prepared 1, up to date 0, failed 8" in result.stdout
    assert "FAILED SC4111E0-PSG.edf: truncated EDF" in result.stdout


def test_missing_folder_is_a_clear_error(tmp_path, capsys):
    assert main(["--data-dir", str(tmp_path / "nowhere"), "--out-dir", str(tmp_path / "out")]) == 2
    assert "no *-PSG.edf / *-Hypnogram.edf files in" in capsys.readouterr().err


# ----------------------------------------------------------------------------- idempotence, layout, alignment
@pytest.fixture()
def two_nights(tmp_path):
    data = tmp_path / "edf" / "sleep-cassette"                              # PhysioNet layout
    for subject in (20, 21):
        write_night(data, subject, epochs=240, seed=1)
    return tmp_path / "edf"


def test_second_run_skips_up_to_date_nights_and_force_rewrites(two_nights, tmp_path):
    out = tmp_path / "out"
    assert len(prepare(two_nights, out, progress=False).prepared) == 2
    assert len(prepare(two_nights, out, progress=False).skipped) == 2
    psg = two_nights / "sleep-cassette" / "SC4201E0-PSG.edf"
    later = (out / "SC4201E0.npz").stat().st_mtime + 10
    os.utime(psg, (later, later))                                            # an input newer than its output
    again = prepare(two_nights, out, progress=False)
    assert (again.prepared, again.skipped) == (["SC4201E0-PSG.edf"], ["SC4211E0-PSG.edf"])
    assert len(prepare(two_nights, out, force=True, progress=False).prepared) == 2


def test_hypnogram_starting_later_shifts_the_labels(two_nights, tmp_path):
    """A hypnogram whose header starts 60 s after the PSG labels the epochs 2 places later."""
    folder = two_nights / "sleep-cassette"
    psg, hypnogram = folder / "SC4201E0-PSG.edf", folder / "SC4201EC-Hypnogram.edf"
    reference = prepare(two_nights, tmp_path / "a", progress=False)
    assert not reference.failed
    ann = mne.read_annotations(hypnogram)
    runs = [(int(o), int(d), str(t)) for o, d, t in zip(ann.onset, ann.duration, ann.description)]
    hypnogram.write_bytes(hypnogram_bytes(edf_start(psg) + dt.timedelta(seconds=60), runs))
    prepare(two_nights, tmp_path / "b", progress=False)
    a, b = np.load(tmp_path / "a" / "SC4201E0.npz"), np.load(tmp_path / "b" / "SC4201E0.npz")
    on_a, on_b = dict(zip(a["onsets"], a["y"])), dict(zip(b["onsets"], b["y"]))
    common = sorted(set(on_a) & {t - 60 for t in on_b})
    assert len(common) > 100 and all(on_a[t] == on_b[t + 60] for t in common)


def test_other_channel_goes_to_its_own_folder(two_nights, tmp_path):
    assert channel_folder("EEG Pz-Oz") == "Pz-Oz"
    report = prepare(two_nights, tmp_path / "pz", channel="EEG Pz-Oz", progress=False)
    assert not report.failed
    assert str(np.load(tmp_path / "pz" / "SC4201E0.npz")["ch_label"]) == "EEG Pz-Oz"
