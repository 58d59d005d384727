"""Probe training before and after resident latents: wall time and test metrics on the same latents.

    python benchmarks/bench_probe.py --gpu 0                       # 164k x 128 synthetic training latents
    python benchmarks/bench_probe.py --gpu cpu --smoke             # 5k latents, seconds
    python benchmarks/bench_probe.py --gpu cpu --config configs/demo/DEMO_CRL_CNN.json --fold 1
                                                                   # the demo encoder's latents (pretrain it first)
    python benchmarks/bench_probe.py --gpu 0 --seeds 3 --mlp-batch-sizes 128 256 1024
                                                                   # three probe seeds, the MLP after at 3 batches

before  the per-batch loop this repo used until issue 15: AdamW, a host-side permutation copied to the
        device every epoch, mini-batches of 256, the validation predictions copied to the host every epoch
        (early stopping and the kept state follow the current protocol, lowest validation loss, so that
        only the loop differs)
after   probing.probe.fit_probe: the linear probe by full-batch L-BFGS, the MLP by Adam in mini-batches
        of probe.batch_size (each of --mlp-batch-sizes), latents resident on the device, one host sync per
        epoch, and on CUDA every epoch after the first replayed as one CUDA graph

Both use the same probe settings (configs' defaults unless --set probe.X=V) and the same probe seeds (0 ..
--seeds - 1; the latents stay those of seed 0); each row is reported per seed and as a mean. Synthetic
latents are a Gaussian mixture in Sleep-EDF stage shares (benchmarks/bench_latent.py): timing only, they
are not an encoder's latents.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_latent import gaussian_mixture  # noqa: E402
from probing.metrics import classification_metrics  # noqa: E402
from probing.probe import LatentProbe, build_head, class_weights, fit_probe, predict  # noqa: E402
from utils import select_device  # noqa: E402

OLD_BATCH_SIZE = 256
SEPARATION = 0.1  # stage centres ~1.6 apart in 128-D unit-variance noise: overlapping classes, metrics below 100 %


def per_batch_probe(z_train, y_train, z_val, y_val, probe_cfg: dict, seed: int, device) -> LatentProbe:
    """The loop before issue 15 (see the module docstring); returns the probe at its lowest validation loss."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    stats = torch.as_tensor(z_train, device=device)
    mean, std = stats.mean(0), stats.std(0).clamp_min(1e-6)
    probe = LatentProbe(build_head(probe_cfg["type"], stats.shape[1]), mean, std).to(device)
    weights = class_weights(y_train, probe_cfg["class_weighting"])
    loss_fn = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))
    optimizer = torch.optim.AdamW(probe.head.parameters(), lr=probe_cfg["learning_rate"],
                                  weight_decay=probe_cfg["weight_decay"])
    z_tr, y_tr = (stats - mean) / std, torch.as_tensor(y_train, device=device)
    z_va, y_va = (torch.as_tensor(z_val, device=device) - mean) / std, torch.as_tensor(y_val, device=device)
    best_loss, best_state, stale = float("inf"), None, 0
    for _ in range(probe_cfg["epochs"]):
        probe.head.train()
        order = torch.randperm(len(z_tr), generator=generator).to(device)
        for start in range(0, len(z_tr) - 1, OLD_BATCH_SIZE):
            batch = order[start : start + OLD_BATCH_SIZE]
            loss = loss_fn(probe.head(z_tr[batch]), y_tr[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        probe.head.eval()
        with torch.no_grad():
            logits = probe.head(z_va)
        logits.argmax(1).cpu().numpy()  # the old loop's per-epoch macro-F1 on the host
        val_loss = float(loss_fn(logits, y_va))
        if val_loss < best_loss:
            best_loss, stale = val_loss, 0
            best_state = {k: v.detach().clone() for k, v in probe.head.state_dict().items()}
        else:
            stale += 1
            if stale >= probe_cfg["patience"]:
                break
    probe.head.load_state_dict(best_state)
    return probe.eval()


def synthetic_latents(n_train: int, dim: int, seed: int) -> dict:
    """Train/val/test latents and labels (val and test an eighth of train each) of one Gaussian mixture."""
    splits = {"train": n_train, "val": max(n_train // 8, 100), "test": max(n_train // 8, 100)}
    z, y = gaussian_mixture(sum(splits.values()), dim, seed, separation=SEPARATION)
    bounds = np.cumsum([0, *splits.values()])
    return {name: (z[a:b], y[a:b]) for name, a, b in zip(splits, bounds[:-1], bounds[1:])}


def encoder_latents(config: dict, fold: int, device) -> dict:
    """The latents of a pretrained fold: checkpoints/<exp>/ckpt_fold-0K.pth on the fold's data."""
    from dset.loader import load_fold
    from probing.probe import encode_fold
    from training.checkpoint import best_checkpoint_path, load_checkpoint

    data = load_fold(config["data"], fold)
    model, ckpt = load_checkpoint(best_checkpoint_path(config, fold), config, device)
    latents = encode_fold(model, ckpt["input_norm"], data, device, config["trainer"]["amp"])
    return {split: (latents[split], getattr(data, split).y) for split in ("train", "val", "test")}


def timed_fit(fit, device) -> tuple[LatentProbe, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    probe = fit()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return probe, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", default="0", help="CUDA device id or 'cpu'")
    parser.add_argument("--n-train", type=int, default=164_000, help="synthetic training latents")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--smoke", action="store_true", help="5000 synthetic training latents (CPU check)")
    parser.add_argument("--config", help="probe the latents of this config's pretrained fold instead")
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--seeds", type=int, default=1, help="probe seeds 0 .. N-1 (fold seed + k with --config)")
    parser.add_argument("--mlp-batch-sizes", type=int, nargs="+", metavar="B",
                        help="the MLP's 'after' rows at these probe.batch_size (default: the config's)")
    parser.add_argument("--kinds", nargs="+", choices=("linear", "mlp"), default=["linear", "mlp"])
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    from training.config import SCHEMA, load_config
    from utils import fill_defaults

    device = select_device(args.gpu)
    if args.config:
        config = load_config(args.config, args.set)
        latents, source = encoder_latents(config, args.fold, device), f"{config['exp_name']} fold {args.fold}"
        probe_defaults, first_seed = config["probe"], config["trainer"]["seed"] + args.fold
    else:
        from utils import apply_overrides

        n_train = 5_000 if args.smoke else args.n_train
        latents, source = synthetic_latents(n_train, args.dim, seed=0), f"synthetic {n_train} x {args.dim}"
        probe_defaults = fill_defaults(apply_overrides({}, args.set).get("probe", {}), SCHEMA["probe"])
        first_seed = 0
    (z_tr, y_tr), (z_va, y_va), (z_te, y_te) = latents["train"], latents["val"], latents["test"]
    print(f"probes on {source}: train {z_tr.shape}, val {len(z_va)}, test {len(z_te)}, device {device}")
    rows = []
    for kind, loop, batch_size in variants(args.kinds, args.mlp_batch_sizes or [probe_defaults["batch_size"]]):
        probe_cfg = {**probe_defaults, "type": kind, "batch_size": batch_size or probe_defaults["batch_size"]}
        fit = per_batch_probe if loop == "before" else (lambda *fit_args: fit_probe(*fit_args)[0])
        for seed in range(first_seed, first_seed + args.seeds):
            probe, seconds = timed_fit(lambda: fit(z_tr, y_tr, z_va, y_va, probe_cfg, seed, device), device)
            scores = classification_metrics(y_te, predict(probe, z_te, device))
            rows.append({"probe": kind, "loop": loop, "batch_size": batch_size, "seed": seed, "seconds": seconds,
                         **{k: scores[k] for k in ("accuracy", "macro_f1", "kappa")}})
            print(f"  {label(rows[-1]):<18} seed {seed:<3} {seconds:8.2f} s   accuracy {100 * scores['accuracy']:5.1f} %"
                  f"   macro-F1 {100 * scores['macro_f1']:5.1f}   kappa {scores['kappa']:.3f}", flush=True)
    summary = summarise(rows)
    if args.seeds > 1:
        print("mean ± sd over seeds:")
        for row in summary:
            print(f"  {row['label']:<18} {row['seconds']:7.2f} s   accuracy {row['accuracy']}   "
                  f"macro-F1 {row['macro_f1']}   kappa {row['kappa']}")
    if args.json:
        args.json.write_text(json.dumps({"source": source, "device": str(device), "probe": probe_defaults,
                                         "rows": rows, "summary": summary}, indent=2))


def variants(kinds: list[str], mlp_batch_sizes: list[int]) -> list[tuple[str, str, int | None]]:
    """(kind, loop, batch size) rows: the linear probe before and after (full batch: None), the MLP before
    (its own batch of 256) and after at each batch size."""
    rows = []
    if "linear" in kinds:
        rows += [("linear", "before", OLD_BATCH_SIZE), ("linear", "after", None)]
    if "mlp" in kinds:
        rows += [("mlp", "before", OLD_BATCH_SIZE)] + [("mlp", "after", b) for b in mlp_batch_sizes]
    return rows


def label(row: dict) -> str:
    full_batch = row["probe"] == "linear" and row["loop"] == "after"
    return f"{row['probe']} {row['loop']}" + ("" if full_batch else f" @{row['batch_size']}")


def summarise(rows: list[dict]) -> list[dict]:
    """Per variant: mean seconds, and each metric as 'mean ± sd' in points (kappa in units)."""
    out = []
    for name in dict.fromkeys(label(r) for r in rows):
        group = [r for r in rows if label(r) == name]
        entry = {"label": name, "seeds": len(group), "seconds": float(np.mean([r["seconds"] for r in group]))}
        for key, scale, digits in (("accuracy", 100, 1), ("macro_f1", 100, 1), ("kappa", 1, 3)):
            values = scale * np.array([r[key] for r in group])
            entry[key] = f"{values.mean():.{digits + 1}f} ± {values.std(ddof=1) if len(values) > 1 else 0:.{digits + 1}f}"
        out.append(entry)
    return out


if __name__ == "__main__":
    main()
