"""Benchmark of the latent-space evaluation: wall time per stage and peak memory on synthetic embeddings.

    python benchmarks/bench_latent.py                      # 40000 x 128, 5 stages, default subsamples
    python benchmarks/bench_latent.py --n 200000 --map-points 3000

The embeddings are a Gaussian mixture with Sleep-EDF-like stage shares, written to a temporary
embeddings file and evaluated exactly as `latent_space_evaluator.py` does (metrics, three maps, plots).
Peak RSS is the process maximum (resource.getrusage), so it includes Python, torch and numba.
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

STAGE_SHARES = np.array([0.30, 0.07, 0.38, 0.10, 0.15])  # W, N1, N2, N3, REM: roughly Sleep-EDF's test folds


def gaussian_mixture(n: int, dim: int, seed: int, separation: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(n, dim) float32 points and (n,) stage labels: one unit-variance Gaussian per stage around a centre
    drawn from N(0, separation^2 I), stage sizes in Sleep-EDF proportions."""
    rng = np.random.default_rng(seed)
    stages = rng.choice(len(STAGE_SHARES), size=n, p=STAGE_SHARES)
    centres = rng.normal(scale=separation, size=(len(STAGE_SHARES), dim))
    z = centres[stages] + rng.normal(size=(n, dim))
    return z.astype(np.float32), stages.astype(np.int64)


def write_embeddings(path: Path, z: np.ndarray, stages: np.ndarray, fold: int = 1, exp_name: str = "bench") -> None:
    """An embeddings file in the training engine's format (subject and night are placeholders)."""
    import torch

    from utils import atomic_torch_save

    n = len(z)
    atomic_torch_save({"z": torch.from_numpy(z), "y": torch.from_numpy(stages),
                       "subject": torch.zeros(n, dtype=torch.int64), "night": torch.zeros(n, dtype=torch.int64),
                       "fold": fold, "exp_name": exp_name}, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=40_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--max-points", type=int, default=10_000)
    parser.add_argument("--map-points", type=int, default=5_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from latent_space_evaluation.evaluate import evaluate_run

    start = time.perf_counter()
    cpu_start = time.process_time()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "embeddings_fold-01.pt"
        write_embeddings(path, *gaussian_mixture(args.n, args.dim, args.seed))
        report = evaluate_run([path], "bench", Path(tmp) / "latent", args.max_points, args.map_points, args.seed,
                              progress=lambda line: None)
    wall = time.perf_counter() - start
    peak_rss_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB

    print(f"latent evaluation of {args.n} x {args.dim} embeddings (max_points={args.max_points}, "
          f"map_points={report['map_points']}, seed={args.seed})")
    for stage, seconds in report["timings_s"]["fold-01"].items():
        print(f"  {stage:<16} {seconds:7.1f} s")
    print(f"  {'total (wall)':<16} {wall:7.1f} s   (CPU {time.process_time() - cpu_start:.1f} s, incl. data, "
          f"imports, files, plots)")
    print(f"  peak RSS         {peak_rss_gib:7.2f} GiB")


if __name__ == "__main__":
    main()
