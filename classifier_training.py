"""Score pretrained encoders on sleep staging, run the baselines, and build the Key Results table.

    # linear evaluation of one fold's best checkpoint (the fold is read from the checkpoint)
    python classifier_training.py --encoder_ckpt checkpoints/<exp>/ckpt_fold-01.pth --config configs/<cfg>.json
    # every fold of the run (checkpoints beside --encoder_ckpt, default checkpoints/<exp_name>/)
    python classifier_training.py --config configs/<cfg>.json --fold all [--probe mlp] [--label-fraction 0.01]
    # baselines on the same folds
    python classifier_training.py --config configs/<cfg>.json --fold all --baseline random|supervised|bandpower
    # results/summary.md and results/summary.csv from every results/*/metrics.json
    python classifier_training.py --summarize

Each run writes predictions_fold-KK.npz and re-aggregates every fold present in its results folder
(metrics.json, per_fold.csv, confusion.png, hypnogram.png), so folds scored one at a time pool correctly.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from probing.baselines import (bandpower_fold, random_init_config, random_init_fold, supervised_config,
                               supervised_fold, write_bandpower_results)
from probing.probe import probe_kinds, run_probe, with_probe
from probing.results import RESULTS_ROOT, describe, write_results, write_summary
from training.checkpoint import best_checkpoint_path, read_checkpoint
from training.config import load_config
from utils import ConfigError, InputError, fold_name, select_device


def parse_args(argv=None) -> argparse.Namespace:
    summary, usage = __doc__.split("\n\n", 1)
    parser = argparse.ArgumentParser(description=summary, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=usage)
    parser.add_argument("--encoder_ckpt", "--encoder-ckpt", type=Path,
                        help="best checkpoint of a fold, checkpoints/<exp>/ckpt_fold-KK.pth")
    parser.add_argument("--config", type=Path, help="the config the encoder was trained with (JSON or YAML)")
    parser.add_argument("--fold", help="fold number K or 'all' (default: the fold of --encoder_ckpt)")
    parser.add_argument("--gpu", default="auto", help="auto, cpu or a CUDA device index (default: auto, "
                        "CUDA 0 when available, else the CPU)")
    parser.add_argument("--probe", choices=("linear", "mlp", "both", "context"), help="probe.type override (default: the config's)")
    parser.add_argument("--label-fraction", type=float, help="train on this fraction of the labelled epochs")
    parser.add_argument("--baseline", choices=("random", "supervised", "bandpower"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--summarize", action="store_true", help="build results/summary.md from results/*/")
    args = parser.parse_args(argv)
    if not args.summarize and args.config is None:
        parser.error("--config is required (or use --summarize)")
    if args.baseline is None and not args.summarize and args.encoder_ckpt is None and args.fold is None:
        parser.error("give --encoder_ckpt, or --fold K|all to use checkpoints/<exp_name>/ckpt_fold-KK.pth")
    if args.baseline == "supervised" and args.label_fraction not in (None, 1.0):
        parser.error("--label-fraction applies to probes; the supervised baseline trains on every label")
    return args


def resolve_folds(args, config: dict) -> list[int]:
    """--fold K | all, or the fold stored in --encoder_ckpt."""
    n_folds = config["data"]["num_folds"]
    if args.fold == "all":
        return list(range(1, n_folds + 1))
    if args.fold is not None:
        if not args.fold.isdigit() or not 1 <= int(args.fold) <= n_folds:
            raise ConfigError([f"--fold {args.fold}: expected 'all' or a fold number in 1..{n_folds} (data.num_folds)"])
        return [int(args.fold)]
    if args.encoder_ckpt is None:
        raise ConfigError(["--fold: required when no --encoder_ckpt is given"])
    if not args.encoder_ckpt.is_file():
        raise FileNotFoundError(f"checkpoint not found: {args.encoder_ckpt}")
    return [int(read_checkpoint(args.encoder_ckpt)["fold"])]


def encoder_checkpoint(args, config: dict, fold: int) -> Path:
    """--encoder_ckpt for a single fold; for --fold all, ckpt_fold-KK.pth beside it (or the run's default)."""
    if args.encoder_ckpt is not None and args.fold != "all":
        return args.encoder_ckpt
    if args.encoder_ckpt is not None:
        return args.encoder_ckpt.parent / f"ckpt_{fold_name(fold)}.pth"
    return best_checkpoint_path(config, fold)


def score_fold(args, config: dict, fold: int, device) -> dict[str, dict]:
    """{classifier: the fold's test metrics}: each probe, or the baseline."""
    if args.baseline is None:
        return run_probe(config, fold, encoder_checkpoint(args, config, fold), device)
    if args.baseline == "supervised":
        return supervised_fold(config, fold, device)
    from dset.loader import load_fold

    data = load_fold(config["data"], fold)
    if args.baseline == "random":
        return random_init_fold(config, fold, device, data)
    return bandpower_fold(config, fold, data)


def aggregate(args, config: dict) -> list[dict]:
    """Pool the folds of each results folder this invocation wrote to."""
    if args.baseline == "bandpower":
        return [write_bandpower_results(config)]
    if args.baseline == "supervised":
        return [write_results(supervised_config(config))]
    run = random_init_config(config) if args.baseline == "random" else config
    return [write_results(with_probe(run, kind)) for kind in probe_kinds(config["probe"])]


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        if args.summarize:
            md_path, csv_path = write_summary()
            print(md_path.read_text())
            print(f"wrote {md_path} and {csv_path}")
            return
        overrides = list(args.set)
        if args.probe:
            overrides.append(f"probe.type={args.probe}")
        if args.label_fraction is not None:
            overrides.append(f"probe.label_fraction={args.label_fraction}")
        config = load_config(args.config, overrides)
        device = select_device(args.gpu)
        folds = resolve_folds(args, config)
        if args.baseline is None:  # fail before scoring anything, not at fold 7 of 10
            missing = [str(encoder_checkpoint(args, config, f)) for f in folds
                       if not encoder_checkpoint(args, config, f).is_file()]
            if missing:
                raise FileNotFoundError(f"checkpoint(s) not found: {', '.join(missing)} "
                                        "(pretrain those folds first, or pass --fold K)")
        for fold in folds:
            for scores in score_fold(args, config, fold, device).values():
                print(f"fold {fold} ({scores['classifier']}, {scores['n_epochs']} test epochs): {describe(scores)}")
        runs = aggregate(args, config)
    except (ConfigError, InputError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    for metrics in runs:
        print(f"{metrics['run']}: {metrics['n_folds']} of {metrics['num_folds']} fold(s) pooled "
              f"({metrics['n_epochs']} test epochs): {describe(metrics['pooled'])}; "
              f"per-fold mean macro-F1 {metrics['fold_mean']['macro_f1']:.3f} ± {metrics['fold_std']['macro_f1']:.3f}")
        if metrics.get("stale_folds"):
            print(f"fold(s) {metrics['stale_folds']} of {metrics['run']} were probed with an earlier checkpoint: "
                  "re-run them with --fold K")
        print(f"results in {RESULTS_ROOT / metrics['run']}/")
    if args.baseline is None:
        print("checkpoints: " + ", ".join(str(encoder_checkpoint(args, config, f)) for f in folds))


if __name__ == "__main__":
    main()
