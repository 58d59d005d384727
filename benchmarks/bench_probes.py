"""The linear, MLP and context probes on the same frozen latents of one checkpoint: scores and training time.

    python benchmarks/bench_probes.py --config configs/<cfg>.json --ckpt checkpoints/<exp>/ckpt_fold-01.pth \
        [--gpu 0] [--probes linear mlp context] [--set probe.context.model=gru] [--json out.json]

The fold's train / validation / test splits are encoded once; each probe is trained on those latents
(probe settings from the config; probe.type is set per probe) and scored on the test subjects.
Training time is wall time of the fit (synchronised on CUDA), without the encoding.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from dset.loader import load_fold  # noqa: E402
from probing.context import fit_context_probe, predict_context  # noqa: E402
from probing.metrics import classification_metrics  # noqa: E402
from probing.probe import fit_probe, label_subset, predict  # noqa: E402
from training.checkpoint import encode_array, load_checkpoint  # noqa: E402
from training.config import load_config  # noqa: E402
from utils import select_device  # noqa: E402


def fit_and_score(kind: str, latents: dict, data, probe_cfg: dict, seed: int, device) -> dict:
    """Train probe `kind` on the cached latents; its test scores, summary and fit seconds."""
    cfg = {**probe_cfg, "type": kind}
    labelled = label_subset(data.train.y, cfg["label_fraction"], seed)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    if kind == "context":
        probe, summary = fit_context_probe(latents["train"], data.train, labelled, latents["val"], data.val, cfg,
                                           seed=seed, device=device)
    else:
        probe, summary = fit_probe(latents["train"][labelled], data.train.y[labelled], latents["val"], data.val.y,
                                   cfg, seed=seed, device=device, z_stats=latents["train"])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - started
    y_pred = (predict_context(probe, latents["test"], data.test, device) if kind == "context"
              else predict(probe, latents["test"], device))
    scores = classification_metrics(data.test.y, y_pred)
    return {"probe": kind, "fit_seconds": round(seconds, 2), **summary,
            **{k: scores[k] for k in ("n_epochs", "accuracy", "macro_f1", "kappa")}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--ckpt", required=True, type=Path)
    parser.add_argument("--gpu", default="0" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--probes", nargs="+", default=["linear", "mlp", "context"], choices=["linear", "mlp", "context"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--json", type=Path, help="write the rows here")
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    device = select_device(args.gpu)
    model, ckpt = load_checkpoint(args.ckpt, config, device)
    data = load_fold(config["data"], ckpt["fold"])
    started = time.perf_counter()
    latents = {split: encode_array(model, getattr(data, split).x, ckpt["input_norm"], device,
                                   config["trainer"]["amp"])
               for split in ("train", "val", "test")}
    print(f"{config['exp_name']} fold {ckpt['fold']}: encoded {sum(map(len, latents.values()))} epochs "
          f"in {time.perf_counter() - started:.1f} s")
    rows = [fit_and_score(kind, latents, data, config["probe"], config["trainer"]["seed"] + ckpt["fold"], device)
            for kind in args.probes]
    print("| probe | accuracy (%) | macro-F1 | kappa | epochs trained | fit (s) |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['probe']} | {100 * r['accuracy']:.1f} | {r['macro_f1']:.3f} | {r['kappa']:.3f} | "
              f"{r['epochs_trained']} | {r['fit_seconds']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps({"exp_name": config["exp_name"], "fold": ckpt["fold"], "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
