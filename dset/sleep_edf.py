"""Sleep-EDF (sleep-cassette) EDF -> NPZ: one file per night of 30-s single-channel epochs with stage labels.

Each PSG `SC4ssNE0-PSG.edf` is paired with its hypnogram `SC4ssNEx-Hypnogram.edf` by the first 7 characters of
the name. One channel is read with MNE in µV; the R&K annotations become one label per 30-s epoch (the annotation
covering the epoch's midpoint). As in DeepSleepNet, TinySleepNet and SleePyCo: "Sleep stage ?" and "Movement time"
epochs are dropped, labels past the end of the signal are cut, stages 3 and 4 merge into N3, and wake is trimmed to
30 min (60 epochs) before the first and after the last sleep epoch.

`SC4ssNE0.npz` holds
    x               (n, 3000) float32   the channel in µV, 30-s epochs at 100 Hz
    y               (n,)      int64     W=0, N1=1, N2=2, N3=3, REM=4
    fs              int                 100
    ch_label        str                 e.g. "EEG Fpz-Cz"
    subject, night  int                 ss and N of the file name
    start_time      str                 recording start, ISO 8601 (clock time of the PSG header)
    onsets          (n,)      float64   seconds from the recording start to each epoch
    psg_file, hypnogram_file  str       source file names
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import re
import sys
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from utils import REPO_ROOT, atomic_write_bytes

FS = 100
EPOCH_SECONDS = 30
EPOCH_SAMPLES = FS * EPOCH_SECONDS
WAKE_EDGE_EPOCHS = 60          # 30 min of wake kept on each side of the sleep period
UNSCORED = -1
STAGE_CODES = {
    "Sleep stage W": 0, "Sleep stage 1": 1, "Sleep stage 2": 2, "Sleep stage 3": 3, "Sleep stage 4": 3,
    "Sleep stage R": 4, "Sleep stage ?": UNSCORED, "Movement time": UNSCORED,
}
DEFAULT_CHANNEL = "EEG Fpz-Cz"
DEFAULT_DATA_DIR = REPO_ROOT / "dset" / "Sleep-EDF-2018" / "edf"
NAME = re.compile(r"^SC4(\d\d)(\d)")
FLAT_STD_UV = 0.5              # a night whose channel has a smaller std (µV) is a flat line (dead electrode)
CLIPPED_SHARE = 0.05           # ... or whose samples sit at the minimum or maximum value this often is clipped


class PrepareError(Exception):
    """A night that cannot be prepared; the message names the file and the reason."""


@dataclass(frozen=True)
class Night:
    """A PSG and its hypnogram; either may be None when the pair is incomplete."""

    key: str                   # first 7 characters of the file names, e.g. "SC4001E"
    psg: Path | None
    hypnogram: Path | None

    @property
    def output_name(self) -> str:
        return f"{self.key}0.npz"

    @property
    def name(self) -> str:
        return (self.psg or self.hypnogram).name


@dataclass
class PrepareReport:
    prepared: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)    # (file name, reason)

    def summary(self) -> str:
        lines = [f"prepared {len(self.prepared)}, up to date {len(self.skipped)}, failed {len(self.failed)}"]
        lines += [f"  FAILED {reason}" for _, reason in self.failed]
        return "\n".join(lines)


def channel_folder(channel: str) -> str:
    """Output folder of a channel: "EEG Fpz-Cz" -> "Fpz-Cz"."""
    return channel.removeprefix("EEG ").replace(" ", "_")


def find_nights(data_dir: str | os.PathLike) -> list[Night]:
    """Pair `*-PSG.edf` and `*-Hypnogram.edf` in DIR/sleep-cassette/ (PhysioNet layout) or DIR itself."""
    data_dir = Path(data_dir)
    folder = data_dir / "sleep-cassette" if (data_dir / "sleep-cassette").is_dir() else data_dir
    psgs = {p.name[:7]: p for p in folder.glob("*-PSG.edf")}
    hypnograms = {p.name[:7]: p for p in folder.glob("*-Hypnogram.edf")}
    return [Night(key, psgs.get(key), hypnograms.get(key)) for key in sorted(psgs.keys() | hypnograms.keys())]


# ----------------------------------------------------------------------------- reading one night
def read_signal(psg: Path, channel: str, resample: bool = False):
    """The channel as a 1-channel MNE Raw (preloaded); PrepareError for a truncated or corrupt file.

    A rate other than 100 Hz is a PrepareError, or with `resample` is resampled to 100 Hz by MNE.
    """
    import mne

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            raw = mne.io.read_raw_edf(psg, include=[channel], preload=True, verbose="warning")
    except Exception as exc:           # MNE raises ValueError, OSError, UnicodeDecodeError... on corrupt headers
        raise PrepareError(f"{psg.name}: cannot read EDF ({type(exc).__name__}: {exc})") from exc
    for warning in caught:
        if "does not match the file size" in str(warning.message):
            raise PrepareError(f"{psg.name}: truncated EDF (the file holds fewer data records than its header says)")
    if raw.ch_names != [channel]:
        available = mne.io.read_raw_edf(psg, preload=False, verbose="error").ch_names
        raise PrepareError(f"{psg.name}: channel {channel!r} not found (channels: {', '.join(available)})")
    if raw.info["sfreq"] != FS and resample:
        raw.resample(FS, verbose="error")
    if raw.info["sfreq"] != FS:
        raise PrepareError(f"{psg.name}: {channel} is sampled at {raw.info['sfreq']:g} Hz, expected {FS} Hz")
    return raw


def edf_start(path: Path) -> dt.datetime:
    """Start date and time from an EDF header (bytes 168-184, 'dd.mm.yyhh.mm.ss'; years 85-99 are 19xx)."""
    with open(path, "rb") as f:
        stamp = f.read(184)[168:].decode("ascii", "replace")
    try:
        day, month, year = (int(v) for v in stamp[:8].split("."))
        hour, minute, second = (int(v) for v in stamp[8:].split("."))
        return dt.datetime(year + (1900 if year >= 85 else 2000), month, day, hour, minute, second)
    except ValueError as exc:
        raise PrepareError(f"{path.name}: bad start date/time {stamp!r} in the EDF header") from exc


def epoch_labels(hypnogram: Path, n_epochs: int, shift: float) -> np.ndarray:
    """(n_epochs,) int64 stage of each 30-s epoch of the signal (UNSCORED where none covers its midpoint).

    `shift`: seconds from the PSG start to the hypnogram start (0 in Sleep-EDF).
    """
    import mne

    try:
        annotations = mne.read_annotations(hypnogram)
    except Exception as exc:
        raise PrepareError(f"{hypnogram.name}: cannot read hypnogram ({type(exc).__name__}: {exc})") from exc
    if len(annotations) == 0:
        raise PrepareError(f"{hypnogram.name}: hypnogram has no annotations")
    unknown = sorted(set(annotations.description) - STAGE_CODES.keys())
    if unknown:
        raise PrepareError(f"{hypnogram.name}: unknown annotation label(s) {unknown} (known: {list(STAGE_CODES)})")
    order = np.argsort(annotations.onset, kind="stable")
    onset = annotations.onset[order] + shift
    end = onset + annotations.duration[order]
    code = np.array([STAGE_CODES[d] for d in annotations.description[order]], dtype=np.int64)
    mid = (np.arange(n_epochs) + 0.5) * EPOCH_SECONDS
    i = np.searchsorted(onset, mid, side="right") - 1
    covered = (i >= 0) & (mid < end[np.maximum(i, 0)])
    if not covered.any():
        raise PrepareError(f"{hypnogram.name}: hypnogram does not overlap the signal (annotations cover "
                           f"{onset[0]:.0f}-{end.max():.0f} s after the PSG start, the signal 0-{n_epochs * EPOCH_SECONDS} s)")
    return np.where(covered, code[np.maximum(i, 0)], UNSCORED)


def sleep_period(y: np.ndarray) -> slice:
    """Epochs kept by the wake trim: 60 epochs of wake around the first and last non-wake epoch."""
    sleep = np.flatnonzero(y != 0)
    return slice(max(sleep[0] - WAKE_EDGE_EPOCHS, 0), min(sleep[-1] + WAKE_EDGE_EPOCHS, y.size - 1) + 1)


def signal_problem(x: np.ndarray) -> str | None:
    """Why a night's kept signal (n, 3000) µV is unusable: flat (std < FLAT_STD_UV) or clipped (more than
    CLIPPED_SHARE of the samples at its minimum or maximum value, the digital limits); None when it is fine."""
    std = float(np.std(x, dtype=np.float64))
    if std < FLAT_STD_UV:
        return f"flat channel (std {std:.2f} µV < {FLAT_STD_UV} µV)"
    at_limits = float(np.mean((x == x.min()) | (x == x.max())))
    if at_limits > CLIPPED_SHARE:
        return f"clipped channel ({100 * at_limits:.1f} % of the samples at the min or max, > {100 * CLIPPED_SHARE:g} %)"
    return None


def read_night(night: Night, channel: str = DEFAULT_CHANNEL, allow_flat: bool = False) -> dict[str, np.ndarray]:
    """The arrays of one night's NPZ (see the module docstring); PrepareError when it cannot be made, or when
    the channel is flat or clipped (unless `allow_flat`)."""
    if night.hypnogram is None:
        raise PrepareError(f"{night.psg.name}: no hypnogram {night.key}?-Hypnogram.edf beside it")
    if night.psg is None:
        raise PrepareError(f"{night.hypnogram.name}: no PSG {night.key}0-PSG.edf beside it")
    if not (match := NAME.match(night.psg.name)):
        raise PrepareError(f"{night.psg.name}: not a sleep-cassette name (SC4ssN...)")
    raw = read_signal(night.psg, channel)
    start = edf_start(night.psg)
    n_epochs = raw.n_times // EPOCH_SAMPLES
    labels = epoch_labels(night.hypnogram, n_epochs, (edf_start(night.hypnogram) - start).total_seconds())
    scored = np.flatnonzero(labels != UNSCORED)
    if not (labels[scored] != 0).any():
        raise PrepareError(f"{night.psg.name}: no sleep epoch ({scored.size} scored epochs, all wake)")
    keep = scored[sleep_period(labels[scored])]
    signal = raw.get_data(units="uV")[0, : n_epochs * EPOCH_SAMPLES].reshape(n_epochs, EPOCH_SAMPLES)
    if not allow_flat and (problem := signal_problem(signal[keep])):
        raise PrepareError(f"{night.psg.name}: {channel}: {problem}; skipped (--allow-flat keeps it)")
    return {
        "x": signal[keep].astype(np.float32),
        "y": labels[keep],
        "fs": np.int64(FS),
        "ch_label": np.array(channel),
        "subject": np.int64(match[1]),
        "night": np.int64(match[2]),
        "start_time": np.array(start.isoformat()),
        "onsets": keep * float(EPOCH_SECONDS),
        "psg_file": np.array(night.psg.name),
        "hypnogram_file": np.array(night.hypnogram.name),
    }


# ----------------------------------------------------------------------------- preparing a folder
def prepare_night(night: Night, out_dir: Path, channel: str, force: bool, allow_flat: bool = False) -> str:
    """Write OUT/SC4ssNE0.npz atomically; 'skipped' when it is newer than both inputs (and not `force`)."""
    out = out_dir / night.output_name
    if not force and night.psg and night.hypnogram and out.is_file():
        if out.stat().st_mtime > max(night.psg.stat().st_mtime, night.hypnogram.stat().st_mtime):
            return "skipped"
    arrays = read_night(night, channel, allow_flat)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(out, buffer.getvalue())
    return "prepared"


def _run(night: Night, out_dir: Path, channel: str, force: bool, allow_flat: bool = False) -> tuple[str, str]:
    """(status, message) of one night; status 'failed' carries the reason instead of raising."""
    try:
        return prepare_night(night, out_dir, channel, force, allow_flat), ""
    except PrepareError as exc:
        return "failed", str(exc)
    except Exception as exc:
        return "failed", f"{night.name}: {type(exc).__name__}: {exc}"


def prepare(data_dir: str | os.PathLike, out_dir: str | os.PathLike, channel: str = DEFAULT_CHANNEL,
            workers: int = 1, force: bool = False, progress: bool = True, allow_flat: bool = False) -> PrepareReport:
    """Prepare every night of `data_dir` into `out_dir`, `workers` nights at a time; failures are collected."""
    from tqdm import tqdm

    nights = find_nights(data_dir)
    if not nights:
        raise FileNotFoundError(f"no *-PSG.edf / *-Hypnogram.edf files in {data_dir} or {Path(data_dir) / 'sleep-cassette'}")
    out_dir = Path(out_dir)
    report = PrepareReport()
    bar = tqdm(total=len(nights), desc=f"prepare {channel}", unit="night", disable=not progress)

    def record(night: Night, status: str, message: str) -> None:
        if status == "failed":
            report.failed.append((night.name, message))
            if progress:
                bar.write(f"FAILED {message}")
        else:
            getattr(report, status).append(night.name)
        bar.update()

    if workers > 1 and len(nights) > 1:
        with ProcessPoolExecutor(min(workers, len(nights))) as pool:
            futures = {pool.submit(_run, night, out_dir, channel, force, allow_flat): night for night in nights}
            for future in as_completed(futures):
                record(futures[future], *future.result())
    else:
        for night in nights:
            record(night, *_run(night, out_dir, channel, force, allow_flat))
    bar.close()
    return report


def main(argv: list[str] | None = None) -> int:
    """CLI entry point (dset/Sleep-EDF-2018/prepare_sleep-edf-2018.py); exit status 1 when a night failed."""
    parser = argparse.ArgumentParser(description="Sleep-EDF-2018 sleep-cassette EDF -> one NPZ per night "
                                     "(30-s epochs, 100 Hz, µV, labels W/N1/N2/N3/REM = 0..4).")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR,
                        help="download folder (PhysioNet layout: PSGs in DIR/sleep-cassette/ or DIR; default: %(default)s)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="default: dset/Sleep-EDF-2018/npz/<channel without 'EEG '>/")
    parser.add_argument("--channel", default=DEFAULT_CHANNEL, help="EDF channel to read (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="nights in parallel (default: %(default)s)")
    parser.add_argument("--force", action="store_true", help="rewrite outputs that are already up to date")
    parser.add_argument("--allow-flat", action="store_true",
                        help=f"keep nights whose channel is flat (std < {FLAT_STD_UV} µV) or clipped "
                             f"(> {100 * CLIPPED_SHARE:g} %% of the samples at the min or max)")
    args = parser.parse_args(argv)
    out_dir = args.out_dir or REPO_ROOT / "dset" / "Sleep-EDF-2018" / "npz" / channel_folder(args.channel)
    try:
        report = prepare(args.data_dir, out_dir, args.channel, args.workers, args.force, allow_flat=args.allow_flat)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(report.summary())
    print(f"output: {out_dir}")
    return 1 if report.failed else 0
