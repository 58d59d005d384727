"""Stage one new recording with a trained encoder and the probe saved for it (predict.py).

    recording = read_recording(psg, channel, hypnogram)      30-s epochs at 100 Hz (µV), their onsets, labels
    probabilities = stage_recording(recording.x, ckpt_path)  (n, 5) through encoder + saved probe
    outputs = write_outputs(recording, probabilities, out_dir)

Epochs are cut from the recording start, or from the hypnogram's first onset when a hypnogram is given.
With a hypnogram, the metrics score the epochs the benchmark scores: scored epochs only ("Sleep stage ?"
and "Movement time" left out), wake trimmed to 30 min before the first and after the last sleep epoch.
For the linear and MLP probes they equal classifier_training.py's for that night. A context probe sees
each epoch's true neighbours in the recording here, whereas a prepared night has those epochs removed,
so near such gaps its context, and its metrics, can differ slightly.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dset.demo import RK_LABELS
from dset.sleep_edf import (EPOCH_SAMPLES, EPOCH_SECONDS, FS, UNSCORED, PrepareError, edf_start, epoch_labels,
                            read_signal, sleep_period)
from probing.metrics import classification_metrics
from probing.probe import probe_kinds, with_probe
from probing.results import plot_hypnogram, results_dir
from probing.saved_probe import load_probe, probe_path, weights_sha256
from training.checkpoint import encode_array, load_checkpoint
from utils import STAGES, InputError, atomic_write_bytes

@dataclass
class Recording:
    """One night: x (n, 3000) float32 µV at 100 Hz, onset (n,) s from the recording start, y (n,) or None."""

    name: str
    x: np.ndarray
    onset: np.ndarray
    y: np.ndarray | None
    meas_date: object


def read_recording(psg: str | Path, channel: str, hypnogram: str | Path | None = None) -> Recording:
    """Read `channel` of an EDF/EDF+ (resampled to 100 Hz) and cut it into 30-s epochs; PrepareError when it can't."""
    import mne

    psg = Path(psg)
    if not psg.is_file():
        raise PrepareError(f"{psg}: no such file")
    raw = read_signal(psg, channel, resample=True)
    start, shift = 0.0, 0.0
    if hypnogram is not None:
        hypnogram = Path(hypnogram)
        try:
            onsets = mne.read_annotations(hypnogram).onset
        except Exception as exc:
            raise PrepareError(f"{hypnogram.name}: cannot read hypnogram ({type(exc).__name__}: {exc})") from exc
        shift = (edf_start(hypnogram) - edf_start(psg)).total_seconds()
        start = max(float(onsets.min()) + shift, 0.0) if len(onsets) else 0.0
    signal = raw.get_data(units="uV")[0, round(start * FS):]
    n = signal.size // EPOCH_SAMPLES
    if n == 0:
        where = f" after the hypnogram's first onset ({start:g} s)" if hypnogram is not None else ""
        raise PrepareError(f"{psg.name}: {signal.size / FS:g} s of signal{where}, shorter than one "
                           f"{EPOCH_SECONDS}-s epoch")
    x = signal[: n * EPOCH_SAMPLES].reshape(n, EPOCH_SAMPLES).astype(np.float32)
    y = epoch_labels(hypnogram, n, shift - start) if hypnogram is not None else None
    return Recording(psg.stem, x, start + EPOCH_SECONDS * np.arange(n, dtype=np.float64), y, raw.info["meas_date"])


def stage_recording(x: np.ndarray, ckpt_path: str | Path, probe_file: str | Path | None = None,
                    device="cpu") -> np.ndarray:
    """Stage probabilities (n, 5) of epochs x (n, 3000) µV: the checkpoint's encoder, then its saved probe.

    The probe defaults to results/<run>/probe_fold-0K.pt of the checkpoint's config and fold; a
    supervised checkpoint uses its own head. The epochs are standardised with the checkpoint's
    training statistics.
    """
    model, ckpt = load_checkpoint(ckpt_path, device=device)
    z = encode_array(model, x, ckpt["input_norm"], device, ckpt["config"]["trainer"]["amp"])
    if ckpt["config"]["ssl"]["type"] == "Supervised":
        with torch.no_grad():
            logits = model.classify(torch.as_tensor(z, device=torch.device(device)))
        return torch.softmax(logits.float(), dim=1).cpu().numpy()
    if not probe_file:  # the config's probe; of 'both', the MLP (the seed table's protocol)
        kinds = probe_kinds(ckpt["config"]["probe"])
        probe_file = probe_path(results_dir(with_probe(ckpt["config"], "mlp" if "mlp" in kinds else kinds[0])), ckpt["fold"])
    probe_file = Path(probe_file)
    train_it = (f"python classifier_training.py --encoder_ckpt {ckpt_path} "
                f"--config {ckpt['config'].get('_source', '<the config it was trained with>')}")
    if not probe_file.is_file():
        raise FileNotFoundError(f"{ckpt_path} has no trained probe ({probe_file} is missing); train it with: {train_it}")
    probe = load_probe(probe_file, device)
    if probe.checkpoint["weights_sha256"] != weights_sha256(ckpt["model"]):
        raise InputError(f"{probe_file} was trained on another state of the encoder than {ckpt_path}; "
                         f"retrain it with: {train_it}")
    return probe.probabilities(z)


def benchmark_epochs(y: np.ndarray) -> np.ndarray:
    """Indices of the epochs the benchmark scores: scored, with wake trimmed to 30 min around sleep."""
    scored = np.flatnonzero(y != UNSCORED)
    return scored[sleep_period(y[scored])] if (y[scored] != 0).any() else scored


def write_outputs(recording: Recording, probabilities: np.ndarray, out_dir: str | Path) -> dict:
    """Write <night>_hypnogram.csv / _annotations.txt / _hypnogram.png (and _metrics.json with a hypnogram).

    Returns {"files": [paths], "metrics": classification_metrics or None}.
    """
    import mne

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    stage = probabilities.argmax(1)
    base = out_dir / recording.name
    table = io.StringIO()
    writer = csv.writer(table)
    writer.writerow(["onset_s", "duration_s", "stage", *(f"p_{s}" for s in STAGES)]
                    + (["true_stage"] if recording.y is not None else []))
    for i, (onset, label) in enumerate(zip(recording.onset, stage)):
        true = [] if recording.y is None else [STAGES[recording.y[i]] if recording.y[i] != UNSCORED else ""]
        writer.writerow([f"{onset:g}", EPOCH_SECONDS, STAGES[label], *(f"{p:.6f}" for p in probabilities[i]), *true])
    files = {"csv": Path(f"{base}_hypnogram.csv"), "annotations": Path(f"{base}_annotations.txt"),
             "png": Path(f"{base}_hypnogram.png")}
    atomic_write_bytes(files["csv"], table.getvalue().encode())
    annotations = mne.Annotations(recording.onset, EPOCH_SECONDS, [RK_LABELS[s] for s in stage],
                                  orig_time=recording.meas_date)
    annotations.save(files["annotations"], overwrite=True, verbose="error")
    atomic_write_bytes(files["png"], plot_hypnogram(recording.y, stage, recording.name))
    metrics = None
    if recording.y is not None and (keep := benchmark_epochs(recording.y)).size:
        metrics = {"epochs_scored": "scored epochs, wake trimmed to 30 min around sleep (as the benchmark)",
                   **classification_metrics(recording.y[keep], stage[keep])}
        files["metrics"] = Path(f"{base}_metrics.json")
        atomic_write_bytes(files["metrics"], json.dumps(metrics, indent=2).encode())
    return {"files": files, "metrics": metrics}
