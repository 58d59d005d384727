"""Evaluate the latent space of a pretrained run, and compare runs.

The training engine dumps the test-set embeddings of every fold to
checkpoints/<exp_name>/embeddings_fold-XX.pt. Each fold has its own encoder, hence its own latent
space, so every fold is evaluated on its own (metrics, three 2-D maps) and the run's value of a metric
is the mean over folds (with the sample std and every fold's value). Written to
results/<exp_name>/latent/: metrics.json, metrics.csv and maps.png (one row of maps per fold).

Each evaluated fold is also stored in results/<exp_name>/latent/folds/fold-XX.npz with its provenance
(the embeddings file and its SHA-256, the checkpoint that encoded them and that checkpoint's SHA-256 as
pretraining recorded them in the embeddings file, the settings), and the report is rebuilt from every
stored fold that is still current: evaluating folds one at a time, or in parallel jobs, adds up to one
report. A stored fold whose embeddings file changed (retrained run), whose checkpoint was replaced, or
that used other settings is left out, with a message; embeddings whose checkpoint was replaced since they
were made are refused. `summarize` gathers every results/*/latent/metrics.json into one table and one
comparison figure, and flags the folds whose embeddings or checkpoint changed since.
"""
from __future__ import annotations

import csv
import io
import json
import re
import time
import zipfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from latent_space_evaluation.metrics import BETTER, SEED_NAME, Metric, definition, latent_metrics, map_metrics
from latent_space_evaluation.plotter import plot_comparison, plot_maps
from latent_space_evaluation.reducers import REDUCERS, stratified_subsample
from utils import STAGES, InputError, atomic_write_bytes, embeddings_file_name, file_sha256, fold_name, safe_torch_load

MIN_POINTS = 30  # below this, k-means, t-SNE and trustworthiness (k = 10) are meaningless
TRUSTWORTHINESS_NEIGHBORS = 10
READ_ERRORS = (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile)  # a stored fold that cannot be read
SOURCE_KEYS = ("embeddings", "embeddings_sha256", "checkpoint", "checkpoint_sha256")  # a report's per-fold provenance
KEY_METRICS = (  # the columns of the comparison figure
    ("silhouette_labels", "latent"), ("davies_bouldin_labels", "latent"),
    ("adjusted_mutual_info_kmeans", "latent"), ("purity_kmeans", "latent"),
    ("compactness_separation_ratio", "latent"), ("uniformity", "latent"),
    ("trustworthiness", "latent->umap"), ("silhouette_labels", "umap"),
)


class EmbeddingsError(ValueError):
    """An embeddings file that cannot be evaluated; the message names the file and the key."""


@dataclass
class Embeddings:
    """Test-set embeddings of one fold: z (n, D) float32, stages (n,) int64 in 0..4; the checkpoint that encoded
    them and its SHA-256 when the file records them (pretraining does)."""

    z: np.ndarray
    stages: np.ndarray
    fold: int
    exp_name: str
    checkpoint: str | None = None
    checkpoint_sha256: str | None = None


@dataclass
class FoldEvaluation:
    """Metrics of one fold, its 2-D maps (map_points, 2) and the stages of the mapped epochs."""

    fold: int
    n_points: int
    metrics: list[Metric]
    maps: dict[str, np.ndarray]
    map_stages: np.ndarray
    timings: dict[str, float]

    def save(self, path: Path, provenance: dict) -> None:
        """Write this evaluation and its `provenance` (JSON-able) to one .npz file, atomically."""
        meta = {"fold": self.fold, "n_points": self.n_points, "metrics": [asdict(m) for m in self.metrics],
                "maps": list(self.maps), "timings": self.timings, "provenance": provenance}
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.array(json.dumps(meta)), stages=self.map_stages,
                 **{f"map_{name}": points for name, points in self.maps.items()})
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path) -> tuple[FoldEvaluation, dict]:
        """(evaluation, provenance) from a file written by `save`."""
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            maps = {name: data[f"map_{name}"] for name in meta["maps"]}
            evaluation = cls(meta["fold"], meta["n_points"], [Metric(**m) for m in meta["metrics"]], maps,
                             data["stages"], meta["timings"])
        return evaluation, meta["provenance"]


# ----------------------------------------------------------------------------- finding and loading
def embeddings_path(exp_name: str, fold: int, checkpoints_dir: str | Path = "checkpoints") -> Path:
    return Path(checkpoints_dir) / exp_name / embeddings_file_name(fold)


def find_embeddings(exp_name: str, fold: int | None = None, checkpoints_dir: str | Path = "checkpoints",
                    create_hint: str = "") -> list[Path]:
    """The embedding files of a run (every fold, or `fold`); FileNotFoundError naming the expected path."""
    hint = f"\n  create them by pretraining: {create_hint}" if create_hint else ""
    if fold is not None:
        path = embeddings_path(exp_name, fold, checkpoints_dir)
        if not path.is_file():
            raise FileNotFoundError(f"no test embeddings of fold {fold} of run '{exp_name}': expected {path}{hint}")
        return [path]
    paths = sorted((Path(checkpoints_dir) / exp_name).glob("embeddings_fold-[0-9][0-9].pt"))
    if not paths:
        raise FileNotFoundError(f"no test embeddings of run '{exp_name}': expected "
                                f"{embeddings_path(exp_name, 1, checkpoints_dir)} (one file per fold){hint}")
    return paths


def load_embeddings(path: str | Path) -> Embeddings:
    """Read and check one embeddings file ({"z": (n, D) float, "y": (n,) int stages, "fold": int, optional
    "checkpoint", "checkpoint_sha256": str, ...}); a file named embeddings_fold-KK.pt must hold fold KK."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"embeddings file not found: {path}")
    try:
        data = safe_torch_load(path)  # plain data only: loading never runs code
    except InputError as exc:
        raise EmbeddingsError(str(exc)) from exc
    if not isinstance(data, dict) or not {"z", "y", "fold"} <= data.keys():
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise EmbeddingsError(f"{path}: expected a dict with keys 'z', 'y', 'fold', found {found}")
    z, stages = data["z"], data["y"]
    if not (torch.is_tensor(z) and z.ndim == 2 and z.is_floating_point()):
        raise EmbeddingsError(f"{path}: 'z' must be a 2-D float tensor (n, D), got {_describe(z)}")
    if not (torch.is_tensor(stages) and stages.ndim == 1 and not stages.is_floating_point()):
        raise EmbeddingsError(f"{path}: 'y' must be a 1-D integer tensor (n,), got {_describe(stages)}")
    if len(stages) != len(z):
        raise EmbeddingsError(f"{path}: 'z' has {len(z)} rows but 'y' has {len(stages)}")
    z, stages = z.float().numpy(), stages.long().numpy()
    if len(z) < MIN_POINTS:
        raise EmbeddingsError(f"{path}: {len(z)} epochs; at least {MIN_POINTS} are needed")
    if not np.isfinite(z).all():
        raise EmbeddingsError(f"{path}: 'z' holds {int((~np.isfinite(z)).sum())} NaN/inf values (diverged encoder?)")
    if stages.min() < 0 or stages.max() >= len(STAGES):
        raise EmbeddingsError(f"{path}: 'y' must hold stages 0..{len(STAGES) - 1} ({', '.join(STAGES)}), "
                              f"found {stages.min()}..{stages.max()}")
    if len(np.unique(stages)) < 2:
        raise EmbeddingsError(f"{path}: 'y' holds a single stage; cluster metrics need at least two")
    if not isinstance(data["fold"], int):
        raise EmbeddingsError(f"{path}: 'fold' must be an integer, got {data['fold']!r}")
    named = re.fullmatch(r"embeddings_fold-(\d+)\.pt", path.name)
    if named and int(named[1]) != data["fold"]:
        raise EmbeddingsError(f"{path}: holds the embeddings of fold {data['fold']} ('fold'), but its name says fold "
                              f"{int(named[1])}; re-create it by pretraining fold {int(named[1])}")
    record = {key: data.get(key) for key in ("checkpoint", "checkpoint_sha256")}
    if any(value is not None and not isinstance(value, str) for value in record.values()):
        raise EmbeddingsError(f"{path}: 'checkpoint' and 'checkpoint_sha256' must be strings")
    return Embeddings(z, stages, data["fold"], str(data.get("exp_name", path.parent.name)), **record)


def _describe(value) -> str:
    shape = tuple(value.shape) if hasattr(value, "shape") else ""
    return f"{type(value).__name__}{shape} {getattr(value, 'dtype', '')}".strip()


# ----------------------------------------------------------------------------- evaluation
@contextmanager
def _timed(timings: dict[str, float], stage: str):
    start = time.perf_counter()
    yield
    timings[stage] = time.perf_counter() - start


def evaluate_fold(embeddings: Embeddings, max_points: int = 10_000, map_points: int = 5_000,
                  seed: int = 0, self_comparison: bool = False) -> FoldEvaluation:
    """All metrics and the three 2-D maps of one fold.

    Quadratic latent metrics (silhouette, uniformity) use a stratified subsample of `max_points`
    epochs; the maps, and the metrics that compare them with the latent space, one of
    min(map_points, max_points) epochs; every other metric uses all epochs. `self_comparison` adds the
    reference's self-against-self trustworthiness and alignment (reference-compatible runs).
    """
    z, stages = embeddings.z, embeddings.stages
    timings: dict[str, float] = {}
    with _timed(timings, "latent_metrics"):
        metrics = latent_metrics(z, stages, stratified_subsample(stages, max_points, seed), seed)
    mapped = stratified_subsample(stages, min(map_points, max_points), seed)
    maps = {}
    for name, reduce in REDUCERS.items():
        with _timed(timings, name):
            maps[name] = reduce(z[mapped], seed)
    with _timed(timings, "map_metrics"):
        metrics += map_metrics(z[mapped], stages[mapped], maps, seed, TRUSTWORTHINESS_NEIGHBORS, self_comparison)
    return FoldEvaluation(embeddings.fold, len(z), metrics, maps, stages[mapped], timings)


def aggregate(evaluations: list[FoldEvaluation]) -> list[dict]:
    """One row per (metric, space): mean over folds, sample std (None for one fold), each fold's value."""
    per_metric: dict[tuple[str, str], list[tuple[int, Metric]]] = {}
    for evaluation in evaluations:
        for metric in evaluation.metrics:
            per_metric.setdefault((metric.name, metric.space), []).append((evaluation.fold, metric))
    rows = []
    for (name, space), folds in per_metric.items():
        values = np.array([metric.value for _, metric in folds])
        rows.append({
            "metric": name, "seed_name": SEED_NAME.get(name, ""), "definition": definition(name),
            "space": space, "better": BETTER[name],
            "value": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else None,
            "per_fold": [{"fold": fold, "value": metric.value, "points": metric.points} for fold, metric in folds],
        })
    return rows


def evaluate_run(paths: list[Path], exp_name: str, out_dir: str | Path, max_points: int = 10_000,
                 map_points: int = 5_000, seed: int = 0, progress=print, self_comparison: bool = False) -> dict:
    """Evaluate every embeddings file in `paths`, store each fold in out_dir/folds/, then write metrics.json,
    metrics.csv and maps.png to out_dir from every stored fold that is current (see `current_evaluations`)."""
    out_dir = Path(out_dir)
    settings = {"max_points": max_points, "map_points": min(map_points, max_points), "seed": seed,
                "self_comparison": self_comparison}
    loaded = []
    for path in paths:  # every file is checked before any is evaluated
        digest = file_sha256(path)  # before reading: a file rewritten during the evaluation counts as changed
        embeddings = load_embeddings(path)
        if changed := checkpoint_change(embeddings.checkpoint, embeddings.checkpoint_sha256):
            raise EmbeddingsError(f"{path}: not evaluated: {changed}; re-create the embeddings (run the fold's "
                                  "pretraining again with --resume) or restore the checkpoint")
        loaded.append((path, digest, embeddings))
    for path, digest, embeddings in loaded:
        start = time.perf_counter()
        evaluation = evaluate_fold(embeddings, max_points, map_points, seed, self_comparison)
        evaluation.save(out_dir / "folds" / f"{fold_name(embeddings.fold)}.npz",
                        {"embeddings": str(path), "embeddings_sha256": digest, "checkpoint": embeddings.checkpoint,
                         "checkpoint_sha256": embeddings.checkpoint_sha256, "embedding_dim": embeddings.z.shape[1],
                         **settings})
        progress(f"{fold_name(embeddings.fold)}: {len(embeddings.z)} epochs x {embeddings.z.shape[1]} dims "
                 f"evaluated in {time.perf_counter() - start:.1f} s")
    current = current_evaluations(out_dir / "folds", settings, progress)
    if not current:
        raise EmbeddingsError(f"no current fold evaluation in {out_dir / 'folds'} to report")
    evaluations = [evaluation for evaluation, _ in current]
    report = {
        "exp_name": exp_name,
        "folds": [e.fold for e in evaluations],
        "n_points": sum(e.n_points for e in evaluations),
        "n_points_per_fold": {fold_name(e.fold): e.n_points for e in evaluations},
        "embedding_dim": sorted({provenance["embedding_dim"] for _, provenance in current}),
        **settings,
        "n_clusters": len(STAGES),
        "trustworthiness_neighbors": TRUSTWORTHINESS_NEIGHBORS,
        "alignment": "Spearman correlation of Euclidean distances, up to 100000 random pairs; alignment_cosine_sq: "
                     "the reference's cosine of their squares, same pairs",
        "embeddings": [provenance["embeddings"] for _, provenance in current],
        "sources": [{"fold": evaluation.fold, **{key: provenance[key] for key in SOURCE_KEYS}}
                    for evaluation, provenance in current],
        "metrics": aggregate(evaluations),
        "timings_s": {fold_name(e.fold): {k: round(v, 2) for k, v in e.timings.items()} for e in evaluations},
    }
    write_report(report, evaluations, out_dir)
    return report


def current_evaluations(folds_dir: Path, settings: dict, progress=print) -> list[tuple[FoldEvaluation, dict]]:
    """(evaluation, provenance) of every fold stored in folds_dir, by fold number, that is current (see
    `stale_reason`) and whose settings equal `settings`; each other fold is left out with a message naming it
    and why."""
    current = []
    for path in folds_dir.glob("fold-*.npz"):
        try:
            evaluation, provenance = FoldEvaluation.load(path)
            used = {key: provenance.get(key) for key in settings}
            reason = stale_reason(provenance) or (
                None if used == settings else f"it used {_settings_text(used)}, this run {_settings_text(settings)}")
        except READ_ERRORS as exc:
            progress(f"{path.stem}: stored evaluation {path} cannot be read ({exc!r}); left out of the report")
            continue
        if reason:
            progress(f"{path.stem}: stored evaluation left out of the report: {reason}; "
                     f"re-evaluate it with --fold {evaluation.fold}")
        else:
            current.append((evaluation, provenance))
    return sorted(current, key=lambda pair: pair[0].fold)


def checkpoint_change(checkpoint: str | None, sha256: str | None) -> str | None:
    """'checkpoint X has changed since ...' when the recorded checkpoint exists with another SHA-256, else None
    (nothing recorded, or a checkpoint that is not here: embeddings shared without it stay usable)."""
    if checkpoint is None or sha256 is None or not Path(checkpoint).is_file() or file_sha256(checkpoint) == sha256:
        return None
    return f"checkpoint {checkpoint} has changed since the embeddings were made from it (another SHA-256)"


def stale_reason(provenance: dict) -> str | None:
    """Why a stored evaluation (its provenance, or a report's source) no longer describes its embeddings file and
    the checkpoint that encoded them, or None."""
    path = Path(provenance["embeddings"])
    if not path.is_file():
        return f"its embeddings file {path} is gone"
    if "embeddings_sha256" not in provenance:
        return f"it records no SHA-256 of {path} (stored by an earlier release)"
    if file_sha256(path) != provenance["embeddings_sha256"]:
        return f"its embeddings file {path} changed since (retrained?)"
    return checkpoint_change(provenance.get("checkpoint"), provenance.get("checkpoint_sha256"))


def embeddings_stale(path: Path) -> str | None:
    """Why the embeddings file at `path` cannot be evaluated (unreadable, or its checkpoint was replaced since
    they were made from it), or None."""
    try:
        embeddings = load_embeddings(path)
    except (FileNotFoundError, EmbeddingsError) as exc:
        return str(exc)
    return checkpoint_change(embeddings.checkpoint, embeddings.checkpoint_sha256)


def stored_fold_stale(path: Path) -> str | None:
    """Why the stored fold evaluation at `path` is not current (unreadable, or `stale_reason`), or None."""
    try:
        return stale_reason(FoldEvaluation.load(path)[1])
    except READ_ERRORS as exc:
        return f"{path} cannot be read ({exc!r})"


def stale_folds(report: dict) -> dict[int, str]:
    """{fold: why} of the folds of a metrics.json report that are no longer current (see `stale_reason`); a report
    of an earlier release, without per-fold sources, has every fold stale."""
    if "sources" not in report:
        return {fold: "the report records no checkpoint hashes (written by an earlier release)"
                for fold in report["folds"]}
    return {source["fold"]: reason for source in report["sources"] if (reason := stale_reason(source))}


def _settings_text(settings: dict) -> str:
    return ", ".join(f"{key}={value}" for key, value in settings.items())


def write_report(report: dict, evaluations: list[FoldEvaluation], out_dir: Path) -> None:
    atomic_write_bytes(out_dir / "metrics.json", json.dumps(report, indent=2).encode())
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["metric", "seed_name", "definition", "space", "value", "std", "better", "n_folds"])
    for row in report["metrics"]:
        writer.writerow([row["metric"], row["seed_name"], row["definition"], row["space"], _number(row["value"]),
                         _number(row["std"]), row["better"], len(row["per_fold"])])
    atomic_write_bytes(out_dir / "metrics.csv", buffer.getvalue().encode())
    rows = {}
    for e in evaluations:
        captions = {m.space.split("->")[1]: f"trustworthiness {m.value:.3f}"
                    for m in e.metrics if m.name == "trustworthiness"}
        rows[f"{fold_name(e.fold)} (n={e.n_points})"] = (e.maps, e.map_stages, captions)
    mapped = sorted({len(e.map_stages) for e in evaluations})  # map_points, or fewer on a small fold
    per_map = str(mapped[0]) if len(mapped) == 1 else f"{mapped[0]}-{mapped[-1]}"
    plot_maps(rows, out_dir / "maps.png", title=f"{report['exp_name']}: test-set embeddings, {per_map} epochs per map")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


# ----------------------------------------------------------------------------- comparing runs
def summarize(results_dir: str | Path = "results", progress=print) -> list[Path]:
    """Gather results/*/latent/metrics.json into latent_summary.{md,csv,png} in results_dir; a fold whose
    embeddings or checkpoint changed since it was evaluated is marked "(stale)" and named in one line each."""
    results_dir = Path(results_dir)
    files = sorted(results_dir.glob("*/latent/metrics.json"))
    if not files:
        raise FileNotFoundError(f"nothing to summarise: no {results_dir}/*/latent/metrics.json; evaluate a run "
                                f"first: python latent_space_evaluator.py --config configs/<config>.json")
    reports = [json.loads(f.read_text()) for f in files]
    stale = {}
    for path, report in zip(files, reports):
        stale[report["exp_name"]] = stale_folds(report)
        for fold, reason in stale[report["exp_name"]].items():
            progress(f"warning: {path}: fold {fold} is stale: {reason}; re-evaluate it with "
                     f"python latent_space_evaluator.py --config <config> --fold {fold}")
    runs = [r["exp_name"] for r in reports]
    table: dict[tuple[str, str], dict[str, tuple[float, float | None]]] = {}
    for report in reports:
        for row in report["metrics"]:
            table.setdefault((row["metric"], row["space"]), {})[report["exp_name"]] = (row["value"], row["std"])

    folds = [", ".join(f"{f} (stale)" if f in stale[r["exp_name"]] else str(f) for f in r["folds"]) for r in reports]
    md = ["| seed metric | metric | definition | space | better | " + " | ".join(runs) + " |",
          "|---|---|---|---|---|" + "---:|" * len(runs),
          "| | folds evaluated | | | | " + " | ".join(folds) + " |"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["seed_name", "metric", "definition", "space", "better"]
                    + [c for run in runs for c in (run, f"{run} std")])
    writer.writerow(["", "n_folds", "", "", ""] + [c for r in reports for c in (len(r["folds"]), "")])
    writer.writerow(["", "stale_folds", "", "", ""] + [c for run in runs for c in (" ".join(map(str, stale[run])), "")])
    for (name, space), values in table.items():
        better = BETTER[name]
        means = {run: mean for run, (mean, _) in values.items()}
        best = (max if better == "higher" else min)(means.values())
        cells = []
        for run in runs:
            if run not in values:
                cells.append("")
                continue
            mean, std = values[run]
            text = f"{mean:.3f}" + ("" if std is None else f" ± {std:.3f}")
            cells.append(f"**{text}**" if len(means) > 1 and mean == best else text)
        labels = [SEED_NAME.get(name, ""), name, definition(name), space, better]
        md.append("| " + " | ".join(labels + cells) + " |")
        writer.writerow(labels + [_number(values.get(run, (None, None))[i]) for run in runs for i in (0, 1)])
    note = (f"\nMean ± sample std over folds; best per row in bold; a fold marked (stale) was evaluated on embeddings "
            f"or a checkpoint that have changed since. Definition \"reference\": as the reference "
            f"implementation defined the seed metric (latent_space_evaluation/metrics.py); \"self against self\": "
            f"its trustworthiness and alignment of the embeddings with themselves (1 by construction). Sources: "
            f"{', '.join(str(f) for f in files)}.\n")
    paths = [results_dir / "latent_summary.md", results_dir / "latent_summary.csv", results_dir / "latent_summary.png"]
    atomic_write_bytes(paths[0], ("# Latent-space metrics per config\n\n" + "\n".join(md) + "\n" + note).encode())
    atomic_write_bytes(paths[1], buffer.getvalue().encode())
    plot_comparison({key: table[key] for key in KEY_METRICS if key in table}, runs, paths[2])
    return paths
