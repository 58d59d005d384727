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
from dset.sleep_edf import channel_folder, edf_start, main, prepare

REPO = Path(__file__).resolve().parents[1]
CODES = {"Sleep stage W": 0, "Sleep stage 1": 1, "Sleep stage 2": 2, "Sleep stage 3": 3, "Sleep stage 4": 3,
         "Sleep stage R": 4, "Sleep stage ?": -1, "Movement time": -1}
KEYS = {"x", "y", "fs", "ch_label", "subject", "night", "start_time", "onsets", "psg_file", "hypnogram_file"}


def expected_labels(hypnogram: Path, n_epochs: int) -> np.ndarray:
    """The DeepSleepNet rule written independently: expand runs, cut to the signal, drop ?/MT, trim wake to 60."""
    ann = mne.read_annotations(hypnogram)
    assert np.all(ann.onset % 30 == 0) and np.all(ann.duration % 30 == 0)
    labels = np.repeat([CODES[d] for d in ann.description], (ann.duration // 30).astype(int))[:n_epochs]
    labels = labels[labels >= 0]
    sleep = np.flatnonzero(labels != 0)
    return labels[max(sleep[0] - 60, 0): sleep[-1] + 61]


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


def test_label_counts_follow_the_surrogate_hypnograms(surrogate):
    root, _ = surrogate
    for hypnogram in sorted((root / "edf" / "sleep-cassette").glob("*-Hypnogram.edf")):
        psg = hypnogram.with_name(f"{hypnogram.name[:7]}0-PSG.edf")
        expected = expected_labels(hypnogram, n_epochs_of(psg))
        y = np.load(root / "ours" / f"{hypnogram.name[:7]}0.npz")["y"]
        np.testing.assert_array_equal(np.bincount(y, minlength=5), np.bincount(expected, minlength=5))


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
