"""Parameter counts and training throughput (forward + backward, samples/s) of every encoder.

Paths, each on a batch of standardised epochs (B, 1, 3000), default backbone params:
    crl        two views -> encode -> project (the CRL step; samples/s counts epochs, not views)
    mp-span    span-masked input -> encoder -> decoder (MP with masking "span")
    mp-token   MAE token masking (Transformer only)
The loss is a stand-in (mean square), so the numbers measure the models, not loss.py or the
augmentations.

    python benchmarks/bench_models.py --device cuda --batch-sizes 128 512 --dtype float32 bf16 --steps 50
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.main_model import BACKBONES, build_model  # noqa: E402
from training.engine import use_fast_cuda_kernels  # noqa: E402

DTYPES = {"float32": None, "bf16": torch.bfloat16}


def parameter_counts(model) -> dict[str, int]:
    """Parameters of the encoder (backbone without decoder), the decoder and the projection head."""
    total = sum(p.numel() for p in model.backbone.parameters())
    decoder = sum(p.numel() for p in model.backbone.decoder.parameters())
    return {"encoder": total - decoder, "decoder": decoder,
            "projection": sum(p.numel() for p in model.projection_head.parameters())}


def step_function(model, path: str):
    def crl(x):
        views = torch.cat([x, x.flip(-1)])  # two views through one encoder call, as a batch of 2B
        return model.project(model.encode(views)).float().pow(2).mean()

    def mp(x, masking):
        out = model.forward_mp(x, 0.5, masking, 50)
        error = (out["pred"].float() - out["target"].float()).pow(2).mean(-1)
        return (error * out["mask"]).sum() / out["mask"].sum()

    return {"crl": crl, "mp-span": lambda x: mp(x, "span"), "mp-token": lambda x: mp(x, "token")}[path]


def throughput(model, path: str, batch: int, dtype, device, steps: int, warmup: int) -> float:
    """Samples per second of forward + backward on `path`."""
    x = torch.randn(batch, 1, 3000, device=device)
    loss_of = step_function(model, path)

    def step():
        with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            loss = loss_of(x)
        loss.backward()
        model.zero_grad(set_to_none=True)

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return batch * steps / (time.perf_counter() - start)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--dtype", nargs="+", choices=tuple(DTYPES), default=["float32", "bf16"])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--encoders", nargs="+", choices=tuple(BACKBONES), default=list(BACKBONES))
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":
        use_fast_cuda_kernels()

    print(f"device {device}, torch {torch.__version__}, {args.steps} timed steps after {args.warmup} warm-up")
    print(f"{'encoder':<14} {'encoder/decoder/projection params':>34}  {'path':<9} {'batch':>5} {'dtype':<8} {'samples/s':>10}")
    for kind in args.encoders:
        torch.manual_seed(0)
        model = build_model({"backbone": {"type": kind}, "ssl": {"type": "Hybrid"}}).to(device).train()
        counts = parameter_counts(model)
        sizes = f"{counts['encoder']:,} / {counts['decoder']:,} / {counts['projection']:,}"
        paths = ["crl", "mp-span"] + (["mp-token"] if kind == "Transformer" else [])
        for path in paths:
            for batch in args.batch_sizes:
                for name in args.dtype:
                    rate = throughput(model, path, batch, DTYPES[name], device, args.steps, args.warmup)
                    print(f"{kind:<14} {sizes:>34}  {path:<9} {batch:>5} {name:<8} {rate:>10,.0f}", flush=True)


if __name__ == "__main__":
    main()
