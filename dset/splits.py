"""Subject-wise K-fold splits: test sets partition the subjects; validation subjects come from the rest.

Both nights of a subject always land in the same split because splits are made over subject ids.
The committed folds are SleePyCo's published ones (dset/<dataset>/splits.json, Sleep-EDF-2018 and Sleep-EDF-2013);
random folds are for other data:

    python -m dset.splits --random --subjects 0-9 --num-folds 5 --dataset demo --out dset/demo/splits.json
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from utils import REPO_ROOT, atomic_write_bytes

# Sleep-EDF-2018 sleep-cassette: subjects 0-82 except the five ids PhysioNet does not have
SLEEP_EDF_2018_SUBJECTS = tuple(s for s in range(83) if s not in (39, 68, 69, 78, 79))
VAL_FRACTION = 0.1
PARTS = ("train", "val", "test")


def dataset_splits(dataset: str) -> Path:
    """The committed (or, for the demo, generated) splits file of `dataset`: dset/<dataset>/splits.json."""
    return REPO_ROOT / "dset" / dataset / "splits.json"


def check_splits(splits: dict, name: str = "splits") -> None:
    """ValueError naming the subject and fold unless each fold's splits are disjoint and every subject is tested once."""
    folds = splits.get("folds")
    if not isinstance(folds, dict) or not all(isinstance(f, dict) and set(f) == set(PARTS) for f in folds.values()):
        raise ValueError(f'{name}: needs "folds": {{"1": {{"train": [ids], "val": [ids], "test": [ids]}}, ...}}')
    if splits.get("num_folds", len(folds)) != len(folds):
        raise ValueError(f"{name}: num_folds is {splits['num_folds']} but it holds {len(folds)} folds")
    tested = {}
    for k, fold in folds.items():
        seen = {}
        for part in PARTS:
            for subject in fold[part]:
                if subject in seen:
                    raise ValueError(f"{name}: subject {subject} is in both {seen[subject]} and {part} of fold {k}")
                seen[subject] = part
        for subject in fold["test"]:
            if subject in tested:
                raise ValueError(f"{name}: subject {subject} is tested in fold {tested[subject]} and again in fold {k}")
            tested[subject] = k
    for k, fold in folds.items():
        never = sorted((set(fold["train"]) | set(fold["val"])) - set(tested))
        if never:
            raise ValueError(f"{name}: subject {never[0]} (in fold {k}) is never tested; each subject must be tested once")


def make_splits(subjects, num_folds: int = 10, seed: int = 0, n_val: int | None = None,
                dataset: str = "Sleep-EDF-2018") -> dict:
    """Folds "1".."K", each {"train", "val", "test"}: sorted subject ids, disjoint, covering all subjects.

    Subjects are shuffled with `seed` and cut into K near-equal test sets; each fold's `n_val` validation
    subjects (default: 10 % of the non-test subjects, at least 1) are drawn from its non-test subjects.
    """
    subjects = np.array(sorted(set(int(s) for s in subjects)))
    if not 2 <= num_folds <= subjects.size:
        raise ValueError(f"num_folds={num_folds}: needs 2 <= num_folds <= number of subjects ({subjects.size})")
    rng = np.random.default_rng(seed)
    test_sets = np.array_split(rng.permutation(subjects), num_folds)
    folds = {}
    for k, test in enumerate(test_sets, start=1):
        rest = np.setdiff1d(subjects, test)
        k_val = max(1, round(VAL_FRACTION * rest.size)) if n_val is None else n_val
        if not 0 <= k_val < rest.size:
            raise ValueError(f"n_val={k_val}: fold {k} has only {rest.size} non-test subjects")
        val = rng.choice(rest, k_val, replace=False)
        folds[str(k)] = {"train": sorted(np.setdiff1d(rest, val).tolist()), "val": sorted(val.tolist()),
                         "test": sorted(test.tolist())}
    return {"dataset": dataset, "num_folds": num_folds, "seed": seed, "folds": folds}


def splits_json(splits: dict) -> str:
    """Indented JSON with each subject list on one line, so a fold reads in a few lines."""
    head = [f"  {json.dumps(key)}: {json.dumps(value)}" for key, value in splits.items() if key != "folds"]
    folds = [f"    {json.dumps(k)}: {{\n" + ",\n".join(f"      {json.dumps(part)}: {json.dumps(ids)}" for part, ids in fold.items())
             + "\n    }" for k, fold in splits["folds"].items()]
    return "{\n" + ",\n".join(head) + ',\n  "folds": {\n' + ",\n".join(folds) + "\n  }\n}\n"


def write_splits(splits: dict, path: str | os.PathLike) -> None:
    atomic_write_bytes(path, splits_json(splits).encode())


def parse_ids(spec: str) -> list[int]:
    """'0-82' or '0,1,5' or '0-3,7' -> sorted ids."""
    ids = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        ids.update(range(int(lo), int(hi or lo) + 1))
    return sorted(ids)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write random subject-wise K-fold splits as JSON (for data without "
                                                 "published folds; Sleep-EDF's committed folds are SleePyCo's).")
    parser.add_argument("--random", action="store_true", required=True, help="draw the folds at random (required)")
    parser.add_argument("--subjects", default=None, help="ids like '0-82' (default: the 78 Sleep-EDF-2018 subjects)")
    parser.add_argument("--exclude", default="", help="ids to leave out, e.g. '39,68'")
    parser.add_argument("--num-folds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-val", type=int, default=None, help="validation subjects per fold (default 10%% of the rest)")
    parser.add_argument("--dataset", default="Sleep-EDF-2018")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    subjects = parse_ids(args.subjects) if args.subjects else SLEEP_EDF_2018_SUBJECTS
    subjects = sorted(set(subjects) - set(parse_ids(args.exclude) if args.exclude else []))
    write_splits(make_splits(subjects, args.num_folds, args.seed, args.n_val, args.dataset), args.out)
    print(f"wrote {args.num_folds} folds of {len(subjects)} subjects to {args.out}")


if __name__ == "__main__":
    main()
