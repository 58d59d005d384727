"""The whole Key Results table in one command: pretraining, both probes and the latent evaluation of every
(config, fold, seed) run, resumable, then results/key_results.md and .csv from whatever is complete.

    python benchmark.py --configs configs/*.json [--folds 1|all|1,2] [--gpu 0]
    python benchmark.py --configs configs/*.json --seeds 42,1,2                 # three seeds of every run
    python benchmark.py --configs configs/*.json --folds all --gpus 0,1,2,3     # one run per local GPU at a time
    python benchmark.py --configs configs/*.json --folds all --gpus 0,0,0,0     # four runs on GPU 0 (with MPS)
    python benchmark.py --configs configs/*.json --folds all --shard 3/8        # shard 3 of 8 (SLURM job array)
    python benchmark.py --configs configs/*.json --set trainer.max_epochs=3      # --set goes to every run
    python benchmark.py --configs configs/*.json --tables-only [--readme]       # only the tables (and README.md)

A config configs/X.json with a reference-compatible twin configs/reference/X.json (same file name) brings its
twin along, and the second table ("what the fixes change") compares the two. Each run calls the existing
scripts: train_<paradigm>.py --fold K (--resume when a partial run is found), classifier_training.py for each
probe type whose results are missing, latent_space_evaluator.py --embeddings
checkpoints/<exp>/embeddings_fold-0K.pt (--self-comparison for reference configs). A step is complete when its
output exists and still describes the fold's best checkpoint:
    pretraining   checkpoints/<exp>/embeddings_fold-0K.pt, made from the checkpoint as it is now (SHA-256)
    probe P       results/<exp>[_P-probe]/predictions_fold-0K.npz      (P = linear, mlp), newer than the
                  embeddings and probed with the checkpoint as it is now
    latent        results/<exp>/latent/folds/fold-0K.npz, evaluated on the embeddings and checkpoint as they
                  are now (latent_space_evaluation.evaluate.stale_reason)
so a rerun, or another shard, skips what is done and redoes what a replaced checkpoint made stale. Each
run's output goes to logs/benchmark/<exp>_fold-0K.log.
--seeds K,L,... (default: each config's own trainer.seed) makes each seed its own run of every (config, fold):
the config's own seed keeps the plain exp_name, any other seed K runs as <exp_name>_seed-K with --set
exp_name=<exp_name>_seed-K --set trainer.seed=K (own checkpoints/, results/ and log). What the seed varies:
pretraining's initialisation, batch order, augmentations, masks and validation randomness, and the probes'
initialisation, batch order and label subset (trainer.seed + fold); the folds and the latent evaluation's
subsampling, k-means and maps (its own --seed, 0) stay the same. The tables show the mean ± sample std over
every complete (fold, seed) run of a config.
--shard K/N takes every N-th run (1-based K) of the full (config, fold, seed) list and skips the complete
ones: the split does not depend on what other shards have finished. Paths are relative to the working
directory.
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import os
import queue
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import NamedTuple

import numpy as np
from tqdm import tqdm

from latent_space_evaluation.metrics import SEED_NAMES, definition
from latent_space_evaluation.evaluate import EmbeddingsError, embeddings_stale, evaluate_run, stored_fold_stale
from probing.results import PARADIGM_ORDER, RESULTS_ROOT, results_dir, stale_folds, write_results
from training.checkpoint import best_checkpoint_path, checkpoint_dir, embeddings_path
from training.config import load_config
from training.paradigms import SCRIPTS
from utils import ConfigError, InputError, atomic_write_bytes, fold_name, memoised_hashes

REPO = Path(__file__).resolve().parent
PROBES = ("linear", "mlp")  # run for every config
CPU_STEPS = ("latent",)  # steps that need no GPU: on CUDA ids they run after the run has handed its GPU on
SHOWN_PROBES = PROBES + ("context",)  # shown when their results exist (the context probe runs elsewhere)
SEED_RESULTS = REPO / "benchmarks" / "seed_key_results.json"
LOG_DIR = Path("logs") / "benchmark"
README_START, README_END = "<!-- key-results:start -->", "<!-- key-results:end -->"
LATENT_SPACES = ("latent", "latent->umap", "latent->latent")  # where the reference computed; the corrected map
SCORES = (("accuracy", "Accuracy %", 100, 1), ("macro_f1", "Macro-F1 %", 100, 1), ("kappa", "Cohen's κ", 1, 3))


@dataclass(frozen=True)
class Config:
    """One config file: its validated content, and whether it is a reference-compatible twin."""

    path: Path
    config: dict
    reference: bool
    sets: tuple[str, ...] = ()  # the --set values that make this seed's run of the file (see at_seed)

    @property
    def exp_name(self) -> str:
        return self.config["exp_name"]

    @property
    def seed(self) -> int:
        return self.config["trainer"]["seed"]

    @property
    def paradigm(self) -> str:
        return self.config["ssl"]["type"]

    @property
    def architecture(self) -> str:
        return self.config["backbone"]["type"]

    def with_probe(self, probe: str) -> dict:
        return {**self.config, "probe": {**self.config["probe"], "type": probe}}

    def at_seed(self, seed: int) -> Config:
        """This config's run at trainer.seed = seed: itself for its own seed, else the run <exp_name>_seed-K."""
        if seed == self.seed:
            return self
        name = f"{self.exp_name}_seed-{seed}"
        config = {**self.config, "exp_name": name, "trainer": {**self.config["trainer"], "seed": seed}}
        return Config(self.path, config, self.reference, (f"exp_name={name}", f"trainer.seed={seed}"))


@dataclass(frozen=True)
class Run:
    config: Config
    fold: int

    @property
    def name(self) -> str:
        return f"{self.config.exp_name} {fold_name(self.fold)}"


# ----------------------------------------------------------------------------- what exists
def twin_path(path: Path) -> Path:
    """configs/X.json -> configs/reference/X.json."""
    return path.parent / "reference" / path.name


def load_configs(paths: list[Path], overrides: list[str] = ()) -> list[Config]:
    """The given configs, each followed by its reference twin when one exists; one exp_name per config."""
    ordered: list[Path] = []
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"--configs: {path} not found")
        for candidate in (path, twin_path(path)):
            if candidate.is_file() and candidate.resolve() not in {p.resolve() for p in ordered}:
                ordered.append(candidate)
    configs = [Config(p, load_config(p, list(overrides)), p.parent.name == "reference") for p in ordered]
    seen: dict[str, Path] = {}
    for c in configs:
        if c.paradigm not in SCRIPTS:
            raise ConfigError([f"ssl.type: {c.path} is a {c.paradigm} config; the benchmark runs self-supervised "
                               f"configs ({', '.join(SCRIPTS)})"])
        if c.exp_name in seen:
            raise ConfigError([f"exp_name: {c.path} and {seen[c.exp_name]} both name their runs '{c.exp_name}'; "
                               "their results would mix"])
        seen[c.exp_name] = c.path
    return configs


def seed_variants(configs: list[Config], seeds: list[int] | None) -> dict[str, list[Config]]:
    """{exp_name: the config at each seed} (seeds None: its own trainer.seed only); one run name per run."""
    variants = {c.exp_name: [c.at_seed(s) for s in seeds] if seeds else [c] for c in configs}
    seen: dict[str, str] = {}
    for base, runs in variants.items():
        for run in runs:
            if run.exp_name in seen and seen[run.exp_name] != base:
                raise InputError(f"--seeds: the run '{run.exp_name}' of '{base}' has the name of a run of "
                                 f"'{seen[run.exp_name]}'; their results would mix")
            seen[run.exp_name] = base
    return variants


def plan(configs: list[Config], folds_of: dict[str, list[int]], variants: dict[str, list[Config]]) -> list[Run]:
    """The full run list, in (config, fold, seed) order."""
    return [Run(v, f) for c in configs for f in folds_of[c.exp_name] for v in variants[c.exp_name]]


def select_folds(spec: str, config: dict) -> list[int]:
    """--folds 'all' | 'K' | 'K,L,...' -> fold numbers within 1..data.num_folds."""
    n = config["data"]["num_folds"]
    if spec == "all":
        return list(range(1, n + 1))
    folds = [int(f) for f in spec.split(",") if f.strip().isdigit()]
    if len(folds) != len(spec.split(",")) or not all(1 <= f <= n for f in folds):
        raise ConfigError([f"--folds {spec}: expected 'all' or fold numbers in 1..{n} (data.num_folds)"])
    return folds


def probe_predictions(config: Config, probe: str, fold: int) -> Path:
    return results_dir(config.with_probe(probe)) / f"predictions_{fold_name(fold)}.npz"


def latent_fold_file(config: Config, fold: int) -> Path:
    return RESULTS_ROOT / config.exp_name / "latent" / "folds" / f"{fold_name(fold)}.npz"


def missing_steps(run: Run) -> list[str]:
    """The steps of a run whose output is absent or stale (see the module docstring). Embeddings made from a
    checkpoint that has been replaced since make every step missing: pretraining with --resume re-encodes."""
    embeddings = embeddings_path(run.config.config, run.fold)
    if not embeddings.is_file() or embeddings_stale(embeddings):
        return ["pretraining", *(f"probe {p}" for p in PROBES), "latent"]
    made = embeddings.stat().st_mtime_ns
    missing = []
    for probe in PROBES:
        path = probe_predictions(run.config, probe, run.fold)
        if not (path.is_file() and path.stat().st_mtime_ns >= made) or stale_folds(path.parent, [run.fold]):
            missing.append(f"probe {probe}")
    latent = latent_fold_file(run.config, run.fold)
    return missing + ([] if latent.is_file() and not stored_fold_stale(latent) else ["latent"])


# ----------------------------------------------------------------------------- running
def shard_of(runs: list[Run], k: int, n: int) -> list[Run]:
    """Shard k of n (1-based): every n-th run of the full list, starting with the k-th."""
    return runs[k - 1::n]


def step_command(run: Run, step: str, gpu: str, overrides: list[str]) -> list[str]:
    config, fold = run.config, str(run.fold)
    sets = [arg for value in (*overrides, *config.sets) for arg in ("--set", value)]
    if step == "pretraining":
        last = checkpoint_dir(config.config) / f"last_{fold_name(run.fold)}.pth"
        resume = ["--resume"] if last.is_file() or best_checkpoint_path(config.config, run.fold).is_file() else []
        return [SCRIPTS[config.paradigm], "--config", str(config.path), "--fold", fold, "--gpu", gpu, *resume, *sets]
    if step.startswith("probe "):
        return ["classifier_training.py", "--config", str(config.path), "--fold", fold, "--gpu", gpu,
                "--probe", step.split()[1], *sets]
    self_comparison = ["--self-comparison"] if config.reference else []  # the run name comes from the embeddings
    return ["latent_space_evaluator.py", "--embeddings", str(embeddings_path(config.config, run.fold)),
            *self_comparison]


def execute(run: Run, gpu: str, overrides: list[str], cpu_only: bool | None = None) -> str | None:
    """Run the missing steps of `run` on `gpu` ('auto', 'cpu' or a CUDA id): all of them, or with `cpu_only`
    True / False only those in / not in CPU_STEPS; output appended to its log. None when they are complete,
    else a one-line error naming the failed command and the log."""
    env = dict(os.environ)
    if gpu != "cpu" and gpu.isdigit():  # each job sees one GPU, as device 0
        env["CUDA_VISIBLE_DEVICES"], gpu = gpu, "0"
    log_path = LOG_DIR / f"{run.config.exp_name}_{fold_name(run.fold)}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    while steps := [s for s in missing_steps(run) if cpu_only is None or (s in CPU_STEPS) == cpu_only]:
        command = step_command(run, steps[0], gpu, overrides)
        with open(log_path, "a") as log:
            log.write(f"$ {' '.join(command)}\n")
            log.flush()
            code = subprocess.run([sys.executable, str(REPO / command[0]), *command[1:]], stdout=log,
                                  stderr=subprocess.STDOUT, env=env).returncode
        if code != 0:
            return f"{run.name}: {steps[0]} failed (exit {code}): {' '.join(command)}; see {log_path}"
        if steps[0] in missing_steps(run):
            return f"{run.name}: {steps[0]} ended without writing its output; see {log_path}"
    return None


def mps_warning(gpus: list[str], environ=os.environ) -> str | None:
    """A warning when a CUDA id is named more than once and no NVIDIA MPS control daemon is found (its pipe
    directory, CUDA_MPS_PIPE_DIRECTORY or /tmp/nvidia-mps, holds no `control`): without MPS the runs on one GPU
    share it by time slices and train no faster together than one alone (BENCHMARKS.md)."""
    shared = sorted({gpu for gpu in gpus if gpu.isdigit() and gpus.count(gpu) > 1})
    pipe = Path(environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"))
    if not shared or (pipe / "control").exists():
        return None
    return (f"warning: GPU {', '.join(shared)} named more than once, but no MPS daemon was found at {pipe}: the runs "
            "will take turns on it and gain nothing; start one first with `nvidia-cuda-mps-control -d`")


def run_all(runs: list[Run], gpus: list[str], overrides: list[str]) -> list[str]:
    """Execute runs, one per GPU at a time; the errors of the failed ones (the others complete). On CUDA ids a
    run hands its GPU to the next run before its latent evaluation, which needs only the CPU (about 10 % of a
    run's wall time on an H200, BENCHMARKS.md), so the GPUs do not wait for it."""
    free: queue.Queue[str] = queue.Queue()
    for gpu in gpus:
        free.put(gpu)
    overlap = all(gpu.isdigit() for gpu in gpus)

    def job(run: Run) -> str | None:
        gpu = free.get()
        try:
            error = execute(run, gpu, overrides, cpu_only=False if overlap else None)
        finally:
            free.put(gpu)
        if error or not overlap:
            return error
        return execute(run, "cpu", overrides, cpu_only=True)

    errors = []
    workers = 2 * len(gpus) if overlap else len(gpus)  # at most one latent evaluation beside each GPU's run
    with ThreadPoolExecutor(max_workers=workers) as pool, tqdm(total=len(runs), desc="runs", unit="run") as bar:
        for future in as_completed([pool.submit(job, run) for run in runs]):
            if error := future.result():
                errors.append(error)
                tqdm.write(f"error: {error}")
            bar.update()
    return errors


# ----------------------------------------------------------------------------- tables
def fold_numbers(paths) -> set[int]:
    """{K} of files named ..._fold-0K.npz or fold-0K.npz."""
    return {int(p.stem.rsplit("-", 1)[1]) for p in paths}


def refresh_reports(config: Config) -> None:
    """Re-aggregate a run's probe and latent reports when they lack a fold whose output is stored (two shards
    that finished folds of one config at the same moment: the later report may miss the other's fold)."""
    latent_dir = RESULTS_ROOT / config.exp_name / "latent"
    reports = [(results_dir(config.with_probe(p)), "predictions_fold-*.npz",
                partial(write_results, config.with_probe(p))) for p in PROBES]
    reports.append((latent_dir, "folds/fold-*.npz",
                    partial(evaluate_run, [], config.exp_name, latent_dir, self_comparison=config.reference)))
    for out_dir, pattern, rebuild in reports:
        stored, report = fold_numbers(out_dir.glob(pattern)), out_dir / "metrics.json"
        if stored and (not report.is_file() or set(json.loads(report.read_text())["folds"]) != stored):
            try:
                rebuild()
            except ValueError as exc:  # stale or foreign fold files: the report stays as it was
                print(f"warning: {report} not rebuilt: {exc}")


def fold_scores(config: Config, probe: str, folds: list[int]) -> dict[int, dict]:
    """{fold: {"accuracy", "macro_f1", "kappa"}} of the selected folds found in the probe's metrics.json."""
    path = results_dir(config.with_probe(probe)) / "metrics.json"
    if not path.is_file():
        return {}
    per_fold = json.loads(path.read_text())["per_fold"]
    return {row["fold"]: {key: row[key] for key, *_ in SCORES} for row in per_fold if row["fold"] in folds}


class Stat(NamedTuple):
    """A score over a config's complete (fold, seed) runs, in display units."""

    mean: float | None
    std: float | None  # sample std; None for fewer than two runs
    n: int


def stat(values: list[float], scale: float = 1) -> Stat:
    """Mean and sample std (ddof 1) of `values` times `scale`."""
    mean = scale * float(np.mean(values)) if values else None
    std = scale * float(np.std(values, ddof=1)) if len(values) > 1 else None
    return Stat(mean, std, len(values))


def summary(scores: list[dict]) -> dict[str, Stat]:
    """{score: Stat over the given runs' scores} ({"accuracy", "macro_f1", "kappa"} per run)."""
    return {key: stat([s[key] for s in scores if s[key] is not None], scale) for key, _, scale, _ in SCORES}


def cell(value: Stat, digits: int) -> str:
    if value.mean is None:
        return "–"
    return f"{value.mean:.{digits}f}" + ("" if value.std is None else f" ± {value.std:.{digits}f}")


def difference(fixed: Stat, compatible: Stat) -> tuple[float | None, float | None]:
    """(fixed − reference-compatible means, standard error of that difference when both sides have >= 2 runs)."""
    if fixed.mean is None or compatible.mean is None:
        return None, None
    spread = (float(np.sqrt(fixed.std ** 2 / fixed.n + compatible.std ** 2 / compatible.n))
              if fixed.n > 1 and compatible.n > 1 else None)
    return fixed.mean - compatible.mean, spread


def runs_text(done: list[int], n_folds: int) -> str:
    """The Folds cell from the complete folds of each seed: '1 of 2', '1 of 2 × 3 seeds' (each seed 1 of 2),
    '4 runs of 2 × 3 seeds' (seeds with different counts; 1 run)."""
    if len(done) == 1:
        return f"{done[0]} of {n_folds}"
    if len(set(done)) == 1:
        return f"{done[0]} of {n_folds} × {len(done)} seeds"
    return f"{sum(done)} run{'s' * (sum(done) != 1)} of {n_folds} × {len(done)} seeds"


def seed_figures() -> tuple[dict[tuple[str, str], dict], str]:
    data = json.loads(SEED_RESULTS.read_text())
    return {(r["paradigm"], r["architecture"]): r for r in data["results"]}, data["source"]


def table_order(config: Config) -> tuple:
    """The seed's row order: paradigm (CRL, MP, Hybrid), then architecture, fixed before reference-compatible."""
    return PARADIGM_ORDER.index(config.paradigm), config.architecture, config.reference


def build_tables(configs: list[Config], folds_of: dict[str, list[int]],
                 variants: dict[str, list[Config]]) -> tuple[str, list[dict]]:
    """key_results.md text and the CSV rows; each config's scores over the complete runs of its seed variants."""
    seed, seed_source = seed_figures()
    probes_shown = [p for p in SHOWN_PROBES if p in PROBES or any(
        fold_scores(v, p, folds_of[c.exp_name]) for c in configs for v in variants[c.exp_name])]
    n_folds = sorted({len(f) for f in folds_of.values()})
    seeds = sorted({tuple(v.seed for v in runs) for runs in variants.values()})
    several = max(len(s) for s in seeds) > 1
    if several:
        count = (f"Folds per config: {', '.join(map(str, n_folds))}, each at trainer.seed "
                 + "; ".join(", ".join(map(str, s)) for s in seeds)
                 + " (mean ± sample std over the complete (fold, seed) runs)")
    else:
        count = f"Folds per config: {', '.join(map(str, n_folds))}" + (
            " (mean ± sample std over folds)" if n_folds[-1] > 1 else "")
    md = ["# Key results", "",
          f"{count}. Accuracy and macro-F1 in %, "
          "Cohen's κ to 3 decimals, on each fold's test subjects; probes on the frozen encoder. Seed: the published "
          f"figures ({seed_source}); the seed's probe was an MLP reported as linear; – = not published here.", "",
          "| Model/Paradigm | Architecture | Config | Probe | Folds | Accuracy % | Macro-F1 % | Cohen's κ "
          "| Seed Accuracy % | Seed Macro-F1 % | Seed κ |",
          "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    rows, results = [], {}
    for c in configs:
        published = seed.get((c.paradigm, c.architecture), {})
        for probe in probes_shown:
            per_seed = [fold_scores(v, probe, folds_of[c.exp_name]) for v in variants[c.exp_name]]
            results[c.exp_name, probe] = summary([s for scores in per_seed for s in scores.values()])
            version = "reference-compatible" if c.reference else "fixed"
            folds = runs_text([len(scores) for scores in per_seed], len(folds_of[c.exp_name]))
            ours = [cell(results[c.exp_name, probe][k], d) for k, _, _, d in SCORES]
            theirs = ["–" if published.get(k) is None else f"{published[k]:.{d}f}" for k, _, _, d in SCORES]
            md.append(f"| {c.paradigm} | {c.architecture} | {version} | {probe} | {folds} | " + " | ".join(ours)
                      + " | " + " | ".join(theirs) + " |")
            row = {"table": "key_results", "exp_name": c.exp_name, "config": str(c.path), "version": version,
                   "paradigm": c.paradigm, "architecture": c.architecture, "probe": probe,
                   "runs_done": sum(map(len, per_seed)), "folds_selected": len(folds_of[c.exp_name]),
                   "trainer_seeds": " ".join(str(v.seed) for v in variants[c.exp_name])}
            for key, *_ in SCORES:
                row[key], row[f"{key}_std"], _ = results[c.exp_name, probe][key]
                row[f"seed_{key}"] = published.get(key)
            rows.append(row)

    spread = (" of the means; ± its standard error √(s²_fixed/n_fixed + s²_reference/n_reference), s the sample "
              "std over the n complete (fold, seed) runs of each side, where both sides have at least two runs")
    md += ["", "## What the fixes change", "",
           "Each config against its reference-compatible twin (configs/reference/, the reference's effective "
           "settings: its bugs switched back on), same probe; difference = fixed − reference-compatible"
           f"{spread if several or n_folds[-1] > 1 else ''}.", "",
           "| Model/Paradigm | Architecture | Probe | Reference-compatible Acc % / MF1 % / κ "
           "| Fixed Acc % / MF1 % / κ | Difference Acc / MF1 / κ |", "|---|---|---|---|---|---|"]
    twins = {c.path.name: c for c in configs if c.reference}
    if not any(not c.reference and c.path.name in twins for c in configs):
        md.append("| (no config given has a reference-compatible twin configs/reference/<same name>) | | | | | |")
    for c in (c for c in configs if not c.reference and c.path.name in twins):
        ref = twins[c.path.name]
        for probe in probes_shown:
            fixed, compatible = results[c.exp_name, probe], results[ref.exp_name, probe]
            delta = {k: difference(fixed[k], compatible[k]) for k, *_ in SCORES}
            line = [" / ".join(cell(v[k], d) for k, _, _, d in SCORES) for v in (compatible, fixed)]
            line.append(" / ".join("–" if delta[k][0] is None else f"{delta[k][0]:+.{d}f}"
                                   + ("" if delta[k][1] is None else f" ± {delta[k][1]:.{d}f}")
                                   for k, _, _, d in SCORES))
            md.append(f"| {c.paradigm} | {c.architecture} | {probe} | " + " | ".join(line) + " |")
            rows.append({"table": "what_the_fixes_change", "exp_name": c.exp_name, "config": str(c.path),
                         "reference_exp_name": ref.exp_name, "paradigm": c.paradigm, "architecture": c.architecture,
                         "probe": probe, **{f"{k}_reference": compatible[k].mean for k, *_ in SCORES},
                         **{f"{k}_fixed": fixed[k].mean for k, *_ in SCORES},
                         **{f"{k}_difference": delta[k][0] for k, *_ in SCORES},
                         **{f"{k}_difference_se": delta[k][1] for k, *_ in SCORES}})
    latent_md, latent_rows = latent_comparison([(twins[c.path.name], c) for c in configs
                                                if not c.reference and c.path.name in twins], variants)
    md += latent_md
    rows += latent_rows
    missing = [f"{Run(v, f).name}" + (f" (trainer.seed {v.seed})" if several else "") + f": {', '.join(steps)}"
               for c in configs for f in folds_of[c.exp_name] for v in variants[c.exp_name]
               if (steps := missing_steps(Run(v, f)))]
    md += ["", "## Missing runs", ""] + ([f"- {m}" for m in missing] or ["None: every selected run is complete."])
    return "\n".join(md) + "\n", rows


def latent_report(configs: list[Config]) -> tuple[dict[tuple[str, str], list[float]], dict[int, list[int]]]:
    """{(metric, space): the value of each fold} pooled over the latent reports (results/<exp>/latent/
    metrics.json) of a config's seed variants, and {seed: the folds its report covers}."""
    values: dict[tuple[str, str], list[float]] = {}
    covered = {}
    for config in configs:
        path = RESULTS_ROOT / config.exp_name / "latent" / "metrics.json"
        report = json.loads(path.read_text()) if path.is_file() else {"metrics": [], "folds": []}
        for row in report["metrics"]:
            values.setdefault((row["metric"], row["space"]), []).extend(f["value"] for f in row["per_fold"])
        covered[config.seed] = report["folds"]
    return values, covered


def covered_text(covered: dict[int, list[int]]) -> str:
    """'[1, 2]' for one seed, '[1] at trainer.seed 42, – at trainer.seed 1' for several."""
    if len(covered) == 1:
        return str(next(iter(covered.values())) or "–")
    return ", ".join(f"{folds or '–'} at trainer.seed {s}" for s, folds in covered.items())


def latent_comparison(pairs: list[tuple[Config, Config]],
                      variants: dict[str, list[Config]]) -> tuple[list[str], list[dict]]:
    """Markdown lines and CSV rows: the seed's latent metrics of each (reference-compatible, fixed) pair, both
    definitions, in the latent space and against the UMAP map; self-against-self values (reference-compatible
    runs only) labelled as such."""
    several = any(len(runs) > 1 for runs in variants.values())
    md = ["", "## Latent space: the seed's metrics, both definitions", "",
          "Mean ± std over the folds each run's latent report covers (results/<exp>/latent/metrics.json)"
          + (", pooled over the seeds' runs" if several else "") + ". "
          "Definition \"reference\": as the reference code defined the metric; \"self against self\": the "
          "reference's trustworthiness and alignment of the embeddings with themselves (1 by construction, shown "
          "for reference-compatible runs only)."]
    rows = []
    for ref, fixed in pairs:
        (ref_values, ref_folds), (fixed_values, fixed_folds) = (latent_report(variants[c.exp_name])
                                                                for c in (ref, fixed))
        md += ["", f"**{fixed.paradigm} {fixed.architecture}** (reference-compatible folds {covered_text(ref_folds)}"
               f"{'; ' if several else ', '}fixed folds {covered_text(fixed_folds)})", "",
               "| Seed metric | Metric | Definition | Space | Reference-compatible | Fixed | Difference |",
               "|---|---|---|---|---:|---:|---:|"]
        for seed_name, names in SEED_NAMES.items():
            for name in names:
                for space in LATENT_SPACES:
                    values = [stat(side.get((name, space), [])) for side in (ref_values, fixed_values)]
                    if values[0].mean is None and values[1].mean is None:
                        continue
                    texts = ["–" if v.mean is None else f"{v.mean:.4g}"
                             + ("" if v.std is None else f" ± {v.std:.2g}") for v in values]
                    delta = None if None in (values[0].mean, values[1].mean) else values[1].mean - values[0].mean
                    md.append(f"| {seed_name} | {name} | {definition(name)} | {space} | {texts[0]} | {texts[1]} | "
                              + ("–" if delta is None else f"{delta:+.4g}") + " |")
                    rows.append({"table": "latent", "exp_name": fixed.exp_name, "reference_exp_name": ref.exp_name,
                                 "paradigm": fixed.paradigm, "architecture": fixed.architecture,
                                 "seed_metric": seed_name, "metric": name, "definition": definition(name),
                                 "space": space, "value_reference": values[0].mean,
                                 "value_fixed": values[1].mean, "difference": delta})
    return (md if pairs else []), rows


def write_tables(configs: list[Config], folds_of: dict[str, list[int]],
                 variants: dict[str, list[Config]]) -> tuple[Path, Path]:
    for config in (v for c in configs for v in variants[c.exp_name]):
        refresh_reports(config)
    text, rows = build_tables(sorted(configs, key=table_order), folds_of, variants)
    md_path, csv_path = RESULTS_ROOT / "key_results.md", RESULTS_ROOT / "key_results.csv"
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_bytes(md_path, text.encode())
    atomic_write_bytes(csv_path, buffer.getvalue().encode())
    return md_path, csv_path


def update_readme(readme: Path, key_results: Path) -> None:
    """Replace the text between the key-results marker comments of README.md with key_results.md."""
    text = readme.read_text()
    if README_START not in text or README_END not in text:
        raise FileNotFoundError(f"{readme}: no '{README_START}' ... '{README_END}' markers to write between")
    head, rest = text.split(README_START, 1)
    body = key_results.read_text().split("\n", 1)[1].strip()  # without its "# Key results" title
    atomic_write_bytes(readme, f"{head}{README_START}\n{body}\n{README_END}{rest.split(README_END, 1)[1]}".encode())


# ----------------------------------------------------------------------------- command line
def parse_seeds(spec: str) -> list[int]:
    """--seeds 'K,L,...' -> distinct non-negative integers; anything else is a one-line SystemExit naming it."""
    parts = [part.strip() for part in spec.split(",")]
    bad = [part for part in parts if not part.isdigit()]
    if bad or len(set(map(int, parts))) != len(parts):
        problem = f"{bad[0]!r} is not a non-negative integer" if bad else "a seed is given twice"
        raise SystemExit(f"error: --seeds {spec}: {problem}; expected distinct seeds, e.g. 42,1,2")
    return [int(part) for part in parts]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--configs", nargs="+", type=Path, required=True, help="config files (twins come along)")
    parser.add_argument("--folds", default="1", help="'1' (default), 'all', or fold numbers 'K,L'")
    parser.add_argument("--seeds", help="trainer.seed values, e.g. 42,1,2: each its own run of every (config, fold) "
                        "(default: each config's own trainer.seed)")
    parser.add_argument("--gpu", default="auto", help="auto, cpu or a CUDA device id (default: auto, CUDA 0 when "
                        "available, else the CPU)")
    parser.add_argument("--gpus", help="local CUDA ids, e.g. 0,1,2,3: one run per GPU at a time (overrides --gpu); "
                        "an id named N times runs N runs on that GPU at once, faster only under NVIDIA MPS")
    parser.add_argument("--shard", default="1/1", help="K/N: take every N-th run, starting with the K-th")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config override passed to pretraining and probes, e.g. trainer.max_epochs=3 "
                             "(repeatable); completeness does not look at it: a run done with other values "
                             "counts as complete")
    parser.add_argument("--tables-only", action="store_true", help="run nothing; write the tables")
    parser.add_argument("--readme", action="store_true", help="also write the tables into README.md's Key Results")
    args = parser.parse_args(argv)
    k, _, n = args.shard.partition("/")
    if not (k.isdigit() and n.isdigit() and 1 <= int(k) <= int(n)):
        parser.error(f"--shard {args.shard}: expected K/N with 1 <= K <= N, e.g. 2/4")
    args.shard = (int(k), int(n))
    args.seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    args.gpus = [g.strip() for g in args.gpus.split(",")] if args.gpus else [args.gpu]
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    with memoised_hashes():  # the resume checks hash each checkpoint and embeddings file once per version
        try:
            configs = load_configs(args.configs, args.overrides)
            folds_of = {c.exp_name: select_folds(args.folds, c.config) for c in configs}
            variants = seed_variants(configs, args.seeds)
            errors = []
            if not args.tables_only:
                runs = plan(configs, folds_of, variants)
                k, n = args.shard
                mine = [r for r in shard_of(runs, k, n) if missing_steps(r)]
                print(f"{len(runs)} run(s), {len(shard_of(runs, k, n))} in shard {k}/{n}, {len(mine)} to do", flush=True)
                if warning := mps_warning(args.gpus):
                    print(warning, flush=True)
                errors = run_all(mine, args.gpus, args.overrides) if mine else []
            md_path, csv_path = write_tables(configs, folds_of, variants)
            if args.readme:
                update_readme(REPO / "README.md", md_path)
        except (ConfigError, InputError, FileNotFoundError, EmbeddingsError) as exc:
            raise SystemExit(f"error: {exc}") from None
    print(f"wrote {md_path} and {csv_path}" + (" and README.md" if args.readme else ""))
    if errors:
        raise SystemExit(f"error: {len(errors)} run(s) failed:\n" + "\n".join(errors))


if __name__ == "__main__":
    main()
