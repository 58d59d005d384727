"""configs/reference/: the reference implementation's effective behaviour, with config values alone.

The expected values are the reference code's (../shared/reference/README.md, "Reference settings that differ
from the seed page"): NT-Xent built with its default temperature 0.5, L2 over the visible samples at
"fixed_proportion_random" masking 0.25, alpha_crl 35, one 3000-sample token for the Transformer with the frame
backbone off and no CLS token (`use_cls: false`), validation every 1,298 mini-batches of the run (the MP Transformer every 325 with patience 8, the
Hybrid CNN_Attention every 649 with patience 5), and the MLP probe in
mini-batches of 128 on the raw latents, trained with plain cross-entropy (the reference's `CrossEntropyLoss` wraps
`nn.CrossEntropyLoss()` with no class weights).
"""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import load_config
from training.paradigms import PARADIGMS

REPO = Path(__file__).resolve().parents[1]
REFERENCE = sorted((REPO / "configs" / "reference").glob("DLPROJ_pretrain_*_Sleep-EDF-2018.json"))


def test_one_reference_config_per_shipped_config():
    shipped = sorted(p.name for p in (REPO / "configs").glob("DLPROJ_pretrain_*_Sleep-EDF-2018.json"))
    assert [p.name for p in REFERENCE] == shipped and len(shipped) == 9


@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: p.stem)
def test_reference_config_yields_the_references_effective_values(path):
    config = load_config(path)
    paradigm, arch = config["ssl"]["type"], config["backbone"]["type"]
    params, data, trainer = config["ssl"]["params"], config["data"], config["trainer"]
    assert config["exp_name"] != load_config(REPO / "configs" / path.name)["exp_name"]  # its own results folder
    if paradigm in ("CRL", "Hybrid"):
        assert (params["temperature"], params["validation_views"]) == (0.5, "identical")
        augmentations = params["augmentations"]
        assert (augmentations["time_warp"]["resample"], augmentations["cutout_resize"]["resample"]) == ("fft", "fft")
    if paradigm in ("MP", "Hybrid"):
        assert (data["masking"], data["masking_ratio"], params["mp_loss_on"]) == ("fixed_proportion_random", 0.25, "visible")
    if paradigm == "Hybrid":
        assert (params["alpha_crl"], params["hybrid_batch"]) == (35, "joint")  # one batch of 3B, as its train_hybrid.py
    if arch == "Transformer":
        assert config["backbone"]["params"]["use_signal_backbone"] is False
        assert config["backbone"]["params"]["patch_size"] == 3000  # one token per epoch
        assert config["backbone"]["params"]["cls_token"] is False  # its use_cls: false; the latent is that token
    # its configs' val_period and patience (Hybrid CNN_Attention's 649 / 5 is in its config, not in ../shared),
    # counted on a global step counter (train_iter % val_period == 0)
    expected_validation = {("MP", "Transformer"): (325, 8), ("Hybrid", "CNN_Attention"): (649, 5)}.get((paradigm, arch), (1298, 10))
    assert (trainer["val_period"], trainer["early_stopping_patience"], trainer["val_counter"]) == (*expected_validation, "global")
    assert (trainer["optimizer"], trainer["grad_clip"], trainer["batch_size"], trainer["val_batch_size"]) == ("adam", None, 128, 128)
    assert data["standardise"] is False  # the reference feeds raw µV
    probe = config["probe"]
    assert (probe["type"], probe["batch_size"], probe["standardise"], probe["class_weighting"]) == ("mlp", 128, False, "none")
    assert (probe["learning_rate"], probe["weight_decay"], probe["patience"]) == (1e-3, 1e-4, 10)


class Identity(torch.nn.Module):
    """A stand-in encoder: the latent of a (B, 1, D) view is its D values."""

    def encode(self, x):
        return x.flatten(1)

    def project(self, z):
        return z


def nt_xent_by_hand(z1: np.ndarray, z2: np.ndarray, tau: float) -> float:
    """SimCLR's loss written out: mean over the 2B anchors of -log(e^{s(i,p)/tau} / sum_{k != i} e^{s(i,k)/tau})."""
    z = np.concatenate([z1, z2])
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    n = len(z)
    losses = []
    for i in range(n):
        positive = (i + n // 2) % n
        others = sum(math.exp(z[i] @ z[k] / tau) for k in range(n) if k != i)
        losses.append(-math.log(math.exp(z[i] @ z[positive] / tau) / others))
    return float(np.mean(losses))


def test_reference_crl_loss_is_nt_xent_at_temperature_half():
    config = load_config(REPO / "configs" / "reference" / "DLPROJ_pretrain_CRL_CNN_Sleep-EDF-2018.json")
    z1 = np.array([[1.0, 0.0, 0.5], [0.2, 1.0, -0.3], [-0.7, 0.1, 0.9]])
    z2 = np.array([[0.9, 0.2, 0.4], [0.0, 1.1, -0.2], [-0.5, -0.2, 1.0]])
    loss = PARADIGMS["CRL"](config, Identity()).crl_loss(torch.tensor(z1)[:, None], torch.tensor(z2)[:, None])
    assert loss.item() == pytest.approx(nt_xent_by_hand(z1, z2, 0.5), rel=1e-6)
    assert loss.item() != pytest.approx(nt_xent_by_hand(z1, z2, 0.1), rel=1e-2)  # the seed page's value differs


@pytest.mark.parametrize("name", ["CRL_CNN_Attention", "Hybrid_CNN"])
def test_reference_validation_scores_each_unaugmented_epoch_against_itself(name):
    """The reference validates CRL (and Hybrid's CRL term) on identical views: NT-Xent of z against z."""
    config = load_config(REPO / "configs" / "reference" / f"DLPROJ_pretrain_{name}_Sleep-EDF-2018.json")
    x = torch.randn(4, 1, 3000, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    model = Identity()
    paradigm = PARADIGMS[config["ssl"]["type"]](config, model)
    crl = paradigm if name.startswith("CRL") else paradigm.contrastive
    model.eval()
    view1, view2 = paradigm.inputs(x, None)[-2:]
    assert crl.crl_loss(view1, view2).item() == pytest.approx(nt_xent_by_hand(x[:, 0].numpy(), x[:, 0].numpy(), 0.5), rel=1e-6)
    model.train()  # training views stay augmented
    assert not torch.equal(*paradigm.inputs(x, None)[-2:])
    fixed = load_config(REPO / "configs" / f"DLPROJ_pretrain_{name}_Sleep-EDF-2018.json")
    fixed_paradigm = PARADIGMS[fixed["ssl"]["type"]](fixed, model.eval())
    assert not torch.equal(*fixed_paradigm.inputs(x, None)[-2:])  # the fixed configs validate on augmented views


class FixedReconstruction(torch.nn.Module):
    """A stand-in MP model returning a known prediction, target and mask; records how it was asked to mask."""

    def __init__(self, pred, target, mask):
        super().__init__()
        self.out, self.calls = {"pred": pred, "target": target, "mask": mask}, []

    def forward_mp(self, x, ratio, masking, span, companions=None):
        self.calls.append((ratio, masking))
        return self.out


def test_reference_mp_loss_is_the_mean_squared_error_over_the_visible_samples():
    config = load_config(REPO / "configs" / "reference" / "DLPROJ_pretrain_MP_CNN_Sleep-EDF-2018.json")
    pred = torch.tensor([[[1.0], [2.0], [3.0], [4.0]]])  # (B=1, 4 samples, 1)
    target = torch.tensor([[[0.0], [0.0], [1.0], [1.0]]])
    mask = torch.tensor([[1.0, 0.0, 0.0, 1.0]])  # samples 0 and 3 masked, 1 and 2 visible
    model = FixedReconstruction(pred, target, mask)
    loss = PARADIGMS["MP"](config, model).mp_loss(torch.zeros(1, 1, 4))
    assert loss.item() == pytest.approx(((2 - 0) ** 2 + (3 - 1) ** 2) / 2)  # visible: 4 and 4 -> 4
    assert model.calls == [(0.25, "fixed_proportion_random")]
    fixed = load_config(REPO / "configs" / "DLPROJ_pretrain_MP_CNN_Sleep-EDF-2018.json")
    masked_loss = PARADIGMS["MP"](fixed, FixedReconstruction(pred, target, mask)).mp_loss(torch.zeros(1, 1, 4))
    assert masked_loss.item() == pytest.approx(((1 - 0) ** 2 + (4 - 1) ** 2) / 2)  # masked: 1 and 9 -> 5
