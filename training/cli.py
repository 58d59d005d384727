"""Command line shared by train_crl.py, train_mp.py and train_hybrid.py.

    python train_crl.py --config configs/X.json --gpu 0 [--fold 1] [--resume] [--seed 7] [--set trainer.max_epochs=5]
    torchrun --nproc_per_node 2 train_crl.py --config configs/X.json --gpu 0
"""
from __future__ import annotations

import argparse
import sys

from training.config import load_config
from training.paradigms import SCRIPTS
from utils import ConfigError, select_device


def parse_args(paradigm: str, argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=SCRIPTS[paradigm], description=f"Self-supervised pretraining ({paradigm}), then the probe.")
    parser.add_argument("--config", required=True, help="JSON or YAML config (configs/)")
    parser.add_argument("--gpu", default="0", help="CUDA device id, or 'cpu' (default: 0)")
    parser.add_argument("--fold", type=int, action="append", help="fold to train (repeatable; default: all folds of the config)")
    parser.add_argument("--resume", action="store_true", help="continue each fold from its last saved state")
    parser.add_argument("--seed", type=int, help="overrides trainer.seed")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set trainer.max_epochs=3 (repeatable)")
    return parser.parse_args(argv)


def main(paradigm: str, run_fold, finish, argv=None) -> None:
    """Parse and check the command line, then run_fold(config, fold, device, resume=, distributed=) for each
    fold and finish(config) on the main process (pipeline.py passes pretrain -> embed -> probe and the results)."""
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

    from training.engine import init_distributed

    distributed, device = init_distributed(select_device(args.gpu))
    folds = args.fold or list(range(1, config["data"]["num_folds"] + 1))
    bad = [f for f in folds if not 1 <= f <= config["data"]["num_folds"]]
    if bad:
        sys.exit(f"error: --fold {bad[0]}: folds are numbered 1..{config['data']['num_folds']} (data.num_folds)")
    for fold in folds:
        run_fold(config, fold, device, resume=args.resume, distributed=distributed)
    if distributed.is_main:
        finish(config)
