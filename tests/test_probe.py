"""The probe on frozen latents, label fractions, per-fold outputs, baselines and the classifier_training CLI."""
import copy
import json

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch import nn

from dset.loader import FoldData, Split  # plain containers; no data is read
from probing.baselines import BANDS, bandpower_features, bandpower_fold, bandpower_results_dir
from probing.probe import class_weights, fit_probe, label_subset, predict, probe_encoder, run_probe, score_supervised
from probing.results import load_fold_predictions, results_dir, write_results

PROBE = {"type": "linear", "epochs": 20, "batch_size": 64, "learning_rate": 5e-2, "weight_decay": 1e-4,
         "patience": 3, "class_weighting": "balanced", "label_fraction": 1.0, "run_after_pretraining": True,
         "standardise": True}
CONFIG = {"exp_name": "toy", "backbone": {"type": "CNN", "params": {}}, "trainer": {"seed": 0, "amp": False},
          "data": {"dataset": "demo", "sampling_rate": 100, "num_folds": 2}, "ssl": {"type": "CRL"}, "probe": PROBE}


def blobs(n: int, dim: int = 16, seed: int = 0, spread: float = 0.5):
    """Five well-separated Gaussian clusters: latents (n, dim) float32, labels (n,) int64."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(123).normal(0, 3, (5, dim))
    y = rng.integers(0, 5, n)
    return (centres[y] + rng.normal(0, spread, (n, dim))).astype(np.float32), y


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_probe_separates_toy_latents(kind):
    (z_tr, y_tr), (z_va, y_va), (z_te, y_te) = blobs(1500, seed=1), blobs(300, seed=2), blobs(600, seed=3)
    probe, summary = fit_probe(z_tr, y_tr, z_va, y_va, {**PROBE, "type": kind}, seed=0)
    assert np.mean(predict(probe, z_te) == y_te) > 0.95
    assert 1 <= summary["best_epoch"] <= summary["epochs_trained"] <= PROBE["epochs"]
    assert summary["n_train_labels"] == 1500


def test_probe_on_shuffled_labels_stays_near_chance():
    (z_tr, y_tr), (z_va, y_va), (z_te, y_te) = blobs(1500, seed=1), blobs(300, seed=2), blobs(2000, seed=3)
    rng = np.random.default_rng(0)
    probe, _ = fit_probe(z_tr, rng.permutation(y_tr), z_va, rng.permutation(y_va), PROBE, seed=0)
    accuracy = np.mean(predict(probe, z_te) == rng.permutation(y_te))
    assert accuracy < 0.3  # chance is 0.2; ±0.009 std on 2000 epochs


def test_probe_is_standardised_with_the_given_statistics():
    z, y = blobs(200)
    stats = z * 10 + 5
    probe, _ = fit_probe(z, y, z, y, {**PROBE, "epochs": 1}, seed=0, z_stats=stats)
    assert torch.allclose(probe.mean, torch.from_numpy(stats.mean(0)))
    assert torch.allclose(probe.std, torch.from_numpy(stats.std(0, ddof=1)))


def test_label_fraction_keeps_one_percent_and_every_stage():
    y = np.repeat(np.arange(5), [6030, 1000, 7960, 4880, 130])  # 20000 epochs, 130 REM
    subset = label_subset(y, 0.01, seed=3)
    assert len(subset) == 200 and len(np.unique(subset)) == 200
    counts = np.bincount(y[subset], minlength=5)
    assert counts.tolist() == [60, 10, 80, 49, 1]  # shares 60.3, 10, 79.6, 48.8, 1.3: largest remainders round up
    assert np.array_equal(subset, label_subset(y, 0.01, seed=3))
    assert not np.array_equal(subset, label_subset(y, 0.01, seed=4))
    rare = np.repeat(np.arange(5), [5000, 5000, 5000, 4999, 1])  # a single REM epoch is still kept
    assert np.bincount(rare[label_subset(rare, 0.01, seed=0)], minlength=5).min() == 1
    assert np.array_equal(label_subset(y, 1.0, seed=0), np.arange(len(y)))
    with pytest.raises(ValueError, match="label fraction"):
        label_subset(y, 0.0, seed=0)


def test_balanced_class_weights_follow_scikit_learn():
    y = np.repeat(np.arange(5), [50, 10, 100, 30, 10])
    expected = compute_class_weight("balanced", classes=np.arange(5), y=y)
    assert torch.allclose(class_weights(y, "balanced"), torch.tensor(expected, dtype=torch.float32))
    assert class_weights(y, "none") is None


# ----------------------------------------------------------------------------- one fold, end to end
def toy_split(n: int, seed: int, subjects=(0, 1)) -> Split:
    """Epochs (n, 3000) whose amplitude doubles with the stage; two subjects, one night each, in order."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 5, n)
    x = (rng.normal(0, 1, (n, 3000)) * 5 * 2.0 ** y[:, None]).astype(np.float32)
    subject = np.repeat(np.array(subjects, np.int16), [n // 2, n - n // 2])
    return Split(x, y, subject, np.ones(n, np.int8))


def toy_fold(seed: int) -> FoldData:
    return FoldData(train=toy_split(300, seed), val=toy_split(100, seed + 1, (2, 3)),
                    test=toy_split(120, seed + 2, (4, 5)))


class AmplitudeEncoder(nn.Module):
    """Stand-in for SSLModel: latent = (log std, its square, mean) of each epoch; a fixed head."""

    latent_dim = 3

    def __init__(self):
        super().__init__()
        self.classifier = nn.Linear(3, 5)

    def encode(self, x):  # (B, 1, T) -> (B, 3)
        log_std = x.std(dim=-1).log().squeeze(1)
        return torch.stack([log_std, log_std**2, x.mean(dim=(1, 2))], dim=1)

    def classify(self, z):  # (B, 3) -> (B, 5)
        return self.classifier(z)


NORM = {"mean": 0.0, "std": 10.0}


def test_probe_fold_writes_predictions_and_pooled_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = copy.deepcopy(CONFIG)
    folds = [probe_encoder(AmplitudeEncoder(), NORM, toy_fold(10 * k), config, k, "cpu", paradigm="CRL")["linear"]
             for k in (1, 2)]
    assert folds[0]["fold"] == 1 and folds[0]["classifier"] == "linear probe" and folds[0]["accuracy"] > 0.9
    out = tmp_path / "results" / "toy"
    assert sorted(p.name for p in out.iterdir()) == ["predictions_fold-01.npz", "predictions_fold-02.npz",
                                                         "probe_fold-01.pt", "probe_fold-02.pt"]
    with np.load(out / "predictions_fold-02.npz") as npz:
        assert npz["y_true"].shape == npz["y_pred"].shape == npz["subject"].shape == (120,)

    metrics = write_results(config)
    assert metrics["n_folds"] == 2 and metrics["folds"] == [1, 2] and metrics["n_epochs"] == 240
    assert metrics["probe"] == "linear" and metrics["label_fraction"] == 1.0 and metrics["paradigm"] == "CRL"
    assert metrics["per_fold"][1]["accuracy"] == pytest.approx(folds[1]["accuracy"])
    assert json.loads((out / "metrics.json").read_text())["pooled"] == metrics["pooled"]
    csv_lines = (out / "per_fold.csv").read_text().splitlines()
    assert csv_lines[0].startswith("fold,n_epochs,n_train_labels,accuracy") and len(csv_lines) == 3
    for png in ("confusion.png", "hypnogram.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"


def test_label_fraction_and_mlp_runs_get_their_own_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = copy.deepcopy(CONFIG)
    config["probe"] |= {"type": "mlp", "label_fraction": 0.1, "epochs": 3}
    fold = probe_encoder(AmplitudeEncoder(), NORM, toy_fold(0), config, 1, "cpu", paradigm="CRL")["mlp"]
    assert results_dir(config).name == "toy_mlp-probe_labels-0.1"
    assert fold["n_train_labels"] == 30 and fold["label_fraction"] == 0.1
    assert write_results(config)["classifier"] == "mlp probe"


def test_stale_predictions_of_another_classifier_are_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = copy.deepcopy(CONFIG)
    probe_encoder(AmplitudeEncoder(), NORM, toy_fold(0), config, 1, "cpu", paradigm="CRL")
    probe_encoder(AmplitudeEncoder(), NORM, toy_fold(0), config, 2, "cpu", paradigm="MP")
    with pytest.raises(ValueError, match="paradigm"):
        load_fold_predictions(results_dir(config))
    with pytest.raises(FileNotFoundError, match="no predictions"):
        load_fold_predictions(tmp_path / "empty")


def test_supervised_model_is_scored_by_its_own_head(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = copy.deepcopy(CONFIG)
    config |= {"exp_name": "toy_supervised", "ssl": {"type": "Supervised"}}
    model, data = AmplitudeEncoder().eval(), toy_fold(0)
    fold = score_supervised(model, NORM, data, config, 1, "cpu")
    with torch.no_grad():
        expected = model.classify(model.encode((torch.from_numpy(data.test.x) / 10).unsqueeze(1))).argmax(1)
    assert fold["accuracy"] == pytest.approx(np.mean(expected.numpy() == data.test.y))
    assert fold["classifier"] == "supervised head" and results_dir(config).name == "toy_supervised"
    assert (tmp_path / "results" / "toy_supervised" / "predictions_fold-01.npz").is_file()


# ----------------------------------------------------------------------------- band power baseline
# one frequency inside each band, away from its edges and off the 0.25-Hz Welch grid
BAND_TONES = {"delta": 2.1, "theta": 6.1, "alpha": 10.1, "sigma": 13.9, "beta": 22.3}


def test_a_sine_puts_its_power_a2_over_2_into_its_band():
    """x = A sin(2 pi f t) has mean power A^2 / 2 (µV²), all of it at f: the band holding f gets A^2 / 2
    within 1 %, every other band less than 0.1 % of it; log std is log(A / sqrt 2)."""
    amplitude, t = 20.0, np.arange(3000) / 100
    x = np.stack([amplitude * np.sin(2 * np.pi * f * t + 0.3) for f in BAND_TONES.values()]).astype(np.float32)
    features = bandpower_features(x, fs=100, chunk=2)  # chunks of 2: the batched path crosses a boundary
    power = np.exp(features[:, :5].astype(np.float64))  # (tone, band)
    assert list(BANDS) == list(BAND_TONES)
    for tone in range(5):
        assert power[tone, tone] == pytest.approx(amplitude**2 / 2, rel=0.01), list(BANDS)[tone]
        assert np.delete(power[tone], tone).max() < 1e-3 * amplitude**2 / 2, list(BANDS)[tone]
    assert features[:, 5] == pytest.approx(np.log(amplitude / np.sqrt(2)), abs=1e-3)


def test_bandpower_baseline_scores_a_fold(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fold = bandpower_fold(copy.deepcopy(CONFIG), 1, toy_fold(0))["bandpower"]
    assert fold["accuracy"] > 0.9 and fold["paradigm"] == "Band power" and fold["C"] in (0.01, 0.1, 1.0, 10.0)
    assert bandpower_results_dir(CONFIG).name == "Baseline_bandpower_demo"
    assert (tmp_path / "results" / "Baseline_bandpower_demo" / "predictions_fold-01.npz").is_file()


# ----------------------------------------------------------------------------- checkpoints
def save_checkpoint(path, config: dict, fold: int = 1):
    """A checkpoint in the documented format (training/checkpoint.py) of an untrained model."""
    main_model = pytest.importorskip("models.main_model", reason="models/ (build_model) is not importable yet")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": main_model.build_model(config).state_dict(), "config": config, "fold": fold,
                "input_norm": NORM, "epoch": 0, "step": 0, "val_loss": 1.0}, path)
    return path


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    pytest.importorskip("models.main_model", reason="models/ (build_model) is not importable yet")
    with pytest.raises(FileNotFoundError, match="checkpoint not found: .*nope.pth"):
        run_probe(CONFIG, 1, tmp_path / "nope.pth", "cpu")


def test_checkpoint_of_another_architecture_fold_or_paradigm_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "ckpt_fold-01.pth", CONFIG)
    transformer = copy.deepcopy(CONFIG)
    transformer["backbone"] = {"type": "Transformer", "params": {}}
    with pytest.raises(ValueError, match="does not match the config.*\n  backbone.type: checkpoint 'CNN', config 'Transformer'"):
        run_probe(transformer, 1, path, "cpu")
    with pytest.raises(ValueError, match="trained on fold 1, not fold 2"):
        run_probe(CONFIG, 2, path, "cpu")
    with pytest.raises(ValueError, match="is a CRL checkpoint but the config is a MP config \\(ssl.type\\)"):
        run_probe({**CONFIG, "ssl": {"type": "MP"}}, 1, path, "cpu")


# ----------------------------------------------------------------------------- CLI
def test_cli_probes_a_checkpoint_and_runs_baselines_on_a_tiny_dataset(tmp_path, monkeypatch, capsys):
    from classifier_training import main
    from tests.test_engine import make_config, write_tiny_dataset  # 8 subjects, 4 folds, prepared NPZ
    from training.config import load_config

    npz_dir, splits = write_tiny_dataset(tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    config_path = make_config((tmp_path, npz_dir, splits), "CRL")
    ckpt = save_checkpoint(tmp_path / "checkpoints" / "test_CRL_CNN" / "ckpt_fold-02.pth", load_config(config_path), 2)
    cli = ["--config", str(config_path), "--gpu", "cpu", "--probe", "linear"]

    main(cli + ["--encoder_ckpt", str(ckpt)])  # the fold (2) is read from the checkpoint
    metrics = json.loads((tmp_path / "results" / "test_CRL_CNN" / "metrics.json").read_text())
    assert metrics["folds"] == [2] and metrics["n_epochs"] == 48 and metrics["classifier"] == "linear probe"
    main(cli + ["--fold", "all", "--baseline", "bandpower"])
    assert json.loads((tmp_path / "results" / "Baseline_bandpower_demo" / "metrics.json").read_text())["n_folds"] == 4
    main(cli + ["--fold", "1", "--baseline", "random", "--label-fraction", "0.5"])
    random_init = json.loads((tmp_path / "results" / "test_CRL_CNN_random-init_labels-0.5" / "metrics.json")
                             .read_text())
    assert random_init["paradigm"] == "Random init" and random_init["per_fold"][0]["n_train_labels"] == 60
    with pytest.raises(SystemExit, match="ckpt_fold-01.pth"):  # --fold all needs every fold's checkpoint
        main(cli + ["--fold", "all"])
    capsys.readouterr()
    main(["--summarize"])
    assert len([line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]) == 1 + 3


def test_cli_summarize_and_argument_errors(tmp_path, monkeypatch, capsys):
    from classifier_training import main

    monkeypatch.chdir(tmp_path)
    config = copy.deepcopy(CONFIG)
    probe_encoder(AmplitudeEncoder(), NORM, toy_fold(0), config, 1, "cpu", paradigm="CRL")
    write_results(config)
    main(["--summarize"])
    assert "| CRL | CNN | linear probe | linear | 100% | 1 of 2 |" in capsys.readouterr().out
    assert (tmp_path / "results" / "summary.csv").is_file()
    with pytest.raises(SystemExit):
        main(["--encoder_ckpt", "x.pth"])  # no --config
    with pytest.raises(SystemExit):
        main(["--config", "c.json", "--fold", "1", "--baseline", "supervised", "--label-fraction", "0.1"])


# ----------------------------------------------------------------------------- protocol of issue 12, solvers of issue 15
def test_linear_probe_matches_scikit_learn_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    (z_tr, y_tr), (z_va, y_va), (z_te, y_te) = (blobs(n, spread=4.0, seed=s) for n, s in ((3000, 1), (500, 2), (3000, 3)))
    cfg = {**PROBE, "class_weighting": "none", "epochs": 100, "patience": 10, "weight_decay": 1e-3}
    probe, _ = fit_probe(z_tr, y_tr, z_va, y_va, cfg, seed=0)
    mean, std = z_tr.mean(0), z_tr.std(0, ddof=1)
    reference = LogisticRegression(C=1 / (cfg["weight_decay"] * len(z_tr)), max_iter=5000).fit((z_tr - mean) / std, y_tr)
    ours, theirs = predict(probe, z_te), reference.predict((z_te - mean) / std)
    assert 0.6 < np.mean(theirs == y_te) < 0.95  # overlapping classes: a test the solver can fail
    assert abs(np.mean(ours == y_te) - np.mean(theirs == y_te)) < 0.01
    assert np.mean(ours == theirs) > 0.97


def test_probe_keeps_its_lowest_validation_loss_and_stops_after_patience():
    (z_tr, y_tr), (z_va, y_va) = blobs(400, seed=1), blobs(300, seed=2)
    rng = np.random.default_rng(0)
    cfg = {**PROBE, "type": "mlp", "class_weighting": "none", "epochs": 200, "patience": 4, "batch_size": 32,
           "learning_rate": 1e-2}
    y_tr = rng.permutation(y_tr)  # shuffled labels: the validation loss bottoms out early, then rises
    probe, summary = fit_probe(z_tr, y_tr, z_va, y_va, cfg, seed=0)
    assert summary["epochs_trained"] == summary["best_epoch"] + cfg["patience"] < cfg["epochs"]
    with torch.no_grad():
        val_loss = nn.functional.cross_entropy(probe(torch.from_numpy(z_va)), torch.from_numpy(y_va)).item()
    assert val_loss == pytest.approx(summary["best_val_loss"], rel=1e-5)
    assert val_loss < np.log(5) + 0.05  # near the chance-level cross-entropy, not an overfit state


def test_both_probes_are_reported_by_default_each_in_its_folder(tmp_path, monkeypatch):
    from training.config import SCHEMA

    monkeypatch.chdir(tmp_path)
    assert SCHEMA["probe"]["type"].default == "both" and SCHEMA["probe"]["class_weighting"].default == "none"
    config = copy.deepcopy(CONFIG)
    config["probe"] |= {"type": "both", "epochs": 3}
    scores = probe_encoder(AmplitudeEncoder(), NORM, toy_fold(0), config, 1, "cpu", paradigm="CRL")
    assert sorted(scores) == ["linear", "mlp"]
    assert scores["mlp"]["classifier"] == "mlp probe" and scores["linear"]["classifier"] == "linear probe"
    assert (tmp_path / "results" / "toy" / "predictions_fold-01.npz").is_file()
    assert (tmp_path / "results" / "toy_mlp-probe" / "predictions_fold-01.npz").is_file()


def test_mlp_probe_is_the_references_dlprojmlp():
    """models/classifiers.py DLProjMLP of the reference: 128 -> 256 -> BN -> ReLU -> Dropout 0.5 -> 256 -> ... -> 5."""
    from probing.probe import build_head

    layers = list(build_head("mlp", 128))
    kinds = [type(layer).__name__ for layer in layers]
    assert kinds == ["Linear", "BatchNorm1d", "ReLU", "Dropout"] * 2 + ["Linear"]
    assert [(m.in_features, m.out_features) for m in layers if isinstance(m, nn.Linear)] == [(128, 256), (256, 256), (256, 5)]
    assert all(m.p == 0.5 for m in layers if isinstance(m, nn.Dropout))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_latents_are_float32_unless_the_encoder_trained_in_bf16():
    """trainer.amp false (the reference twins): the latents equal the fp32 encoder's; amp true: bf16's rounding."""
    from training.checkpoint import encode_array
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Flatten(), nn.Linear(300, 16)).cuda()
    encoder.encode, encoder.latent_dim = encoder.forward, 16
    x = np.random.default_rng(0).normal(size=(64, 300)).astype(np.float32)
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        with torch.no_grad():
            exact = encoder(torch.from_numpy(x).cuda()).cpu().numpy()
        fp32 = encode_array(encoder, x, {"mean": 0.0, "std": 1.0}, "cuda", amp=False)
        bf16 = encode_array(encoder, x, {"mean": 0.0, "std": 1.0}, "cuda", amp=True)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    np.testing.assert_allclose(fp32, exact, rtol=1e-5, atol=1e-5)
    assert np.abs(bf16 - exact).max() > 1e-3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphed_mlp_epochs_equal_eager_epochs():
    """Epochs 2+ replay one captured CUDA graph; without dropout (so both runs are deterministic) four epochs
    leave the same weights as four eager epochs, so every replay reads the fresh permutation of its epoch."""
    from probing.probe import _adam_epochs, build_head
    z, y = blobs(1000, seed=5)
    z, y = torch.from_numpy(z).cuda(), torch.from_numpy(y).cuda()
    cfg = {**PROBE, "type": "mlp", "batch_size": 96, "learning_rate": 1e-2}  # 10 full batches and one of 40
    weights = {}
    for graphed in (False, True):
        torch.manual_seed(0)
        head = build_head("mlp", 16)
        for layer in head:
            if isinstance(layer, nn.Dropout):
                layer.p = 0.0
        head = head.cuda().train()
        initial = head[0].weight.detach().clone()
        epoch = _adam_epochs(head, z, y, nn.CrossEntropyLoss(), cfg, seed=3, graphed=graphed)
        for _ in range(4):
            epoch()
        weights[graphed] = {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}
        assert (head[0].weight - initial).abs().max() > 1e-3  # it trained
    for key, eager in weights[False].items():
        torch.testing.assert_close(weights[True][key], eager, rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphed_mlp_probe_with_dropout_separates_toy_latents():
    (z_tr, y_tr), (z_va, y_va), (z_te, y_te) = blobs(1500, seed=1), blobs(300, seed=2), blobs(600, seed=3)
    probe, summary = fit_probe(z_tr, y_tr, z_va, y_va, {**PROBE, "type": "mlp", "learning_rate": 1e-3}, seed=0,
                               device="cuda")
    assert np.mean(predict(probe, z_te, "cuda") == y_te) > 0.95
    assert summary["epochs_trained"] >= 2  # at least one replayed epoch


def subspace_latents(n: int, seed: int):
    """128-D latents on a noisy 8-D subspace (ill-conditioned, as encoder latents are): (n, 128), (n,)."""
    rng, mixing = np.random.default_rng(seed), np.random.default_rng(99)
    centres, mix = mixing.normal(size=(5, 8)), mixing.normal(size=(8, 128))
    y = rng.integers(0, 5, n)
    z = (centres[y] + rng.normal(size=(n, 8))) @ mix + 0.3 * rng.normal(size=(n, 128))
    return ((z - z.mean(0)) / z.std(0)).astype(np.float32), y


@pytest.mark.parametrize("seed", [0, 4])
def test_linear_probe_epochs_reach_the_regularised_optimum_on_ill_conditioned_latents(seed):
    """torch's LBFGS with max_iter=1 and no max_eval gets no line-search evaluation past the unit step: on these
    latents it stalled 0.04-0.09 nats above the optimum. The optimum is scikit-learn's, evaluated in our objective."""
    from sklearn.linear_model import LogisticRegression

    from probing.probe import _lbfgs_epochs

    z, y = subspace_latents(2000, seed)
    weight_decay, z_t, y_t = 1e-4, torch.from_numpy(z), torch.from_numpy(y)

    def objective(head: nn.Linear) -> float:
        with torch.no_grad():
            penalty = 0.5 * weight_decay * sum(p.square().sum() for p in head.parameters())
            return float(nn.functional.cross_entropy(head(z_t), y_t) + penalty)

    torch.manual_seed(seed)
    head = nn.Linear(128, 5)
    epoch = _lbfgs_epochs(head, z_t, y_t, nn.CrossEntropyLoss(), weight_decay)
    for _ in range(60):
        epoch()
    reference = LogisticRegression(C=1 / (weight_decay * len(z)), max_iter=10_000, tol=1e-8).fit(z, y)
    optimum = nn.Linear(128, 5)
    optimum.weight.data, optimum.bias.data = (torch.tensor(a, dtype=torch.float32) for a in (reference.coef_, reference.intercept_))
    assert objective(head) < objective(optimum) + 1e-3
