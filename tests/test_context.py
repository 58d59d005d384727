"""The sequence-context probe (probing/context.py): windows inside one night, and context that helps."""
import numpy as np
import pytest
import torch

from dset.demo import make_demo
from dset.loader import Split, load_split
from probing.baselines import bandpower_features
from probing.context import ContextProbe, build_context_model, fit_context_probe, night_ids, predict_context, window_index
from training.config import SCHEMA
from utils import fill_defaults

PROBE = fill_defaults({"epochs": 10, "patience": 5, "learning_rate": 3e-3,
                       "context": {"hidden_dim": 16, "heads": 4, "batch_size": 256}}, SCHEMA["probe"])


def test_window_index_stays_inside_each_night():
    night = np.array([0, 0, 0, 1, 1, 2])
    expected = [[-1, -1, 0, 1],   # L = 4: two epochs before the centre, one after
                [-1, 0, 1, 2],
                [0, 1, 2, -1],
                [-1, -1, 3, 4],
                [-1, 3, 4, -1],
                [-1, -1, 5, -1]]
    np.testing.assert_array_equal(window_index(night, 4), expected)
    np.testing.assert_array_equal(window_index(night, 1), np.arange(6)[:, None])


def test_nights_out_of_order_are_refused():
    assert night_ids(np.array([3, 3, 1, 1]), np.array([1, 2, 1, 1])).tolist() == [1, 2, 0, 0]
    with pytest.raises(ValueError, match="not consecutive"):
        night_ids(np.array([0, 1, 0]), np.array([1, 1, 1]))


@pytest.mark.parametrize("model", ["transformer", "gru"])
def test_no_window_sees_another_night(model):
    """Changing every latent of one night leaves the other nights' logits exactly as they were."""
    torch.manual_seed(0)
    cfg = {**PROBE, "context": {**PROBE["context"], "model": model, "length": 5}}
    probe = ContextProbe(build_context_model(cfg, 8), torch.zeros(8), torch.ones(8)).eval()
    night = np.repeat([0, 1, 2], [7, 3, 6])
    z = torch.randn(16, 8)
    changed = z.clone()
    changed[7:10] = torch.randn(3, 8) * 100
    before, after = probe(z, night), probe(changed, night)
    keep = night != 1
    torch.testing.assert_close(before[keep], after[keep], rtol=0, atol=1e-5)
    assert not torch.allclose(before[~keep], after[~keep])


@pytest.fixture(scope="module")
def demo_nights(tmp_path_factory):
    """Stand-in latents of 6 demo nights in night order (4 train, 1 validation, 1 test): standardised band
    powers plus noise twice their size, so that one epoch alone is hard to stage and its neighbours help."""
    demo = make_demo(tmp_path_factory.mktemp("ctx") / "demo", n_subjects=6, epochs_per_night=240, num_folds=2,
                     progress=False)
    data = {"root_dir": str(demo / "npz" / "Fpz-Cz")}
    splits = {name: load_split(data, subjects) for name, subjects in
              (("train", [0, 1, 2, 3]), ("val", [4]), ("test", [5]))}
    features = {name: bandpower_features(s.x) for name, s in splits.items()}
    mean, std = features["train"].mean(0), features["train"].std(0)
    rng = np.random.default_rng(0)
    return {name: ((f - mean) / std + rng.normal(0, 2.0, f.shape), splits[name]) for name, f in features.items()}


def _shuffled_within_nights(z, split, seed):
    rng = np.random.default_rng(seed)
    ids = night_ids(split.subject, split.night)
    order = np.concatenate([rng.permutation(np.flatnonzero(ids == i)) for i in np.unique(ids)])
    return z[order], Split(np.empty((len(order), 0)), split.y[order], split.subject[order], split.night[order])


def _context_accuracy(nights, shuffle: bool) -> float:
    parts = {name: _shuffled_within_nights(z, s, k) if shuffle else (z, s) for k, (name, (z, s)) in
             enumerate(nights.items())}
    (z_tr, tr), (z_va, va), (z_te, te) = parts["train"], parts["val"], parts["test"]
    probe, _ = fit_context_probe(z_tr, tr, np.arange(len(tr)), z_va, va, PROBE, seed=0)
    return float(np.mean(predict_context(probe, z_te, te) == te.y))


def test_shuffling_epochs_within_nights_lowers_context_accuracy(demo_nights):
    ordered, shuffled = _context_accuracy(demo_nights, False), _context_accuracy(demo_nights, True)
    assert ordered > shuffled + 0.1, (ordered, shuffled)  # measured 0.80 vs 0.52


class StdEncoder(torch.nn.Module):
    """Stand-in for SSLModel: latent = (log std, mean) of each epoch."""

    latent_dim = 2

    def __init__(self):
        super().__init__()
        self.unused = torch.nn.Linear(1, 1)  # gives the encoder a state to fingerprint

    def encode(self, x):  # (B, 1, T) -> (B, 2)
        return torch.stack([x.std(dim=-1).log().squeeze(1), x.mean(dim=(1, 2))], dim=1)


def _toy_split(seed: int, subjects) -> Split:
    """Two nights per split with runs of stages; the amplitude of an epoch grows with its stage."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.repeat(rng.integers(0, 5, 12), 5) for _ in subjects])
    x = (rng.normal(0, 1, (len(y), 3000)) * 2.0 ** y[:, None]).astype(np.float32)
    return Split(x, y, np.repeat(np.array(subjects, np.int16), len(y) // len(subjects)), np.ones(len(y), np.int8))


def test_context_probe_runs_in_the_fold_pipeline_and_its_saved_copy_stages_a_night(tmp_path, monkeypatch):
    from dset.loader import FoldData
    from probing.probe import probe_encoder
    from probing.saved_probe import load_probe

    monkeypatch.chdir(tmp_path)
    config = {"exp_name": "toy", "backbone": {"type": "CNN"}, "trainer": {"seed": 0, "amp": False}, "ssl": {"type": "CRL"},
              "data": {"dataset": "demo", "num_folds": 2}, "probe": {**PROBE, "type": "context"}}
    data = FoldData(_toy_split(0, (0, 1)), _toy_split(1, (2, 3)), _toy_split(2, (4, 5)))
    scores = probe_encoder(StdEncoder(), {"mean": 0.0, "std": 1.0}, data, config, 1, "cpu", paradigm="CRL")["context"]
    out = tmp_path / "results" / "toy_context-probe"
    assert scores["classifier"] == "context probe" and scores["n_epochs"] == 120
    saved = load_probe(out / "probe_fold-01.pt")
    assert saved.checkpoint["fold"] == 1 and saved.record["probe_config"]["context"]["length"] == 10
    night = data.test.subject == 5
    z = StdEncoder().encode(torch.from_numpy(data.test.x[night]).unsqueeze(1)).numpy()
    with np.load(out / "predictions_fold-01.npz") as npz:
        np.testing.assert_array_equal(saved.probabilities(z).argmax(1), npz["y_pred"][npz["subject"] == 5])
