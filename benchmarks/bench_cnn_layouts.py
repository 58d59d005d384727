"""Which memory layout the CNN training step should run in: the engine's own step under layout variants.

    python benchmarks/bench_cnn_layouts.py --config configs/DLPROJ_pretrain_MP_CNN_Sleep-EDF-2018.json --gpu 0 \
        --variant cl              # as shipped (models/conv.py): (B, C, 1, L) channels-last 2-d convolutions and
                                  # PReLU's one weight expanded per channel
    ... --variant ncl             # torch.nn's Conv1d: (B, C, L) contiguous; cuDNN converts to NHWC and back
    ... --variant force           # ncl with inductor's layout optimisation forced on
    ... --variant cl+mmup         # and the kernel = stride transposed convolution as one matmul
    ... --variant cl+prelu_shared # torch.nn's PReLU: its weight gradient one reduction over all B x C x L elements
    ... --variant cl+coord        # inductor tunes the block sizes of its fused kernels (coordinate descent)
    ... --variant cl+autotune     # inductor benchmarks Triton templates against cuDNN/cuBLAS for every conv and matmul

The step is profile_train.synthetic_training's: the engine's own (torch.compile of the loss, CUDA-graph replay)
on random µV-scale data. Prints one JSON line: samples/s over --steps unprofiled steps after --warmup, the top kernels
and the GPU time by kind of kernel (KERNEL_KINDS). The variants change how each layer runs, never what it computes
(same weights, same outputs).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch
import torch.nn as nn


def transposed_conv_as_matmul(self: nn.ConvTranspose1d, x: torch.Tensor) -> torch.Tensor:
    """kernel = stride: out[b, o, l * p + k] = sum_c x[b, c, l] W[c, o, k] + bias[o], one (B L, C) @ (C, p O) GEMM;
    the result (B, L * p, O) is returned as its (B, O, L * p) channels-last view."""
    batch, _, length = x.shape
    c_in, c_out, p = self.weight.shape
    weight = self.weight.permute(0, 2, 1).reshape(c_in, p * c_out)
    y = torch.matmul(x.transpose(1, 2), weight).view(batch, length * p, c_out)
    if self.bias is not None:
        y = y + self.bias
    return y.transpose(1, 2)


KERNEL_KINDS = (  # (kind, substrings of the kernel's name), first match wins
    ("layout conversion", ("nchwToNhwc", "nhwcToNchw")),
    ("inductor fused", ("triton",)),  # before convolution: inductor names its kernels after the ops they fuse
    ("attention", ("sdpa", "flash", "fmha")),  # before convolution: cuDNN's attention kernels are named cudnn_*
    ("convolution", ("conv", "dgrad", "wgrad", "fprop", "xmma", "implicit", "cudnn")),
    ("matmul", ("gemm", "nvjet", "cutlass", "matmul")),
    ("optimiser", ("multi_tensor", "adam")),
    ("copy and fill", ("memcpy", "memset", "copy", "fill")),
)


def kernel_kind(name: str) -> str:
    lowered = name.lower()
    return next((kind for kind, marks in KERNEL_KINDS if any(m.lower() in lowered for m in marks)), "other")


def apply_variant(variant: str) -> None:
    """Patch the CNN's layers (models/conv.py) into the variant's implementation, before the model is built."""
    from models import conv
    parts = set(variant.split("+"))
    unknown = parts - {"ncl", "force", "cl", "mmup", "prelu_shared", "coord", "autotune"}
    if unknown or len(parts & {"ncl", "force", "cl"}) != 1:
        raise SystemExit(f"variant {variant!r}: one of ncl, force, cl, optionally +mmup, +prelu_shared, +coord, +autotune")
    import torch._inductor.config as inductor_config
    if parts & {"ncl", "force"}:  # torch.nn's channels-first layers
        conv.Conv1d.forward, conv.ConvTranspose1d.forward = nn.Conv1d.forward, nn.ConvTranspose1d.forward
    if "force" in parts:
        inductor_config.force_layout_optimization = True
    if "coord" in parts:
        inductor_config.coordinate_descent_tuning = True
    if "autotune" in parts:
        inductor_config.max_autotune = True
    if "mmup" in parts:
        conv.ConvTranspose1d.forward = transposed_conv_as_matmul
    if "prelu_shared" in parts:
        conv.PReLU.forward = nn.PReLU.forward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--variant", default="cl")
    parser.add_argument("--gpu", default="0")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--rows", type=int, default=12, help="top kernels to list (0: no profile)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    apply_variant(args.variant)

    from benchmarks.profile_train import synthetic_training
    from training.config import load_config
    from utils import select_device

    config = load_config(args.config, args.overrides)
    device = select_device(args.gpu)
    t = config["trainer"]
    started = time.perf_counter()
    run = synthetic_training(config, device)
    run(args.warmup)
    setup_s = time.perf_counter() - started
    started = time.perf_counter()
    run(args.steps)
    wall = time.perf_counter() - started
    top, by_kind = [], {}
    if args.rows:
        from torch.profiler import ProfilerActivity, profile
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            run(20)
        events = sorted((e for e in prof.key_averages() if e.self_device_time_total > 0),
                        key=lambda e: -e.self_device_time_total)
        total = sum(e.self_device_time_total for e in events)
        top = [(e.key[:90], round(100 * e.self_device_time_total / total, 1)) for e in events[: args.rows]]
        for e in events:
            kind = kernel_kind(e.key)
            by_kind[kind] = by_kind.get(kind, 0.0) + 100 * e.self_device_time_total / total
        by_kind = {kind: round(share, 1) for kind, share in sorted(by_kind.items(), key=lambda item: -item[1])}
        by_kind["kernel_ms_per_step"] = round(total / 1e3 / 20, 3)
    print(json.dumps({"config": config["exp_name"], "variant": args.variant, "amp": t["amp"],
                      "samples_per_s": round(t["batch_size"] * args.steps / wall), "ms_per_step": round(1e3 * wall / args.steps, 3),
                      "setup_s": round(setup_s, 1), "peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                      "top_kernels_pct": top, "gpu_time_by_kind_pct": by_kind}))


if __name__ == "__main__":
    main()
