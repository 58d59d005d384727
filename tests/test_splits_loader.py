"""Subject-wise folds (dset/splits.py) and the fold loader (dset/loader.py)."""
import json
from pathlib import Path

import numpy as np
import pytest

from dset.loader import Split, load_fold, load_split, read_splits
from dset.splits import SLEEP_EDF_2018_SUBJECTS, make_splits, write_splits


def test_sleep_edf_2018_has_78_subjects():
    assert len(SLEEP_EDF_2018_SUBJECTS) == 78
    assert not {39, 68, 69, 78, 79} & set(SLEEP_EDF_2018_SUBJECTS)


@pytest.mark.parametrize("subjects, num_folds", [(SLEEP_EDF_2018_SUBJECTS, 10), (range(10), 5), (range(7), 3)])
def test_folds_are_disjoint_and_tests_partition_the_subjects(subjects, num_folds):
    splits = make_splits(subjects, num_folds, seed=3)
    folds = splits["folds"]
    assert list(folds) == [str(k) for k in range(1, num_folds + 1)]
    all_tests = []
    for fold in folds.values():
        train, val, test = (set(fold[p]) for p in ("train", "val", "test"))
        assert not train & val and not train & test and not val & test
        assert train | val | test == set(subjects)
        assert len(val) == max(1, round(0.1 * (len(subjects) - len(test))))
        all_tests += fold["test"]
    assert sorted(all_tests) == sorted(subjects)
    sizes = [len(f["test"]) for f in folds.values()]
    assert max(sizes) - min(sizes) <= 1


def test_seed_changes_the_folds_and_n_val_is_respected():
    a, b = make_splits(range(20), 4, seed=0), make_splits(range(20), 4, seed=1)
    assert a["folds"] != b["folds"]
    assert make_splits(range(20), 4, seed=0) == a
    assert all(len(f["val"]) == 3 for f in make_splits(range(20), 4, seed=0, n_val=3)["folds"].values())
    with pytest.raises(ValueError, match="num_folds=30"):
        make_splits(range(20), 30)


# ----------------------------------------------------------------------------- loader
def _night(folder: Path, subject: int, night: int, n: int) -> None:
    """A fake prepared night whose x encodes (subject, night, epoch) so the loader's order can be checked."""
    x = np.zeros((n, 3000), np.float32)
    x[:, 0], x[:, 1], x[:, 2] = subject, night, np.arange(n)
    np.savez(folder / f"SC4{subject:02d}{night}E0.npz", x=x, y=(np.arange(n) % 5).astype(np.int64),
             ch_label=np.array("EEG Fpz-Cz"))


@pytest.fixture()
def prepared(tmp_path):
    """Subjects 0-5 (subject 3 has only night 1, as some Sleep-EDF subjects) and a 3-fold splits file."""
    root = tmp_path / "npz"
    root.mkdir()
    for subject in range(6):
        for night in (1, 2) if subject != 3 else (1,):
            _night(root, subject, night, n=10 + subject + night)
    write_splits(make_splits(range(6), 3, seed=0, dataset="demo"), tmp_path / "splits.json")
    return {"root_dir": str(root), "splits": str(tmp_path / "splits.json"), "dataset": "demo", "num_folds": 3,
            "channel": "EEG Fpz-Cz"}


def test_load_split_concatenates_the_subjects_nights_in_order(prepared):
    split = load_split(prepared, [4, 1, 3])
    expected = [(s, n, 10 + s + n) for s in (1, 3, 4) for n in (1, 2) if (s, n) != (3, 2)]
    assert len(split) == sum(k for _, _, k in expected)
    assert split.x.dtype == np.float32 and split.x.shape == (len(split), 3000) and split.x.flags["C_CONTIGUOUS"]
    assert split.y.dtype == np.int64 and split.subject.dtype == np.int16 and split.night.dtype == np.int8
    np.testing.assert_array_equal(split.x[:, 0], split.subject)
    np.testing.assert_array_equal(split.x[:, 1], split.night)
    np.testing.assert_array_equal(split.x[:, 2], np.concatenate([np.arange(k) for _, _, k in expected]))
    np.testing.assert_array_equal(split.y, np.concatenate([np.arange(k) % 5 for _, _, k in expected]))


def test_load_fold_gives_the_splits_subjects(prepared):
    folds = json.loads(Path(prepared["splits"]).read_text())["folds"]
    for k in (1, 2, 3):
        data = load_fold(prepared, k)
        for name in ("train", "val", "test"):
            split = getattr(data, name)
            assert isinstance(split, Split)
            assert sorted(set(split.subject.tolist())) == folds[str(k)][name]


def test_relative_paths_resolve_against_cwd_then_repo_root(prepared, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    relative = dict(prepared, root_dir="npz", splits="splits.json")
    assert len(load_fold(relative, 1).test) > 0
    committed = {"splits": "dset/Sleep-EDF-2018/splits.json", "dataset": "Sleep-EDF-2018", "num_folds": 10}
    assert len(read_splits(committed)["folds"]) == 10                     # not in tmp_path: found in the repo


def test_missing_nights_name_the_subjects_and_the_prepare_command(prepared):
    with pytest.raises(FileNotFoundError, match=r"subject\(s\) \[7, 9\].*prepare_sleep-edf-2018.py"):
        load_split(prepared, [1, 7, 9])
    with pytest.raises(FileNotFoundError, match="not a folder of prepared nights"):
        load_split(dict(prepared, root_dir=prepared["root_dir"] + "-absent"), [1])


def test_bad_fold_and_mismatched_config_are_clear_errors(prepared):
    with pytest.raises(ValueError, match=r"fold 4 is not in .*splits.json \(folds 1, 2, 3\)"):
        load_fold(prepared, 4)
    with pytest.raises(ValueError, match="data.num_folds is 10"):
        load_fold(dict(prepared, num_folds=10), 1)
    with pytest.raises(ValueError, match="data.dataset is 'Sleep-EDF-2018'"):
        load_fold(dict(prepared, dataset="Sleep-EDF-2018"), 1)
    with pytest.raises(ValueError, match="holds EEG Fpz-Cz but data.channel is 'EEG Pz-Oz'"):
        load_fold(dict(prepared, channel="EEG Pz-Oz"), 1)
    with pytest.raises(FileNotFoundError, match="data.splits"):
        load_fold(dict(prepared, splits="absent.json"), 1)
