"""A small synthetic sleep dataset in the exact Sleep-EDF layout, to try the whole pipeline on a CPU in minutes.

    python -m dset.demo [--out dset/demo] [--subjects 10] [--epochs-per-night 360] [--seed 0]

writes
    OUT/edf/sleep-cassette/SC4ss1E0-PSG.edf        7 signals with the Sleep-EDF names, 30-s data records:
                                                   EEG Fpz-Cz, EEG Pz-Oz, EOG horizontal (100 Hz, µV),
                                                   Resp oro-nasal, EMG submental, Temp rectal, Event marker (1 Hz)
    OUT/edf/sleep-cassette/SC4ss1EC-Hypnogram.edf  EDF+ R&K annotations ("Sleep stage W/1/2/3/4/R/?", "Movement time")
    OUT/npz/Fpz-Cz/SC4ss1E0.npz                    made by the Sleep-EDF prepare step (dset/sleep_edf.py)
    OUT/splits.json                                subject-wise folds (dset/splits.py)

Not EEG: each 30-s epoch is coloured noise whose band powers depend on the stage, plus stage-typical transients
(W: alpha/beta and blinks; N1: theta and slow eye movements; N2: spindles and K-complexes; N3: high-amplitude delta;
REM: low-amplitude theta, sawtooth waves and rapid eye movements). Nights start and end with 35-50 min of wake, so
the 30-min wake trim has work to do. Stages are learnable but overlap (per-epoch and per-subject gain jitter).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from pathlib import Path

import numpy as np

from dset.sleep_edf import EPOCH_SAMPLES, EPOCH_SECONDS, FS, channel_folder, prepare
from dset.splits import make_splits, write_splits
from utils import REPO_ROOT, atomic_write_bytes

DEFAULT_OUT = REPO_ROOT / "dset" / "demo"
CHANNEL = "EEG Fpz-Cz"
BANDS = ((0.5, 4), (4, 8), (8, 12), (12, 16), (16, 30))
# rms amplitude (µV) of each band of Fpz-Cz per stage: W, N1, N2, N3, REM
BAND_UV = np.array([
    [10, 6, 12, 4, 8],
    [14, 12, 4, 3, 4],
    [22, 9, 4, 6, 3],
    [55, 10, 3, 3, 2],
    [12, 11, 5, 3, 5],
], dtype=float)
# band gains of the other two 100 Hz channels relative to Fpz-Cz
PZ_OZ_GAIN = np.array([0.6, 0.8, 1.5, 0.8, 0.7])
EOG_GAIN = np.array([0.8, 0.4, 0.3, 0.3, 0.6])
EEG_PREFILTER = "HP:0.5Hz LP:100Hz [enhanced cassette BW]"
# label, transducer, unit, prefilter, samples per 30-s record, physical range; 16-bit digital range
SIGNALS = (
    ("EEG Fpz-Cz", "Ag-AgCl electrodes", "uV", EEG_PREFILTER, 3000, (-500, 500)),
    ("EEG Pz-Oz", "Ag-AgCl electrodes", "uV", EEG_PREFILTER, 3000, (-500, 500)),
    ("EOG horizontal", "Ag-AgCl electrodes", "uV", EEG_PREFILTER, 3000, (-1000, 1000)),
    ("Resp oro-nasal", "Oral-nasal thermistors", "", "HP:0.03Hz LP:0.9Hz", 30, (-2048, 2047)),
    ("EMG submental", "Ag-AgCl electrodes", "uV", "HP:16Hz Rectification LP:0.7Hz", 30, (-5, 5)),
    ("Temp rectal", "Rectal thermistor", "DegC", "", 30, (34, 40)),
    ("Event marker", "Marker button", "", "Hold during 2 seconds", 30, (-2047, 2048)),
)
DIGITAL = (-32768, 32767)
RK_LABELS = ("Sleep stage W", "Sleep stage 1", "Sleep stage 2", "Sleep stage 3", "Sleep stage R")
MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()


# ----------------------------------------------------------------------------- EDF / EDF+ writing
def _fields(values, width: int) -> bytes:
    out = b""
    for value in values:
        text = str(value).encode("ascii")
        if len(text) > width:
            raise ValueError(f"EDF header field {value!r} is longer than {width} characters")
        out += text.ljust(width)
    return out


def edf_header(start: dt.datetime, n_records: int, record_seconds: int, signals: list[tuple],
               edf_plus: bool = False) -> bytes:
    """EDF(+) header; signals: (label, transducer, unit, pmin, pmax, dmin, dmax, prefilter, samples per record)."""
    recording = f"Startdate {start.day:02d}-{MONTHS[start.month - 1]}-{start.year} X X X"
    head = _fields([0], 8) + _fields(["X X X X"], 80) + _fields([recording], 80)
    head += _fields([start.strftime("%d.%m.%y"), start.strftime("%H.%M.%S"), 256 * (len(signals) + 1)], 8)
    head += _fields(["EDF+C" if edf_plus else ""], 44) + _fields([n_records, record_seconds], 8) + _fields([len(signals)], 4)
    for column, width in enumerate((16, 80, 8, 8, 8, 8, 8, 80, 8)):
        head += _fields([s[column] for s in signals], width)
    return head + b" " * 32 * len(signals)


def psg_bytes(start: dt.datetime, channels: list[np.ndarray]) -> bytes:
    """Plain EDF with 30-s data records; channels in SIGNALS order, physical units."""
    n_records = channels[0].size // EPOCH_SAMPLES
    specs, records = [], []
    for (label, transducer, unit, prefilter, n_samples, (pmin, pmax)), x in zip(SIGNALS, channels):
        specs.append((label, transducer, unit, pmin, pmax, *DIGITAL, prefilter, n_samples))
        scale = (DIGITAL[1] - DIGITAL[0]) / (pmax - pmin)
        digital = np.clip(np.round((x - pmin) * scale + DIGITAL[0]), *DIGITAL).astype("<i2")
        records.append(digital.reshape(n_records, n_samples))
    return edf_header(start, n_records, EPOCH_SECONDS, specs) + np.concatenate(records, axis=1).tobytes()


def hypnogram_bytes(start: dt.datetime, annotations: list[tuple[int, int, str]]) -> bytes:
    """EDF+C with one data record of duration 0 holding all annotations, as in Sleep-EDF."""
    tal = b"+0\x14\x14\x00" + b"".join(f"+{onset:d}\x15{duration:d}\x14{text}\x14\x00".encode()
                                       for onset, duration, text in annotations)
    n_samples = (len(tal) + 1) // 2
    spec = ("EDF Annotations", "", "", 0, 1, *DIGITAL, "", n_samples)
    return edf_header(start, 1, 0, [spec], edf_plus=True) + tal.ljust(2 * n_samples, b"\x00")


# ----------------------------------------------------------------------------- one synthetic night
def stage_sequence(rng: np.random.Generator, n_epochs: int) -> np.ndarray:
    """(n_epochs,) stages 0..4: wake, sleep cycles (N1 -> N2 -> N3 -> N2 -> REM, less N3 and more REM
    in later cycles, brief awakenings between cycles), wake."""
    final_wake = int(rng.integers(70, 100))
    stages = [np.zeros(int(rng.integers(70, 100)), int)]
    cycle = 0
    while sum(map(len, stages)) < n_epochs - final_wake:
        n3 = max(0, int(rng.integers(14, 26)) - 8 * cycle)
        rem = int(rng.integers(6, 12)) + 5 * cycle
        for stage, length in ((1, rng.integers(2, 7)), (2, rng.integers(10, 22)), (3, n3), (2, rng.integers(5, 12)),
                              (4, rem), (0, rng.integers(0, 4)), (1, rng.integers(1, 4))):
            stages.append(np.full(int(length), stage))
        cycle += 1
    sleep = np.concatenate(stages)[: n_epochs - final_wake]
    return np.concatenate([sleep, np.zeros(n_epochs - sleep.size, int)])


def coloured_noise(rng: np.random.Generator, band_uv: np.ndarray) -> np.ndarray:
    """(n, 3000) epochs whose band rms amplitudes are band_uv (n, 5); 1/f shape inside each band."""
    f = np.fft.rfftfreq(EPOCH_SAMPLES, 1 / FS)
    shape = np.zeros((len(BANDS), f.size))
    for b, (lo, hi) in enumerate(BANDS):
        inside = (f >= lo) & (f < hi)
        shape[b, inside] = 1 / f[inside]
        shape[b] /= shape[b].sum()
    power = (band_uv ** 2) @ shape                                # (n, freqs) share of the variance
    spectrum = np.sqrt(power / 2) * EPOCH_SAMPLES * np.exp(2j * np.pi * rng.random(power.shape))
    return np.fft.irfft(spectrum, n=EPOCH_SAMPLES, axis=1)


def add_events(x: np.ndarray, rng: np.random.Generator, rate: np.ndarray, length: int, wave) -> None:
    """Add Poisson(rate[i]) events inside epoch i of x (n, 3000); wave(t (length,), k) -> (k, length) µV."""
    epoch = np.repeat(np.arange(rate.size), rng.poisson(rate))
    t0 = rng.integers(0, EPOCH_SAMPLES - length, epoch.size)
    np.add.at(x, (epoch[:, None], t0[:, None] + np.arange(length)), wave(np.arange(length) / FS, epoch.size))


def synth_night(rng: np.random.Generator, y: np.ndarray) -> list[np.ndarray]:
    """The 7 channels of a night with stages y (n,): three (n*3000,) at 100 Hz, four (n*30,) at 1 Hz."""
    n = y.size
    jitter = rng.lognormal(0, 0.4, (n, len(BANDS))) * rng.lognormal(0, 0.2)      # per epoch x per subject
    uv = BAND_UV[y] * jitter
    fpz, pz, eog = (coloured_noise(rng, uv * gain) for gain in (1, PZ_OZ_GAIN, EOG_GAIN))
    u = lambda lo, hi, k: rng.uniform(lo, hi, (k, 1))
    spindle = lambda t, k: u(15, 35, k) * np.sin(np.pi * t / t[-1]) ** 2 * np.sin(2 * np.pi * u(11.5, 14.5, k) * t)
    kcomplex = lambda t, k: u(60, 120, k) * (0.5 * np.exp(-((t - 0.55) / 0.15) ** 2) - np.exp(-((t - 0.25) / 0.08) ** 2))
    blink = lambda t, k: u(60, 150, k) * np.exp(-((t - 0.3) / u(0.05, 0.09, k)) ** 2)
    sawtooth = lambda t, k: u(20, 40, k) * np.sin(np.pi * t / t[-1]) * (2 * ((u(2, 5, k) * t) % 1) - 1)
    rapid_eye = lambda t, k: rng.choice([-1, 1], (k, 1)) * u(80, 250, k) * (1 - np.exp(-t / 0.03)) * np.exp(-t / 0.4)
    slow_eye = lambda t, k: rng.choice([-1, 1], (k, 1)) * u(60, 120, k) * np.sin(np.pi * t / t[-1])
    add_events(fpz, rng, 1.5 * (y == 2) + 0.3 * (y == 3), 100, spindle)
    add_events(fpz, rng, 0.6 * (y == 2), 100, kcomplex)
    add_events(fpz, rng, 1.2 * (y == 4), 300, sawtooth)
    add_events(eog, rng, 1.0 * (y == 0), 60, blink)
    add_events(eog, rng, 4.0 * (y == 4), 150, rapid_eye)
    add_events(eog, rng, 1.0 * (y == 1), 400, slow_eye)
    fpz += 0.5 * np.where(y[:, None] == 0, eog, 0)                                   # blinks reach Fpz
    seconds = np.arange(n * EPOCH_SECONDS)
    per_second = np.repeat(y, EPOCH_SECONDS)
    resp = 600 * np.sin(2 * np.pi * 0.25 * seconds + rng.uniform(0, 2 * np.pi)) + rng.normal(0, 100, seconds.size)
    emg = np.array([3.4, 3.0, 2.8, 2.7, 2.2])[per_second] + rng.normal(0, 0.1, seconds.size)
    temp = 37.0 - 0.3 * np.sin(np.pi * seconds / seconds.size) + rng.normal(0, 0.02, seconds.size)
    marker = np.full(seconds.size, 900.0)
    return [fpz.ravel(), pz.ravel(), eog.ravel(), resp, emg, temp, marker]


def annotations(rng: np.random.Generator, y: np.ndarray) -> list[tuple[int, int, str]]:
    """R&K runs of y: N3 split into stages 3/4, a few movement-time epochs in sleep, and a final
    "Sleep stage ?" that runs past the end of the signal (as in Sleep-EDF)."""
    text = np.array(RK_LABELS, dtype=object)[y]
    n3 = np.flatnonzero(y == 3)
    text[n3] = np.where(rng.random(n3.size) < 0.4, "Sleep stage 4", "Sleep stage 3")
    text[rng.choice(np.flatnonzero(y != 0), 2, replace=False)] = "Movement time"
    cut = np.flatnonzero(np.r_[True, text[1:] != text[:-1], True])
    runs = [(int(a) * EPOCH_SECONDS, int(b - a) * EPOCH_SECONDS, text[a]) for a, b in zip(cut[:-1], cut[1:])]
    return runs + [(y.size * EPOCH_SECONDS, int(rng.integers(10, 60)) * EPOCH_SECONDS, "Sleep stage ?")]


def write_night(edf_dir: Path, subject: int, epochs: int, seed: int) -> None:
    rng = np.random.default_rng([seed, subject])
    y = stage_sequence(rng, epochs)
    start = dt.datetime(1989, 1, 1, 21) + dt.timedelta(days=subject, minutes=int(rng.integers(0, 120)))
    atomic_write_bytes(edf_dir / f"SC4{subject:02d}1E0-PSG.edf", psg_bytes(start, synth_night(rng, y)))
    atomic_write_bytes(edf_dir / f"SC4{subject:02d}1EC-Hypnogram.edf", hypnogram_bytes(start, annotations(rng, y)))


# ----------------------------------------------------------------------------- the dataset
def make_demo(out_dir: str | os.PathLike = DEFAULT_OUT, n_subjects: int = 10, epochs_per_night: int = 360,
              seed: int = 0, num_folds: int = 5, progress: bool = True) -> Path:
    """Write the demo dataset (EDF, prepared NPZ, splits.json) to out_dir and return it; a no-op when complete."""
    if not 2 <= n_subjects <= 100 or num_folds > n_subjects:
        raise ValueError(f"n_subjects={n_subjects}, num_folds={num_folds}: need 2 <= num_folds <= n_subjects <= 100")
    if epochs_per_night < 240:
        raise ValueError(f"epochs_per_night={epochs_per_night}: need at least 240 (2 h) for wake + sleep + wake")
    out_dir = Path(out_dir)
    edf_dir, npz_dir = out_dir / "edf" / "sleep-cassette", out_dir / "npz" / channel_folder(CHANNEL)
    settings = {"n_subjects": n_subjects, "epochs_per_night": epochs_per_night, "seed": seed, "num_folds": num_folds}
    marker = out_dir / "demo.json"                 # written last: the dataset is complete and made with `settings`
    if marker.is_file() and json.loads(marker.read_text()) == settings:
        return out_dir
    for subject in range(n_subjects):
        write_night(edf_dir, subject, epochs_per_night, seed)
    report = prepare(edf_dir.parent, npz_dir, CHANNEL, force=True, progress=progress)
    if report.failed:
        raise RuntimeError(f"demo preparation failed:\n{report.summary()}")
    write_splits(make_splits(range(n_subjects), num_folds, seed, dataset="demo"), out_dir / "splits.json")
    atomic_write_bytes(marker, json.dumps(settings).encode())
    return out_dir


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate the synthetic demo dataset (Sleep-EDF layout) and prepare it.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--subjects", type=int, default=10)
    parser.add_argument("--epochs-per-night", type=int, default=360, help="30-s epochs per night (360 = 3 h)")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = make_demo(args.out, args.subjects, args.epochs_per_night, args.seed, args.folds)
    print(f"demo dataset in {out}: data.root_dir={out / 'npz' / channel_folder(CHANNEL)}, data.splits={out / 'splits.json'}, "
          f"data.dataset=demo, data.num_folds={args.folds}")


if __name__ == "__main__":
    main()
