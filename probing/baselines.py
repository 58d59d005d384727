"""Baselines that put the self-supervised numbers in context, on the same folds and test subjects.

    random      the same probe on a randomly initialised, frozen encoder -> results/<exp>_random-init[...]/
    supervised  the same encoder trained end to end with labels, scored by its own head
                (training engine, ssl.type "Supervised") -> results/<exp>_supervised/
    bandpower   no deep learning: 5 Welch log band powers + log std per epoch, standardised,
                multinomial logistic regression -> results/Baseline_bandpower_<dataset>[_labels-F]/
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
from scipy.signal import welch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from probing.probe import label_subset, probe_encoder, run_probe
from probing.results import RESULTS_ROOT, run_meta, save_fold_predictions, write_results
from training.checkpoint import input_norm_of
from utils import seed_everything

BANDS = {"delta": (0.5, 4.0), "theta": (4.0, 8.0), "alpha": (8.0, 12.0), "sigma": (12.0, 16.0), "beta": (16.0, 30.0)}
BANDPOWER_FEATURES = tuple(f"log_{band}" for band in BANDS) + ("log_std",)
LOGREG_C = (0.01, 0.1, 1.0, 10.0)  # inverse L2 strength, chosen on validation macro-F1


# ----------------------------------------------------------------------------- random init
def random_init_config(config: dict) -> dict:
    config = copy.deepcopy(config)
    config["exp_name"] += "_random-init"
    return config


def random_init_fold(config: dict, fold: int, device, data) -> dict[str, dict]:
    """The configured probes on a seeded, randomly initialised frozen encoder of config's backbone; {kind: metrics}."""
    from models.main_model import build_model

    seed_everything(config["trainer"]["seed"])
    encoder = build_model(config).to(device).eval()
    return probe_encoder(encoder, input_norm_of(data.train.x, config["data"]["standardise"]), data, random_init_config(config), fold, device,
                         paradigm="Random init")


# ----------------------------------------------------------------------------- supervised
def supervised_config(config: dict) -> dict:
    config = copy.deepcopy(config)
    config["exp_name"] += "_supervised"
    config["ssl"]["type"] = "Supervised"
    return config


def supervised_fold(config: dict, fold: int, device) -> dict[str, dict]:
    """Train the encoder + a linear head end to end with labels on the fold, score its head: {"supervised": metrics}.

    Trained and selected as the probes are: plain cross-entropy, the state of lowest validation loss,
    early stopping after trainer.early_stopping_patience validations without improvement."""
    from training.engine import train_fold

    baseline = supervised_config(config)
    return run_probe(baseline, fold, train_fold(baseline, fold, device), device)


# ----------------------------------------------------------------------------- band power
def bandpower_features(x: np.ndarray, fs: float = 100.0, chunk: int = 2048) -> np.ndarray:
    """Log band powers (Welch, 4-s Hann windows, 50 % overlap) and log std of epochs x (n, T) µV -> (n, 6).

    Band power = sum of the PSD over lo <= f < hi times the frequency step (µV²). Computed in
    chunks of epochs only to bound memory; each chunk is one vectorised Welch call.
    """
    nperseg = int(4 * fs)
    freqs = np.fft.rfftfreq(nperseg, 1 / fs)
    masks = np.stack([(freqs >= lo) & (freqs < hi) for lo, hi in BANDS.values()], axis=1).astype(np.float32)
    features = np.empty((len(x), len(BANDPOWER_FEATURES)), np.float32)
    for start in tqdm(range(0, len(x), chunk), desc="band powers", leave=False):
        block = np.asarray(x[start : start + chunk], dtype=np.float32)
        _, psd = welch(block, fs=fs, nperseg=nperseg, axis=-1)
        features[start : start + chunk, :-1] = np.log(psd @ masks * (fs / nperseg) + 1e-12)
        features[start : start + chunk, -1] = np.log(block.std(axis=1, dtype=np.float64) + 1e-12)
    return features


def fit_bandpower_classifier(f_train: np.ndarray, y_train: np.ndarray, f_val: np.ndarray, y_val: np.ndarray,
                             class_weighting: str):
    """Standardise + multinomial logistic regression; C chosen on validation macro-F1. -> (pipeline, summary)."""
    best, best_f1, best_c = None, -1.0, None
    for c in LOGREG_C:
        model = make_pipeline(StandardScaler(), LogisticRegression(
            C=c, max_iter=2000, class_weight="balanced" if class_weighting == "balanced" else None))
        model.fit(f_train, y_train)
        val_f1 = f1_score(y_val, model.predict(f_val), average="macro", zero_division=0)
        if val_f1 > best_f1:
            best, best_f1, best_c = model, val_f1, c
    return best, {"C": best_c, "best_val_macro_f1": float(best_f1), "n_train_labels": int(len(y_train))}


def bandpower_results_dir(config: dict) -> Path:
    name = f"Baseline_bandpower_{config['data']['dataset']}"
    if config["probe"]["label_fraction"] < 1:
        name += f"_labels-{config['probe']['label_fraction']:g}"
    return RESULTS_ROOT / name


def bandpower_fold(config: dict, fold: int, data) -> dict[str, dict]:
    """Band-power + logistic-regression baseline on one fold's train/val/test subjects: {"bandpower": metrics}."""
    features = {split: bandpower_features(getattr(data, split).x, config["data"]["sampling_rate"])
                for split in ("train", "val", "test")}
    labelled = label_subset(data.train.y, config["probe"]["label_fraction"], config["trainer"]["seed"] + fold)
    model, summary = fit_bandpower_classifier(features["train"][labelled], data.train.y[labelled],
                                              features["val"], data.val.y, config["probe"]["class_weighting"])
    baseline = {**config, "exp_name": bandpower_results_dir(config).name}
    meta = run_meta(baseline, "Band power", "—", "logistic regression", config["probe"]["label_fraction"]) | summary
    return {"bandpower": save_fold_predictions(bandpower_results_dir(config), fold, data.test,
                                               model.predict(features["test"]), meta)}


def write_bandpower_results(config: dict) -> dict:
    return write_results(config, bandpower_results_dir(config))
