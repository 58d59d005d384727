"""Validation speed and memory against trainer.val_chunk_size: one full pass over fold 1's validation split.

    python benchmarks/bench_validation.py --data-root /data/npz --gpu 0 --chunks 128 512 1024 2048 \
        [--configs configs/DLPROJ_pretrain_*.json] [--json bench_validation.json]
    python benchmarks/bench_validation.py --gpu cpu --chunks 128 1024 --configs configs/demo/DEMO_*_CNN.json
                                                            # CPU, demo data: time and loss, no memory figures

For each config the model is freshly initialised (the time of a pass does not depend on the weights) and the
fold's training and validation splits are resident on the device, as in the engine. The training peak is that
of a few eager training steps at trainer.batch_size (the engine's compiled step may hold less). Then, per chunk
size, one untimed pass (cuDNN autotuning at the new shapes) and one timed pass of engine.validation_loss, with
its peak memory and its loss: the loss must not depend on the chunk.
"""
from __future__ import annotations

import argparse
import glob
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TRAINING_STEPS = 3


def measure(config: dict, chunks: list[int], device: torch.device) -> list[dict]:
    """One row per chunk size: seconds of one validation pass, its loss and peak GPU memory (None on CPU), and
    the training peak."""
    from dset.loader import load_fold
    from models.main_model import build_model
    from training.checkpoint import input_norm_of
    from training.engine import (build_objective, make_optimizer, standardised_batch, train_step, use_fast_cuda_kernels,
                                 validation_loss)

    t = config["trainer"]
    on_cuda = device.type == "cuda"

    def restart_peak() -> None:
        if on_cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)

    def peak_gb() -> float | None:
        if not on_cuda:
            return None
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) / 2**30

    if on_cuda:
        use_fast_cuda_kernels()
    data = load_fold(config["data"], 1)
    norm = input_norm_of(data.train.x, config["data"]["standardise"])
    x_train, y_train = torch.from_numpy(data.train.x).to(device), torch.from_numpy(data.train.y).to(device)
    x_val, y_val = torch.from_numpy(data.val.x).to(device), torch.from_numpy(data.val.y).to(device)
    torch.manual_seed(t["seed"])
    model = build_model(config).to(device)
    objective = build_objective(config, model)
    optimizer = make_optimizer(config, model)
    use_amp = t["amp"] and on_cuda
    restart_peak()
    for step in range(TRAINING_STEPS):
        idx = torch.arange(step * t["batch_size"], (step + 1) * t["batch_size"], device=device) % len(x_train)
        train_step(objective, optimizer, standardised_batch(x_train, idx, norm), y_train[idx], use_amp, t["grad_clip"])
    training_peak = peak_gb()
    rows = []
    for chunk in chunks:
        kwargs = dict(batch=t["val_batch_size"], chunk=chunk, seed=t["seed"] + 1, use_amp=use_amp)
        validation_loss(objective, x_val, y_val, norm, **kwargs)
        restart_peak()
        started = time.perf_counter()
        loss = validation_loss(objective, x_val, y_val, norm, **kwargs)  # .item() inside: synchronised
        seconds = time.perf_counter() - started
        rows.append({"config": config["exp_name"], "device": str(device), "val_epochs": len(x_val),
                     "val_batch_size": t["val_batch_size"], "chunk": chunk, "seconds": seconds, "loss": loss,
                     "peak_gpu_memory_gb": peak_gb(), "eager_training_peak_gb": training_peak})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def gb(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=sorted(glob.glob(str(REPO / "configs/DLPROJ_pretrain_*.json"))))
    parser.add_argument("--data-root", help="folder of prepared NPZ nights (default: each config's data.root_dir)")
    parser.add_argument("--chunks", nargs="+", type=int, default=[128, 512, 1024, 2048])
    parser.add_argument("--gpu", default="0", help="CUDA device id or 'cpu'")
    parser.add_argument("--json", help="write the rows here as JSON, after every config")
    args = parser.parse_args()

    from training.config import load_config
    from utils import ConfigError, InputError, select_device

    rows = []
    try:
        device = select_device(args.gpu)
        for path in args.configs:
            config = load_config(path, [f"data.root_dir={Path(args.data_root).resolve()}"] if args.data_root else [])
            rows += measure(config, args.chunks, device)
            if args.json:
                Path(args.json).write_text(json.dumps(rows, indent=2))
    except (ConfigError, InputError, FileNotFoundError) as exc:
        raise SystemExit(f"error: {exc}") from None
    print("\n| config | chunk | seconds per pass | peak GPU memory (GB) | eager training peak (GB) | loss |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['config']} | {r['chunk']} | {r['seconds']:.3f} | {gb(r['peak_gpu_memory_gb'])} | "
              f"{gb(r['eager_training_peak_gb'])} | {r['loss']:.5f} |")


if __name__ == "__main__":
    main()
