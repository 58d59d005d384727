#!/usr/bin/env python3
"""Steady-state pretraining throughput from a stamp.py log of the reference's train_mp.py.

usage: throughput.py LOG NAME [--batch 128] [--warmup 50] [--extra TEXT]

Train-phase progress records ('... Step: 33ms | Tot: 1s | Lr: ... | Loss: ... i/N') are told apart from the
validation ones by the reference's own prints: '[INFO] Starting evaluation...' opens a validation and
'... Eval-Loss: ...' closes it; '[INFO] Fold: 1, Epoch: E' opens a new epoch (new DataLoader iterator and
workers). Only the time between two consecutive train steps of the same stretch counts, so the validation
pass, the checkpoint save after it and each epoch's worker start-up are left out, and so is each epoch's
last (possibly partial) batch; the first WARMUP train steps of the run are dropped too.

  steady  = batch * (number of counted intervals) / (sum of their durations)   <- the headline figure
  median  = batch / median interval
  window  = batch * (train steps after warm-up) / (wall time from the warm-up's end to the last train step),
            validation and epoch restarts included
  refstep = batch / median of the reference's own 'Step:' field (its progress_bar timer, ms resolution)
"""
import argparse
import re
import statistics

REC = re.compile(r"Step: (\S+) \| Tot: (\S+) \|.*\s(\d+)/(\d+)$")
UNIT = re.compile(r"(\d+)(D|h|ms|m|s)")
MULT = {"D": 86400.0, "h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3}


def fmt_seconds(s):
    return sum(int(v) * MULT[u] for v, u in UNIT.findall(s))


def parse(path):
    steps = []          # (t, stretch id, i, step-field seconds) of train records
    phase, stretch, epochs, vals, total = "train", 0, 0, 0, None
    with open(path, errors="replace") as f:
        for line in f:
            t_str, _, text = line.rstrip("\n").partition("\t")
            try:
                t = float(t_str)
            except ValueError:
                continue
            if "[INFO] Fold:" in text and "Epoch:" in text:
                epochs += 1
                stretch += 1
                phase = "train"
                continue
            if "Starting evaluation" in text:
                vals += 1
                phase = "val"
                stretch += 1
                continue
            if "Eval-Loss" in text:
                phase = "train"
                stretch += 1
                continue
            m = REC.search(text)
            if m and phase == "train" and epochs > 0:
                steps.append((t, stretch, int(m.group(3)), fmt_seconds(m.group(1))))
                total = int(m.group(4))
    return steps, epochs, vals, total


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("log")
    parser.add_argument("name")
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--extra", default="")
    a = parser.parse_args()
    steps, epochs, vals, total = parse(a.log)
    head = f"{a.name}:"
    if len(steps) <= a.warmup + 2:
        print(f"{head} NO RESULT: only {len(steps)} train steps parsed (warm-up {a.warmup}); epochs {epochs}, "
              f"validations {vals}. {a.extra}".strip())
        return
    kept = steps[a.warmup:]
    dts = []
    for (t0, s0, i0, _), (t1, s1, i1, _) in zip(kept, kept[1:]):
        if s1 == s0 and i1 == i0 + 1 and i1 != total:  # an epoch's last batch may be partial
            dts.append(t1 - t0)
    sfield = sorted(x[3] for x in kept if x[3] > 0)
    steady = a.batch * len(dts) / sum(dts)
    median = a.batch / statistics.median(dts)
    full = sum(1 for x in kept[1:] if x[2] != total)  # an epoch's last batch may be partial: not counted
    window = a.batch * full / (kept[-1][0] - kept[0][0])
    refstep = a.batch / statistics.median(sfield) if sfield else float("nan")
    print(f"{head} steady {steady:.0f} samples/s (batch {a.batch} x {len(dts)} step intervals / {sum(dts):.1f} s; "
          f"first {a.warmup} train steps, validation passes and epoch starts excluded) | median-step {median:.0f} | "
          f"window {window:.0f} (incl. val+epoch restarts, {len(kept)} steps over {kept[-1][0] - kept[0][0]:.1f} s) | "
          f"ref-Step-field {refstep:.0f} | train steps {len(steps)}, train-batches/epoch {total}, epochs started "
          f"{epochs}, validations {vals} {a.extra}".strip())


if __name__ == "__main__":
    main()
