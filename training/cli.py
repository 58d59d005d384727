"""Command line shared by train_crl.py, train_mp.py and train_hybrid.py.

    python train_crl.py --config configs/X.json [--gpu auto] [--fold 1] [--resume | --overwrite] [--seed 7] [--set trainer.max_epochs=5]
    torchrun --nproc_per_node 2 train_crl.py --config configs/X.json --gpu 0

A fold that already has a best checkpoint or results under its exp_name is refused before any work: continue
it (--resume), replace the whole run and everything derived from it (--overwrite), or pick another name (--set
exp_name=...). Other folds of the same exp_name are free to train beside it (benchmark.py trains them one by one).
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

from training.checkpoint import best_checkpoint_path, checkpoint_dir
from training.config import SCHEMA, load_config
from training.paradigms import SCRIPTS
from utils import ConfigError, InputError, fold_name

RESULTS_ROOT = Path("results")
LOGS_ROOT = Path("logs")


def parse_args(paradigm: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=SCRIPTS[paradigm], description=f"Self-supervised pretraining ({paradigm}), then the probe.")
    parser.add_argument("--config", required=True, help="JSON or YAML config (configs/)")
    parser.add_argument("--gpu", default="auto", help="auto, cpu or a CUDA device index (default: auto, CUDA 0 when available)")
    parser.add_argument("--fold", type=int, action="append", help="fold to train (repeatable; default: all folds of the config)")
    runs = parser.add_mutually_exclusive_group()
    runs.add_argument("--resume", action="store_true", help="continue each fold from its last saved state")
    runs.add_argument("--overwrite", action="store_true",
                      help="delete the earlier run of this exp_name (checkpoints, embeddings, logs, probe and latent results) first")
    parser.add_argument("--seed", type=int, help="overrides trainer.seed")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set trainer.max_epochs=3 (repeatable)")
    return parser.parse_args(argv)


def run_outputs(config: dict) -> list[Path]:
    """Every folder an earlier run of config["exp_name"] left: checkpoints and embeddings, TensorBoard logs,
    results (probe, latent) and its probe variants, results/<exp>[_<kind>-probe][_labels-F] (the names of
    probing/results.py); not other runs that share the prefix (<exp>_seed-K, <exp>_random-init_...)."""
    exp = config["exp_name"]
    suffixed = [kind for kind in SCHEMA["probe"]["type"].choices if kind not in ("linear", "both")]
    variant = re.compile(rf"{re.escape(exp)}(_({'|'.join(suffixed)})-probe)?(_labels-[0-9.e+-]+)?")
    variants = sorted(p for p in RESULTS_ROOT.glob(f"{exp}_*") if variant.fullmatch(p.name))
    return [p for p in (checkpoint_dir(config), LOGS_ROOT / exp, RESULTS_ROOT / exp, *variants) if p.exists()]


def pooled_folds(metrics: Path) -> set[int] | None:
    """The folds a pooled results/<run>/metrics.json reports; None (any fold) when it cannot be read."""
    try:
        return set(json.loads(metrics.read_text())["folds"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def earlier_run(config: dict, folds: list[int]) -> tuple[Path, int] | None:
    """(the folder, the fold) of the first of `folds` that an earlier run of this exp_name holds (its best
    checkpoint, any results file named after the fold, or a pooled report naming it), or None."""
    results = RESULTS_ROOT / config["exp_name"]
    reported = pooled_folds(results / "metrics.json") if (results / "metrics.json").exists() else set()
    for fold in folds:
        if best_checkpoint_path(config, fold).is_file():
            return checkpoint_dir(config), fold
        if reported is None or fold in reported or any(results.rglob(f"*{fold_name(fold)}*")):
            return results, fold
    return None


def protect_earlier_run(config: dict, folds: list[int], resume: bool, overwrite: bool, delete: bool = True) -> None:
    """Refuse to train a fold an earlier run holds unless --resume or --overwrite; --overwrite deletes the
    earlier run whole (when `delete`: under torchrun every process checks, only the main one deletes)."""
    if resume:
        return
    found = earlier_run(config, folds)
    if found is not None and not overwrite:
        folder, fold = found
        raise InputError(f"{folder}/ already holds fold {fold} of a run named {config['exp_name']!r}; continue it "
                         f"with --resume, replace the run with --overwrite, or name this run differently with "
                         f"--set exp_name=...")
    if overwrite and delete:
        for path in run_outputs(config):
            shutil.rmtree(path)
            print(f"--overwrite: removed {path}/")


def main(paradigm: str, run_fold, finish, argv=None) -> None:
    """Parse and check the command line, protect an earlier run, then run_fold(config, fold, device, resume=,
    distributed=) for each fold and finish(config, folds) on the main process (pipeline.py passes
    pretrain -> embed -> probe, and the pooled results with the closing report)."""
    args = parse_args(paradigm, argv)
    overrides = list(args.overrides) + ([f"trainer.seed={args.seed}"] if args.seed is not None else [])
    try:
        config = load_config(args.config, overrides)
    except (ConfigError, FileNotFoundError) as exc:
        sys.exit(f"error: {exc}")
    wanted = config["ssl"]["type"]
    if wanted != paradigm:
        script = SCRIPTS.get(wanted, "classifier_training.py --baseline supervised")
        sys.exit(f"error: {args.config} is a {wanted} config (ssl.type); run it with: python {script} --config {args.config}")
    folds = args.fold or list(range(1, config["data"]["num_folds"] + 1))
    bad = [f for f in folds if not 1 <= f <= config["data"]["num_folds"]]
    if bad:
        sys.exit(f"error: --fold {bad[0]}: folds are numbered 1..{config['data']['num_folds']} (data.num_folds)")

    from training.engine import TrainingDiverged, init_distributed
    from utils import select_device

    try:
        distributed, device = init_distributed(select_device(args.gpu))
        protect_earlier_run(config, folds, args.resume, args.overwrite, delete=distributed.is_main)
        for fold in folds:
            run_fold(config, fold, device, resume=args.resume, distributed=distributed)
        if distributed.is_main:
            finish(config, folds)
    except (ConfigError, InputError, FileNotFoundError, TrainingDiverged) as exc:
        sys.exit(f"error: {exc}")
