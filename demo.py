"""The newcomer's first run: the whole pipeline on a small synthetic dataset, on CPU, in a few minutes.

    python demo.py                 # CPU
    python demo.py --gpu 0         # same on a GPU

It runs, and prints, exactly the commands a user runs on Sleep-EDF:
  1. make the demo dataset (synthetic nights in the Sleep-EDF EDF layout) and prepare it to NPZ
  2. pretrain a CNN with each paradigm (MP, CRL, Hybrid) on fold 1, each followed by the probe
     (--overwrite: a rerun of the demo replaces the previous demo runs)
  3. the band-power baseline on the same fold
  4. the latent-space evaluation of each run, and the Key Results table
The demo data is synthetic: its numbers prove the pipeline runs, not how well a model stages real sleep.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent
PARADIGMS = {"MP": "train_mp.py", "CRL": "train_crl.py", "Hybrid": "train_hybrid.py"}


def run(command: list[str]) -> None:
    print(f"\n$ {' '.join(command)}", flush=True)
    started = time.perf_counter()
    if subprocess.run([sys.executable, *command], cwd=REPO).returncode:
        sys.exit(f"error: the demo stopped at: python {' '.join(command)} (its message is above)")
    print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu", default="cpu", help="auto, cpu or a CUDA device index (default: cpu)")
    parser.add_argument("--paradigms", nargs="+", default=list(PARADIGMS), choices=list(PARADIGMS))
    args = parser.parse_args()

    started = time.perf_counter()
    run(["-m", "dset.demo", "--out", "dset/demo"])
    configs = [f"configs/demo/DEMO_{paradigm}_CNN.json" for paradigm in args.paradigms]
    for paradigm, config in zip(args.paradigms, configs):
        run([PARADIGMS[paradigm], "--config", config, "--gpu", args.gpu, "--fold", "1", "--overwrite"])
    run(["classifier_training.py", "--config", configs[0], "--baseline", "bandpower", "--fold", "1"])
    for config in configs:
        run(["latent_space_evaluator.py", "--config", config, "--fold", "1"])
    run(["latent_space_evaluator.py", "--summarize"])
    run(["classifier_training.py", "--summarize"])
    print(f"\nDemo finished in {time.perf_counter() - started:.0f} s. Look at:\n"
          "  results/summary.md              Key Results table (synthetic demo data: not real-EEG accuracy)\n"
          "  results/<exp>/confusion.png     confusion matrices, hypnogram.png: true vs predicted night\n"
          "  results/<exp>/latent/maps.png   PCA / t-SNE / UMAP maps of the test-set latents\n"
          "  tensorboard --logdir logs/      training curves")


if __name__ == "__main__":
    main()
