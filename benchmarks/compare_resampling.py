"""How far the linear and the FFT (the reference's) resampling of time warp and cutout-resize lie apart, on real EEG.

    python benchmarks/compare_resampling.py [--edf ../shared/sleep-edf/real_psg/SC4001E0-PSG-short.edf] [--epochs 10]

Each 30-s Fpz-Cz epoch of the recording gets one random draw (the same for both methods); the script prints the
relative L2 difference ||linear - fft|| / ||fft|| per epoch (docs/DEVIATIONS.md, "time warp resampling").
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from training.augmentations import cutout_resize, time_warp  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edf", type=Path, default=REPO.parent / "shared/sleep-edf/real_psg/SC4001E0-PSG-short.edf")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not args.edf.is_file():
        sys.exit(f"error: {args.edf} not found; give a PSG with --edf")
    import mne

    raw = mne.io.read_raw_edf(args.edf, include=["EEG Fpz-Cz"], verbose="error")
    signal = raw.get_data()[0] * 1e6
    n = min(args.epochs, len(signal) // 3000)
    x = torch.tensor(signal[: n * 3000].reshape(n, 1, 3000))
    u = torch.rand(n, 4, generator=torch.Generator().manual_seed(args.seed), dtype=torch.float64)
    for name, augment, draw in (("time_warp", time_warp, u), ("cutout_resize", cutout_resize, u[:, :1])):
        params = {"n_segments": 4} | ({"min_scale": 0.5, "max_scale": 2.0} if name == "time_warp" else {})
        linear, fft = (augment(x, draw, fs=100, resample=r, **params) for r in ("linear", "fft"))
        relative = ((linear - fft).flatten(1).norm(dim=1) / fft.flatten(1).norm(dim=1)).numpy()
        print(f"{name:14s} relative L2 difference over {n} epochs: {relative.min():.1%} - {relative.max():.1%} "
              f"(median {np.median(relative):.1%})")


if __name__ == "__main__":
    main()
