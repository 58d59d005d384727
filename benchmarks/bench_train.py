"""Pretraining throughput (samples/s, data pipeline included) of configs, measured by the engine itself.

    python benchmarks/bench_train.py --data-root /data/npz --splits dset/Sleep-EDF-2018/splits.json \
        --steps 300 --gpu 0 [--configs configs/DLPROJ_pretrain_*.json] [--set trainer.compile=false]

Each config trains fold 1 for `--steps` mini-batches (batch size from the config, validation once at the
end) in a scratch directory; the engine's own timer (train_fold-01.json) gives steady-state samples/s,
excluding its first 25 steps (warm-up) and validation. Prints a Markdown table next to the reference
implementation's numbers (same data; the GPU of each is named).
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# the reference implementation's own pretraining throughput on this data, batch 128, samples/s
# (../shared/reference/README.md): on an H200 where it was measured there, else on an H100 (marked); MP
# CNN_Attention's H200 figure is this repo's benchmarks/reference_throughput/run.sh (BENCHMARKS.md, 2026-12-02)
REFERENCE = {("CRL", "CNN"): (2841, "H100"), ("CRL", "CNN_Attention"): (2375, "H200"), ("CRL", "Transformer"): (2200, "H200"),
             ("MP", "CNN"): (3836, "H200"), ("MP", "CNN_Attention"): (3342, "H200"), ("MP", "Transformer"): (4307, "H100"),
             ("Hybrid", "CNN"): (1631, "H200"), ("Hybrid", "CNN_Attention"): (1548, "H100"),
             ("Hybrid", "Transformer"): (1534, "H100")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", nargs="+", default=sorted(glob.glob(str(REPO / "configs/DLPROJ_pretrain_*.json"))))
    parser.add_argument("--data-root", required=True, help="folder of prepared NPZ nights")
    parser.add_argument("--splits", default=str(REPO / "dset/Sleep-EDF-2018/splits.json"))
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--gpu", default="0")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--json", help="write the results here as JSON")
    args = parser.parse_args()

    from training.config import load_config
    from training.engine import train_fold
    from utils import select_device

    device = select_device(args.gpu)
    rows = []
    scratch = tempfile.mkdtemp(prefix="bench_train_")
    here = os.getcwd()
    for path in args.configs:
        config = load_config(path, [f"data.root_dir={Path(args.data_root).resolve()}", f"data.splits={Path(args.splits).resolve()}",
                                    "trainer.max_epochs=1", f"trainer.max_steps_per_epoch={args.steps}", "trainer.val_period=0",
                                    "probe.run_after_pretraining=false", *args.overrides])
        os.chdir(scratch)
        try:
            train_fold(config, 1, device)
            summary = json.loads((Path("checkpoints") / config["exp_name"] / "train_fold-01.json").read_text())
        finally:
            os.chdir(here)
        key = (config["ssl"]["type"], config["backbone"]["type"])
        rows.append({"config": config["exp_name"], "paradigm": key[0], "backbone": key[1],
                     "batch": config["trainer"]["batch_size"], "samples_per_s": summary["train_samples_per_s"],
                     "reference": REFERENCE.get(key, (None, None))[0], "reference_gpu": REFERENCE.get(key, (None, None))[1],
                     "peak_gpu_memory_gb": summary["peak_gpu_memory_gb"],
                     "loop_wall_s": summary["wall_seconds"]})  # includes compilation and capture
        print(json.dumps(rows[-1]), flush=True)
        if args.json:  # after every config, so a run cut short still leaves its results
            Path(args.json).write_text(json.dumps(rows, indent=2))
    print("\n| config | batch | samples/s | reference (GPU) | speed-up | peak GPU memory (GB) |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        speedup = f"{r['samples_per_s'] / r['reference']:.1f}x" if r["reference"] and r["samples_per_s"] else "-"
        memory = f"{r['peak_gpu_memory_gb']:.2f}" if r["peak_gpu_memory_gb"] is not None else "-"
        print(f"| {r['config']} | {r['batch']} | {r['samples_per_s']:.0f} | {r['reference']} ({r['reference_gpu']}) | {speedup} | {memory} |")


if __name__ == "__main__":
    main()
