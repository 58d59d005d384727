"""Run outputs: per-fold predictions, aggregated metrics and plots, and the Key Results table.

    results/<run>/predictions_fold-01.npz   y_true, y_pred, subject, night of the fold's test epochs + meta (JSON)
    results/<run>/metrics.json              pooled + fold mean/std + per-fold metrics, classifier, label fraction;
                                            n_epochs counts 30-s test epochs, best_epoch/epochs_trained probe passes
    results/<run>/checkpoint_fold-01.json   path and SHA-256 of the checkpoint the fold's predictions came from
    results/<run>/per_fold.csv              one row per fold
    results/<run>/confusion.png             pooled confusion matrix, counts and row-normalised
    results/<run>/hypnogram.png             true vs predicted stages of one test night
    results/summary.md, summary.csv         every results/*/metrics.json as one table (--summarize)

<run> is `results_dir(config)`: the experiment name, plus `_mlp-probe` for the MLP probe and
`_labels-F` for a label fraction F < 1, so runs with different classifiers never mix their folds.
Predictions are saved per fold, so folds probed in separate invocations pool correctly. A fold whose
checkpoint has changed since it was probed is listed in metrics.json's `stale_folds` (re-run the probe).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from probing.metrics import classification_metrics, pooled_and_per_fold
from utils import STAGES, InputError, atomic_write_bytes, file_sha256, fold_name

RESULTS_ROOT = Path("results")
# Fields every fold of one run must share (a stale file from another configuration is refused).
RUN_FIELDS = ("exp_name", "paradigm", "architecture", "classifier", "label_fraction", "dataset", "num_folds")
PARADIGM_ORDER = ("CRL", "MP", "Hybrid", "Supervised", "Random init", "Band power")


def results_dir(config: dict) -> Path:
    """results/<exp_name>[_mlp-probe | _context-probe][_labels-F]; a supervised model is scored by its own head."""
    name = config["exp_name"]
    if config["ssl"]["type"] != "Supervised":
        if config["probe"]["type"] not in ("linear", "mlp", "context"):
            raise ValueError(f"probe.type {config['probe']['type']!r}: one folder per probe; pass "
                             "probing.probe.with_probe(config, 'linear', 'mlp' or 'context')")
        if config["probe"]["type"] != "linear":
            name += f"_{config['probe']['type']}-probe"
        if config["probe"]["label_fraction"] < 1:
            name += f"_labels-{config['probe']['label_fraction']:g}"
    return RESULTS_ROOT / name


def run_meta(config: dict, paradigm: str, architecture: str, classifier: str, label_fraction: float) -> dict:
    """What produced a run's predictions; stored with every fold and in metrics.json."""
    return {
        "exp_name": config["exp_name"],
        "paradigm": paradigm,
        "architecture": architecture,
        "classifier": classifier,
        "label_fraction": float(label_fraction),
        "dataset": config["data"]["dataset"],
        "num_folds": config["data"]["num_folds"],
    }


def describe(scores: dict) -> str:
    """One line: accuracy, macro-F1 and Cohen's kappa of a metrics dict."""
    kappa = "n/a" if scores["kappa"] is None else f"{scores['kappa']:.3f}"
    return f"accuracy {100 * scores['accuracy']:.1f} %, macro-F1 {scores['macro_f1']:.3f}, kappa {kappa}"


# ----------------------------------------------------------------------------- per-fold predictions
def save_fold_predictions(out_dir: Path, fold: int, test, y_pred: np.ndarray, meta: dict) -> dict:
    """Write predictions_fold-KK.npz for a test Split (x, y, subject, night); return the fold's metrics."""
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_pred.shape != test.y.shape:
        raise ValueError(f"fold {fold}: {y_pred.shape} predictions for {test.y.shape} test labels")
    meta = {**meta, "fold": int(fold)}
    buffer = io.BytesIO()
    np.savez(buffer, y_true=test.y.astype(np.int64), y_pred=y_pred, subject=test.subject, night=test.night,
             meta=np.array(json.dumps(meta)))
    atomic_write_bytes(Path(out_dir) / f"predictions_{fold_name(fold)}.npz", buffer.getvalue())
    return {**meta, **classification_metrics(test.y, y_pred)}


def load_fold_predictions(out_dir: Path) -> dict[int, dict]:
    """{fold: {"y_true", "y_pred", "subject", "night", "meta"}} of every predictions file in out_dir."""
    folds = {}
    for path in sorted(Path(out_dir).glob("predictions_fold-*.npz")):
        with np.load(path, allow_pickle=False) as npz:
            entry = {key: npz[key] for key in ("y_true", "y_pred", "subject", "night")}
            entry["meta"] = json.loads(str(npz["meta"]))
        entry["path"] = path
        folds[entry["meta"]["fold"]] = entry
    if not folds:
        raise FileNotFoundError(f"no predictions_fold-*.npz in {out_dir}: run the probe on at least one fold first")
    first = folds[min(folds)]
    for fold, entry in folds.items():
        differing = [k for k in RUN_FIELDS if entry["meta"].get(k) != first["meta"].get(k)]
        if differing:
            raise InputError(
                f"{entry['path']} differs from {first['path']} in {differing} "
                f"({[entry['meta'].get(k) for k in differing]} vs {[first['meta'].get(k) for k in differing]}): "
                "delete the stale predictions file(s) and re-run those folds"
            )
    return folds


def record_checkpoint(out_dir: Path, fold: int, ckpt_path: Path) -> None:
    """results/<run>/checkpoint_fold-KK.json: which checkpoint (path, SHA-256) the fold's predictions came from."""
    record = {"checkpoint": str(ckpt_path), "sha256": file_sha256(Path(ckpt_path))}
    atomic_write_bytes(Path(out_dir) / f"checkpoint_{fold_name(fold)}.json", json.dumps(record).encode())


def stale_folds(out_dir: Path, folds) -> list[int]:
    """Folds whose recorded checkpoint has been replaced (another SHA-256) or removed since they were probed."""
    stale = []
    for fold in folds:
        path = Path(out_dir) / f"checkpoint_{fold_name(fold)}.json"
        if path.is_file():
            record = json.loads(path.read_text())
            ckpt = Path(record["checkpoint"])
            if not ckpt.is_file() or file_sha256(ckpt) != record["sha256"]:
                stale.append(fold)
    return stale


# ----------------------------------------------------------------------------- aggregation
def write_results(config: dict, out_dir: Path | None = None) -> dict:
    """Aggregate every fold present in results_dir(config) (or out_dir); write metrics, CSV and plots."""
    out_dir = Path(out_dir) if out_dir is not None else results_dir(config)
    folds = load_fold_predictions(out_dir)
    scores = pooled_and_per_fold({f: (e["y_true"], e["y_pred"]) for f, e in folds.items()})
    per_fold = [{**folds[f]["meta"], **scores["per_fold"][f]} for f in sorted(folds)]
    metrics = {
        "run": out_dir.name,
        **{k: folds[min(folds)]["meta"][k] for k in RUN_FIELDS},
        "probe": folds[min(folds)]["meta"].get("probe"),
        "n_folds": len(folds),
        "folds": sorted(folds),
        "stale_folds": stale_folds(out_dir, sorted(folds)),
        "n_epochs": scores["pooled"]["n_epochs"],
        "pooled": scores["pooled"],
        "fold_mean": scores["fold_mean"],
        "fold_std": scores["fold_std"],
        "per_fold": per_fold,
    }
    atomic_write_bytes(out_dir / "metrics.json", json.dumps(metrics, indent=2).encode())
    atomic_write_bytes(out_dir / "per_fold.csv", _per_fold_csv(per_fold).encode())
    atomic_write_bytes(out_dir / "confusion.png", plot_confusion(scores["pooled"], metrics["classifier"]))
    first = folds[min(folds)]
    night = (first["subject"] == first["subject"][0]) & (first["night"] == first["night"][0])
    title = f"subject {first['subject'][0]}, night {first['night'][0]} (test, fold {min(folds)})"
    atomic_write_bytes(out_dir / "hypnogram.png", plot_hypnogram(first["y_true"][night], first["y_pred"][night], title))
    return metrics


def _per_fold_csv(per_fold: list[dict]) -> str:
    columns = ["fold", "n_epochs", "n_train_labels", "accuracy", "macro_f1", "kappa"]
    columns += [f"f1_{s}" for s in STAGES] + ["best_epoch", "epochs_trained"]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore")
    writer.writeheader()
    for row in per_fold:
        writer.writerow({**row, **{f"f1_{s}": row["per_class_f1"][s] for s in STAGES}})
    return buffer.getvalue()


# ----------------------------------------------------------------------------- plots
def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    return buffer.getvalue()


def plot_confusion(pooled: dict, classifier: str) -> bytes:
    """Two heatmaps of the pooled confusion matrix: counts and row-normalised (recall per stage)."""
    counts, normalised = np.array(pooled["confusion"]), np.array(pooled["confusion_normalised"])
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    for ax, matrix, title, fmt, vmax in zip(fig.subplots(1, 2), (counts, normalised), ("counts", "row-normalised"),
                                            ("{:d}", "{:.2f}"), (None, 1.0)):
        image = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=vmax)
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        threshold = matrix.max() / 2 if matrix.max() > 0 else 1
        for (i, j), value in np.ndenumerate(matrix):
            ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=8,
                    color="white" if value > threshold else "black")
        ax.set(xticks=range(len(STAGES)), yticks=range(len(STAGES)), xticklabels=STAGES, yticklabels=STAGES,
               xlabel="predicted", ylabel="true", title=title)
    fig.suptitle(f"{classifier}: pooled test predictions, accuracy {pooled['accuracy']:.3f}, "
                 f"macro-F1 {pooled['macro_f1']:.3f}, n={pooled['n_epochs']}")
    return _png(fig)


HYPNOGRAM_ORDER = ("W", "REM", "N1", "N2", "N3")  # top to bottom, as clinicians draw it


def plot_hypnogram(y_true: np.ndarray | None, y_pred: np.ndarray, title: str, epoch_s: float = 30.0) -> bytes:
    """True and predicted stages of one night as step plots, W at the top and N3 at the bottom.

    Without y_true only the prediction is drawn; true labels < 0 (unscored) are left blank and not scored.
    """
    level = np.array([HYPNOGRAM_ORDER.index(s) for s in STAGES], dtype=float)  # label -> row on the y-axis
    hours = np.arange(len(y_pred) + 1) * epoch_s / 3600
    panels = [(y_pred, "predicted", "tab:blue")] if y_true is None else [(y_true, "true", "black"),
                                                                          (y_pred, "predicted", "tab:blue")]
    fig = Figure(figsize=(12, 2.25 * len(panels)))
    axes = np.atleast_1d(fig.subplots(len(panels), 1, sharex=True))
    for ax, (labels, name, color) in zip(axes, panels):
        rows = np.where(labels >= 0, level[np.maximum(labels, 0)], np.nan)
        ax.step(hours, np.append(rows, rows[-1]), where="post", color=color, linewidth=1)
        ax.set(yticks=range(len(HYPNOGRAM_ORDER)), yticklabels=HYPNOGRAM_ORDER, ylim=(len(HYPNOGRAM_ORDER) - 0.5, -0.5),
               ylabel=name)
    axes[-1].set_xlabel("time (h)")
    if y_true is None:
        fig.suptitle(f"{title}: {len(y_pred)} epochs")
    else:
        scored = y_true >= 0
        fig.suptitle(f"{title}: accuracy {np.mean(y_true[scored] == y_pred[scored]):.3f} over {scored.sum()} scored epochs")
    return _png(fig)


# ----------------------------------------------------------------------------- Key Results table
def write_summary(results_root: Path = RESULTS_ROOT) -> tuple[Path, Path]:
    """Collect results/*/metrics.json into results/summary.md (Markdown) and results/summary.csv."""
    results_root = Path(results_root)
    runs = [json.loads(p.read_text()) for p in sorted(results_root.glob("*/metrics.json"))]
    if not runs:
        raise FileNotFoundError(f"no {results_root}/*/metrics.json found: run classifier_training.py first")
    rank = {name: i for i, name in enumerate(PARADIGM_ORDER)}
    runs.sort(key=lambda r: (rank.get(r["paradigm"], len(rank)), r["architecture"], -r["label_fraction"],
                             r["classifier"]))
    md_path, csv_path = results_root / "summary.md", results_root / "summary.csv"
    atomic_write_bytes(md_path, _summary_markdown(runs).encode())
    atomic_write_bytes(csv_path, _summary_csv(runs).encode())
    return md_path, csv_path


def _summary_markdown(runs: list[dict]) -> str:
    n_folds = sorted({r["n_folds"] for r in runs})
    folds = f"{n_folds[0]}" if len(n_folds) == 1 else f"{n_folds[0]}-{n_folds[-1]} (see Folds)"
    probes = sorted({r["classifier"] for r in runs if r["paradigm"] in ("CRL", "MP", "Hybrid")})
    datasets = ", ".join(sorted({r["dataset"] for r in runs}))
    lines = [
        "**Key results.** Sleep staging on " + datasets + ", single-channel Fpz-Cz, subject-wise folds. "
        f"Metrics on the test predictions pooled over {folds} fold(s); per-fold mean ± std in summary.csv. "
        f"Self-supervised encoders are frozen and scored by: {', '.join(probes) or 'n/a'}. "
        "Baselines: Supervised (same encoder trained end to end with labels), Random init (the same probe on a "
        "randomly initialised frozen encoder), Band power (logistic regression on Welch band powers).",
        "",
        "| Run | Paradigm | Architecture | Classifier | Probe | Labels | Folds | Accuracy (%) | Macro-F1 | Cohen's κ |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        p = r["pooled"]
        kappa = "n/a" if p["kappa"] is None else f"{p['kappa']:.3f}"
        lines.append(f"| {r['run']} | {r['paradigm']} | {r['architecture']} | {r['classifier']} | {r.get('probe') or '—'} | "
                     f"{100 * r['label_fraction']:g}% | {folds_cell(r)} | {100 * p['accuracy']:.1f} | "
                     f"{p['macro_f1']:.3f} | {kappa} |")
    return "\n".join(lines) + "\n"


def folds_cell(run: dict) -> str:
    """'10' when every fold was scored, else which ones: '1, 3 of 10' (the count when the list is absent)."""
    if run["n_folds"] == run["num_folds"]:
        return str(run["n_folds"])
    scored = ", ".join(map(str, run["folds"])) if run.get("folds") else run["n_folds"]
    return f"{scored} of {run['num_folds']}"


def _summary_csv(runs: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    scores = [(m, kind) for m in ("accuracy", "macro_f1", "kappa") for kind in ("pooled", "fold_mean", "fold_std")]
    run_columns = ["run", "paradigm", "architecture", "classifier", "probe", "label_fraction", "dataset", "n_folds",
                   "num_folds", "folds", "n_epochs"]
    writer.writerow(run_columns + [f"{m}_{kind}" for m, kind in scores])
    for r in runs:
        cells = {**r, "folds": " ".join(map(str, r.get("folds") or [])), "probe": r.get("probe") or ""}
        writer.writerow([cells[c] for c in run_columns] + [r[kind][m] for m, kind in scores])
    return buffer.getvalue()
