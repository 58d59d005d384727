"""Load the prepared nights of a fold's subjects into one array per split.

    fold = load_fold(config["data"], fold=1)
    fold.train.x  (n, 3000) float32 µV     fold.train.y        (n,) int64 stage 0..4
    fold.train.subject (n,) int16          fold.train.night    (n,) int8

Only the split's subjects are read (SC4ssN*.npz in data.root_dir); each split is one preallocated array filled
night by night, so memory holds the split once plus one night.
"""
from __future__ import annotations

import json
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dset.splits import check_splits, dataset_splits
from utils import REPO_ROOT, InputError

EPOCH_SAMPLES = 3000
NIGHT_FILE = re.compile(r"^SC4(\d\d)(\d).*\.npz$")
PREPARE_HINT = ("prepare them with: python dset/Sleep-EDF-2018/prepare_sleep-edf-2018.py --data-dir dset/Sleep-EDF-2018/edf "
                "--out-dir {root} (or python -m dset.demo for the demo dataset)")
CORRUPT_HINT = "re-run prepare with --force"


def read_night(path: Path, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
    """Arrays `keys` (and those of `optional` present) of one prepared night; an InputError naming the file
    when it is corrupt, truncated or lacks a key."""
    try:
        with np.load(path, allow_pickle=False) as night:
            if missing := [k for k in keys if k not in night.files]:
                raise InputError(f"{path}: not a prepared night (lacks {', '.join(missing)}); {CORRUPT_HINT}")
            return {k: night[k] for k in keys + optional if k in night.files}
    except InputError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise InputError(f"{path}: corrupt or truncated NPZ ({type(exc).__name__}); {CORRUPT_HINT}") from exc


@dataclass
class Split:
    """Epochs of a set of subjects: x (n, 3000) float32, y (n,) int64, subject (n,) int16, night (n,) int8."""

    x: np.ndarray
    y: np.ndarray
    subject: np.ndarray
    night: np.ndarray

    def __len__(self) -> int:
        return len(self.y)


@dataclass
class FoldData:
    train: Split
    val: Split
    test: Split


def resolve(path: str | os.PathLike) -> Path:
    """An absolute path as is; a relative one against the current directory, then the repo root."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    return REPO_ROOT / path if (REPO_ROOT / path).exists() else path


def splits_path(data_cfg: dict) -> Path:
    """data.splits, or when it is null (or absent) the dataset's own file dset/<data.dataset>/splits.json."""
    return resolve(data_cfg.get("splits") or dataset_splits(data_cfg["dataset"]))


def read_splits(data_cfg: dict) -> dict:
    """The splits JSON of `data_cfg` (see splits_path), checked (check_splits) and matched to data.dataset and
    data.num_folds (unless null)."""
    path = splits_path(data_cfg)
    if not path.is_file():
        raise FileNotFoundError(f"data.splits: {path} not found (looked in {Path.cwd()} and {REPO_ROOT})")
    splits = json.loads(path.read_text())
    for key in ("dataset", "num_folds"):
        if data_cfg.get(key) is not None and splits.get(key) != data_cfg[key]:
            raise ValueError(f"data.{key} is {data_cfg[key]!r} but {path} was made for {key} {splits.get(key)!r} "
                             "(null data.splits and data.num_folds follow data.dataset)")
    check_splits(splits, str(path))
    return splits


def resolve_folds(data_cfg: dict) -> dict:
    """A copy of `data_cfg` with a null data.splits set to the dataset's file and a null data.num_folds to its
    number of folds. The file is read (and checked) when it exists; it may be absent (the demo's, not yet made)
    only if data.num_folds is set."""
    own = str(dataset_splits(data_cfg["dataset"]).relative_to(REPO_ROOT))
    data_cfg = dict(data_cfg, splits=data_cfg.get("splits") or own)
    if data_cfg.get("num_folds") is None or splits_path(data_cfg).is_file():
        data_cfg["num_folds"] = len(read_splits(data_cfg)["folds"])
    return data_cfg


def night_files(root_dir: Path, subjects) -> list[tuple[int, int, Path]]:
    """(subject, night, path) of every prepared night of `subjects`; FileNotFoundError naming the missing ones."""
    if not root_dir.is_dir():
        raise FileNotFoundError(f"data.root_dir: {root_dir} is not a folder of prepared nights; {PREPARE_HINT.format(root=root_dir)}")
    wanted = set(int(s) for s in subjects)
    files = sorted((int(m[1]), int(m[2]), p) for p in root_dir.iterdir() if (m := NIGHT_FILE.match(p.name)))
    files = [f for f in files if f[0] in wanted]
    missing = sorted(wanted - {s for s, _, _ in files})
    if missing:
        raise FileNotFoundError(f"no prepared night (SC4ssN*.npz) in {root_dir} for subject(s) {missing}; "
                         f"{PREPARE_HINT.format(root=root_dir)}")
    return files


def load_split(data_cfg: dict, subjects) -> Split:
    """All prepared nights of `subjects` from `data_cfg["root_dir"]`, in (subject, night) order.

    Nights are checked to hold `data_cfg["channel"]` (when both name a channel).
    """
    files = night_files(resolve(data_cfg["root_dir"]), subjects)
    labels = []
    for _, _, path in files:
        night = read_night(path, ("y",), optional=("ch_label",))
        if "ch_label" in night and "channel" in data_cfg and str(night["ch_label"]) != data_cfg["channel"]:
            raise InputError(f"{path} holds {night['ch_label']} but data.channel is {data_cfg['channel']!r}; "
                             f"point data.root_dir at the {data_cfg['channel']} folder")
        labels.append(night["y"].astype(np.int64))
    counts = [len(y) for y in labels]
    x = np.empty((sum(counts), EPOCH_SAMPLES), dtype=np.float32)
    start = 0
    for (_, _, path), n in zip(files, counts):
        night_x = read_night(path, ("x",))["x"]
        if night_x.shape != (n, EPOCH_SAMPLES):
            raise InputError(f"{path}: x has shape {night_x.shape}, expected ({n}, {EPOCH_SAMPLES}); {CORRUPT_HINT}")
        if not np.isfinite(night_x).all():
            bad = np.flatnonzero(~np.isfinite(night_x).all(axis=1))
            raise InputError(f"{path}: NaN or inf in {len(bad)} epoch(s), first at epoch index(es) "
                             f"{', '.join(map(str, bad[:5]))}; {CORRUPT_HINT}")
        x[start:start + n] = night_x
        start += n
    return Split(
        x=x,
        y=np.concatenate(labels) if labels else np.empty(0, np.int64),
        subject=np.repeat(np.array([s for s, _, _ in files], np.int16), counts),
        night=np.repeat(np.array([n for _, n, _ in files], np.int8), counts),
    )


def load_fold(data_cfg: dict, fold: int) -> FoldData:
    """Train, validation and test splits of fold `fold` (1..num_folds) of the config's splits file."""
    folds = read_splits(data_cfg)["folds"]
    if str(fold) not in folds:
        raise InputError(f"fold {fold} is not in {splits_path(data_cfg)} (folds {', '.join(folds)})")
    parts = folds[str(fold)]
    return FoldData(*(load_split(data_cfg, parts[name]) for name in ("train", "val", "test")))
