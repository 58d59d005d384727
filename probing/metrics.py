"""Sleep-staging metrics (scikit-learn) for one fold and over several folds.

Over folds we report both conventions: metrics on the predictions POOLED over all test folds
(every epoch counts once, as AttnSleep and SleePyCo report) and the mean ± std of per-fold metrics
(every fold counts once). They differ when folds differ in size or difficulty.
"""
from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, f1_score

from utils import STAGES

LABELS = np.arange(len(STAGES))
SCALARS = ("accuracy", "macro_f1", "kappa")


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Accuracy, macro-F1, Cohen's kappa, per-class F1 and confusion matrices of (n,) int labels.

    Macro-F1 averages over the stages present in y_true or y_pred (scikit-learn's default), so a
    test subject without N3 is not charged a zero for it; a stage absent from both has per-class
    F1 None (NaN during computation).
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if len(y_true) == 0:
        raise ValueError("no predictions to score")
    per_class = f1_score(y_true, y_pred, labels=LABELS, average=None, zero_division=np.nan)
    counts = confusion_matrix(y_true, y_pred, labels=LABELS)
    row_sums = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, row_sums, out=np.zeros(counts.shape), where=row_sums > 0)
    return {
        "n_epochs": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "kappa": _finite_or_none(cohen_kappa_score(y_true, y_pred, labels=LABELS)),
        "per_class_f1": {stage: _finite_or_none(f) for stage, f in zip(STAGES, per_class)},
        "confusion": counts.tolist(),
        "confusion_normalised": normalised.round(6).tolist(),
    }


def fold_mean_std(per_fold: list[dict]) -> tuple[dict, dict]:
    """Mean and (population) std over folds of the scalar metrics and per-class F1, ignoring None."""

    def stats(values: list) -> tuple[float | None, float | None]:
        finite = np.array([v for v in values if v is not None], dtype=float)
        if finite.size == 0:
            return None, None
        return float(finite.mean()), float(finite.std())

    mean, std = {}, {}
    for key in SCALARS:
        mean[key], std[key] = stats([m[key] for m in per_fold])
    mean["per_class_f1"], std["per_class_f1"] = {}, {}
    for stage in STAGES:
        mean["per_class_f1"][stage], std["per_class_f1"][stage] = stats([m["per_class_f1"][stage] for m in per_fold])
    return mean, std


def pooled_and_per_fold(folds: dict[int, tuple[np.ndarray, np.ndarray]]) -> dict:
    """{fold: (y_true, y_pred)} -> {"pooled", "fold_mean", "fold_std", "per_fold": {fold: metrics}}."""
    per_fold = {fold: classification_metrics(*folds[fold]) for fold in sorted(folds)}
    y_true = np.concatenate([folds[f][0] for f in sorted(folds)])
    y_pred = np.concatenate([folds[f][1] for f in sorted(folds)])
    mean, std = fold_mean_std(list(per_fold.values()))
    return {"pooled": classification_metrics(y_true, y_pred), "fold_mean": mean, "fold_std": std, "per_fold": per_fold}


def _finite_or_none(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None
