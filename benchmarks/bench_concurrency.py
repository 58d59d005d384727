"""Is one training run filling the GPU? Aggregate samples/s of K concurrent copies of the engine's step.

    python benchmarks/bench_concurrency.py --config configs/DLPROJ_pretrain_Hybrid_CNN_Sleep-EDF-2018.json \
        --gpu 0 --replicas 1 2 4 [--modes interleaved threads] [--batch 128] [--seconds 20]

Each replica is profile_train.synthetic_step's: its own model, optimiser and random µV-scale data, the engine's
compiled step replayed as a CUDA graph, on its own CUDA stream. Modes: interleaved (one thread enqueues every
replica's steps in turn, so their kernels may run side by side), threads (one thread per replica, as folds
trained in threads would be) and serial (in turn, each step finished before the next starts). A larger --batch
tells whether one step's kernels are too small for the GPU. `--start-at` (a Unix time) lets separately started
processes time the same window, to measure processes sharing one GPU.

Prints one JSON line per K and mode: aggregate samples/s over --seconds after --warmup steps per replica, and peak memory.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch


def timed_steps(steps: list, streams: list, seconds: float, mode: str) -> tuple[int, float]:
    """Run the replicas' steps, each on its stream, for about `seconds`: (total steps done, seconds taken).
    mode: interleaved (enqueued in turn from this thread), threads (one thread each) or serial (in turn, each
    step finished before the next replica's starts: never side by side)."""
    started = time.perf_counter()
    stop = started + seconds
    counts = [0] * len(steps)

    def loop(k: int) -> None:
        with torch.cuda.stream(streams[k]):
            while time.perf_counter() < stop:
                for _ in range(10):
                    steps[k]()
                counts[k] += 10
                streams[k].synchronize()

    if mode == "threads":
        workers = [threading.Thread(target=loop, args=(k,)) for k in range(len(steps))]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    else:
        while time.perf_counter() < stop:
            for _ in range(10):
                for step, stream in zip(steps, streams):
                    with torch.cuda.stream(stream):
                        step()
                    if mode == "serial":
                        stream.synchronize()
            counts = [c + 10 for c in counts]
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    return sum(counts), time.perf_counter() - started


def emit(row: dict, path: str | None) -> None:
    """Print `row` as one JSON line, and append it to the file at `path` when given."""
    line = json.dumps(row)
    print(line, flush=True)
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--gpu", default="0")
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--shared-capture-stream", dest="own_capture_stream", action="store_false",
                        help="capture every replica's graph on torch's one default capture stream (default: each "
                             "on its own stream)")
    parser.add_argument("--batch", type=int, help="trainer.batch_size (default: the config's)")
    parser.add_argument("--modes", nargs="+", choices=["interleaved", "threads", "serial"], default=["interleaved"],
                        help="interleaved: one host thread enqueues every replica's steps in turn; threads: one thread "
                             "each; serial: in turn, each step finished before the next starts")
    parser.add_argument("--warmup", type=int, default=20, help="untimed steps per replica after its capture")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--start-at", type=float, help="Unix time at which to start timing (after setup)")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", help="append the JSON lines to this file")
    args = parser.parse_args()

    from benchmarks.profile_train import synthetic_step
    from training.config import load_config
    from utils import select_device

    overrides = args.overrides + ([f"trainer.batch_size={args.batch}"] if args.batch else [])
    config = load_config(args.config, overrides)
    device = select_device(args.gpu)
    if device.type != "cuda":
        raise SystemExit("bench_concurrency.py measures CUDA streams: give it a GPU (--gpu 0)")
    batch = config["trainer"]["batch_size"]
    steps, streams = [], []
    for k in sorted(args.replicas):
        started = time.perf_counter()
        while len(steps) < k:  # replicas are kept: K=4 reuses the two of K=2
            streams.append(torch.cuda.Stream())
            steps.append(synthetic_step(config, device, capture_stream=streams[-1] if args.own_capture_stream else None))
            for _ in range(args.warmup):
                steps[-1]()
        torch.cuda.synchronize()
        setup_s = time.perf_counter() - started
        if args.start_at:
            time.sleep(max(0.0, args.start_at - time.time()))
        for mode in args.modes if k > 1 else args.modes[:1]:
            began = time.time()
            done, wall = timed_steps(steps[:k], streams[:k], args.seconds, mode)
            row = {"config": config["exp_name"], "replicas": k, "batch": batch, "mode": mode,
                   "samples_per_s": round(batch * done / wall), "steps": done, "setup_s": round(setup_s, 1),
                   "timed_from": round(began, 1),
                   "peak_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)}
            emit(row, args.json)


if __name__ == "__main__":
    main()
