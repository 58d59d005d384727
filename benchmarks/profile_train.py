"""Where a training step's time goes: PyTorch profiler over the engine's own train_step.

    python benchmarks/profile_train.py --config configs/DLPROJ_pretrain_Hybrid_CNN_Sleep-EDF-2018.json --gpu 0 \
        [--steps 50] [--set trainer.compile=false]

Runs the same pieces as training/engine.py (device-resident batch indexing, the paradigm's objective, the
optimiser step) on random µV-scale data, then prints the top operators by device time, the wall time per
step and the share of it the GPU spent in kernels (low = the GPU waits on the host: launch overhead).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def synthetic_training(config: dict, device) -> Callable[[int], None]:
    """run(steps): `steps` of the engine's own train_step on random µV-scale data resident on `device` (the
    paradigm's objective, compiled and captured as a CUDA graph where the config says so), synchronised."""
    import torch

    one_step = synthetic_step(config, device)

    def run(steps: int) -> None:
        for _ in range(steps):
            one_step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return run


def synthetic_step(config: dict, device, capture_stream=None) -> Callable[[], None]:
    """step(): enqueue one of the engine's train_steps (see synthetic_training) on the current stream, without
    synchronising; its model, optimiser and 20,000 random epochs are its own. `capture_stream`: the CUDA
    stream its graph is captured on (default: torch's one capture stream, shared by every graph)."""
    import torch

    from models.main_model import build_model
    from training.engine import (GraphedStep, build_objective, make_optimizer, standardised_batch, train_step,
                                 use_fast_cuda_kernels)

    if device.type == "cuda":
        use_fast_cuda_kernels()
    t = config["trainer"]
    torch.manual_seed(0)
    model = build_model(config).to(device)
    objective = build_objective(config, model, compile=t["compile"] and device.type == "cuda")
    use_graphs = t["cuda_graphs"] and device.type == "cuda"
    optimizer = make_optimizer(config, model, capturable=use_graphs)
    x = torch.randn(20_000, 3000, device=device) * 30
    y = torch.randint(0, 5, (20_000,), device=device)
    norm = {"mean": 0.0, "std": 30.0}
    use_amp = t["amp"] and device.type == "cuda"
    first = torch.arange(t["batch_size"], device=device)
    step = (GraphedStep(objective, optimizer, model, standardised_batch(x, first, norm), y[first], use_amp, t["grad_clip"],
                        capture_stream=capture_stream) if use_graphs else lambda xb, yb: train_step(objective, optimizer, xb, yb, use_amp, t["grad_clip"]))

    def one_step() -> None:
        idx = torch.randint(0, len(x), (t["batch_size"],), device=device)
        step(standardised_batch(x, idx, norm), y[idx])

    return one_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--gpu", default="0")
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--rows", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=30, help="steps before timing (autotuning, compilation)")
    args = parser.parse_args()

    from torch.profiler import ProfilerActivity, profile

    from training.config import load_config
    from utils import select_device

    config = load_config(args.config, args.overrides)
    device = select_device(args.gpu)
    t = config["trainer"]
    use_graphs = t["cuda_graphs"] and device.type == "cuda"
    run = synthetic_training(config, device)
    run(args.warmup)
    started = time.perf_counter()
    run(args.steps)
    wall = time.perf_counter() - started
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        run(args.steps)
    averages = prof.key_averages()
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    print(averages.table(sort_by=sort, row_limit=args.rows))
    per_step_ms = 1e3 * wall / args.steps
    print(f"{config['exp_name']}: batch {t['batch_size']}, cuda_graphs={use_graphs}, {per_step_ms:.2f} ms/step, "
          f"{t['batch_size'] * args.steps / wall:.0f} samples/s (unprofiled)")
    if device.type == "cuda":
        kernel_ms = sum(e.self_device_time_total for e in averages) / 1e3 / args.steps
        launches = sum(e.count for e in averages if e.device_type.name == "CUDA") / args.steps
        print(f"GPU kernel time {kernel_ms:.2f} ms/step ({100 * kernel_ms / per_step_ms:.0f}% of the step), "
              f"{launches:.0f} kernels/step")


if __name__ == "__main__":
    main()
