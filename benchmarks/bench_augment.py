"""Time each batched augmentation and the full Augmenter on (B, 1, 3000) batches.

    python benchmarks/bench_augment.py --device cpu [--threads 1]
    python benchmarks/bench_augment.py --device cuda

Each augmentation is timed applied to the whole batch (p = 1, uniforms drawn beforehand); the
Augmenter (drawing its uniforms) with the default config (all six, p = 0.5), once as implemented (compute for all, select with torch.where) and
once selecting the subset by index (nonzero + index_copy: less compute, but a host sync on CUDA),
and with --compile its RNG-free part `Augmenter.apply` through torch.compile (uniforms drawn beforehand).
"""
from __future__ import annotations

import argparse
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from training.augmentations import AUGMENTATION_FUNCTIONS, UNIFORMS, Augmenter  # noqa: E402
from training.config import AUGMENTATION_SCHEMA  # noqa: E402
from utils import fill_defaults  # noqa: E402


def milliseconds_per_call(function, device: torch.device, repeats: int) -> float:
    """ms per function() after warm-up: CUDA, mean over the loop timed with events; CPU, the best
    per-call wall time (as timeit advises: robust to other processes on a shared machine)."""
    for _ in range(3):
        function()
    if device.type == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        for _ in range(repeats):
            function()
        end.record()
        torch.cuda.synchronize(device)
        return start.elapsed_time(end) / repeats
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        function()
        times.append(time.perf_counter() - begin)
    return min(times) * 1e3


def augment_subset_by_index(augmenter: Augmenter, x: torch.Tensor, generator) -> torch.Tensor:
    """The alternative to torch.where: augment only the chosen rows (syncs on CUDA via nonzero)."""
    u = torch.rand(x.shape[0], augmenter.n_uniforms, generator=generator, device=x.device)
    for _, p, augment, columns in augmenter.steps:
        draw = u[:, columns]
        chosen = (draw[:, 0] < p).nonzero().squeeze(1)
        x = x.index_copy(0, chosen, augment(x[chosen], draw[chosen, 1:]))
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 512])
    parser.add_argument("--samples", type=int, default=3000, help="samples per epoch (T)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(Augmenter.apply)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    generator = torch.Generator(device=device).manual_seed(0)
    defaults = fill_defaults({}, AUGMENTATION_SCHEMA)
    augmenter = Augmenter(defaults)
    label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {label}; torch {torch.__version__}; T = {args.samples}; {args.repeats} calls each")
    print(f"{'batch':>6}  {'augmentation':<34} {'ms/batch':>9} {'samples/s':>12}")
    for batch_size in args.batch_sizes:
        x = torch.randn(batch_size, 1, args.samples, device=device, generator=generator)
        cases = {}
        for name, function in AUGMENTATION_FUNCTIONS.items():
            params = {key: value for key, value in defaults[name].items() if key != "p"}
            u = torch.rand(batch_size, UNIFORMS[name](params), device=device, generator=generator)
            cases[name] = partial(function, x, u, fs=100, **params)
        cases["Augmenter (p=0.5, torch.where)"] = lambda: augmenter(x, generator)
        cases["Augmenter (p=0.5, by index)"] = lambda: augment_subset_by_index(augmenter, x, generator)
        if args.compile:
            compiled = torch.compile(augmenter.apply, fullgraph=True, dynamic=False)
            u = torch.rand(batch_size, augmenter.n_uniforms, device=device, generator=generator)
            cases["Augmenter.apply, torch.compile"] = partial(compiled, x, u)
        for case, function in cases.items():
            ms = milliseconds_per_call(function, device, args.repeats)
            print(f"{batch_size:>6}  {case:<34} {ms:>9.3f} {batch_size / ms * 1e3:>12,.0f}")


if __name__ == "__main__":
    main()
