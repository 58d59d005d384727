"""Stage a new night with a trained encoder and its saved probe, and draw its hypnogram.

    python predict.py --ckpt checkpoints/<exp>/ckpt_fold-01.pth --edf night-PSG.edf \
                      [--channel "EEG Fpz-Cz"] [--hypnogram night-Hypnogram.edf] [--out predictions/]

Reads any EDF/EDF+ with MNE, resamples the channel to 100 Hz, cuts 30-s epochs (from the recording start,
or from the hypnogram's first onset), standardises them with the checkpoint's training statistics and
stages them with the probe trained for that checkpoint (results/<exp>/probe_fold-0K.pt, or --probe).
Writes <night>_hypnogram.csv (onset, duration, stage, five probabilities), <night>_annotations.txt
(MNE annotations: mne.read_annotations), <night>_hypnogram.png and, with a hypnogram, <night>_metrics.json
(accuracy, macro-F1, Cohen's kappa, printed too).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dset.sleep_edf import DEFAULT_CHANNEL, PrepareError
from probing.staging import read_recording, stage_recording, write_outputs
from utils import select_device


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--ckpt", type=Path, required=True, help="checkpoints/<exp>/ckpt_fold-KK.pth")
    parser.add_argument("--edf", type=Path, required=True, help="the night's PSG (EDF or EDF+)")
    parser.add_argument("--channel", default=DEFAULT_CHANNEL, help=f"EEG channel (default: {DEFAULT_CHANNEL})")
    parser.add_argument("--hypnogram", type=Path, help="EDF+ hypnogram: epochs follow its onsets and are scored")
    parser.add_argument("--probe", type=Path, help="saved probe (default: results/<exp>/probe_fold-KK.pt)")
    parser.add_argument("--out", type=Path, default=Path("predictions"), help="output folder (default: predictions/)")
    parser.add_argument("--gpu", default="auto", help="auto, cpu or a CUDA device index (default: auto, CUDA 0 "
                        "when available, else the CPU)")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    try:
        device = select_device(args.gpu)
        recording = read_recording(args.edf, args.channel, args.hypnogram)
        probabilities = stage_recording(recording.x, args.ckpt, args.probe, device)
        outputs = write_outputs(recording, probabilities, args.out)
    except (PrepareError, FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"error: {exc}") from exc
    print(f"{recording.name}: {len(recording.x)} epochs of {args.channel} staged")
    if (metrics := outputs["metrics"]) is not None:
        kappa = "n/a" if metrics["kappa"] is None else f"{metrics['kappa']:.4f}"
        print(f"ACC {100 * metrics['accuracy']:.2f} %, MF1 {metrics['macro_f1']:.4f}, kappa {kappa} "
              f"over {metrics['n_epochs']} {metrics['epochs_scored']}")
    for path in outputs["files"].values():
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
