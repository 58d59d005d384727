"""The paradigms: what each feeds the encoder and which loss it computes. The loop is shared.

Each paradigm is called as `loss, parts = paradigm(x, y)` with a standardised batch x (B, 1, T)
and its labels y (B,) (used by the supervised baseline only). `parts` holds every loss term
(detached) for logging.

    CRL         two augmented views -> encoder -> projection head -> NT-Xent(temperature)
    MP          masked input (samples, spans or tokens) -> encoder -> decoder -> loss on masked units
    Hybrid      MP loss + alpha_crl * CRL loss on the same batch
    Supervised  encoder -> linear classifier -> cross-entropy (the upper-reference baseline)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from loss import gather_with_grad, masked_reconstruction_loss, nt_xent
from training.augmentations import Augmenter


class Contrastive:
    def __init__(self, config: dict, model):
        params = config["ssl"]["params"]
        self.model = model
        self.augment = Augmenter(params["augmentations"], fs=config["data"]["sampling_rate"])
        self.temperature = params["temperature"]
        self.gather = gather_with_grad if params["gather_negatives"] else None

    def crl_loss(self, x: torch.Tensor) -> torch.Tensor:
        view1, view2 = self.augment(x), self.augment(x)
        z1 = self.model.project(self.model.encode(view1))
        z2 = self.model.project(self.model.encode(view2))
        return nt_xent(z1, z2, self.temperature, gather=self.gather)

    def __call__(self, x, y):
        loss = self.crl_loss(x)
        return loss, {"crl": loss.detach()}


class MaskedPrediction:
    def __init__(self, config: dict, model):
        data, params = config["data"], config["ssl"]["params"]
        self.model = model
        self.mask_ratio, self.masking, self.mask_span = data["masking_ratio"], data["masking"], data["mask_span"]
        self.kind = params["mp_loss"]

    def mp_loss(self, x: torch.Tensor) -> torch.Tensor:
        out = self.model.forward_mp(x, self.mask_ratio, self.masking, self.mask_span)
        return masked_reconstruction_loss(out["pred"], out["target"], out["mask"], kind=self.kind)

    def __call__(self, x, y):
        loss = self.mp_loss(x)
        return loss, {"mp": loss.detach()}


class Hybrid:
    def __init__(self, config: dict, model):
        self.contrastive = Contrastive(config, model)
        self.masked = MaskedPrediction(config, model)
        self.alpha = config["ssl"]["params"]["alpha_crl"]

    def __call__(self, x, y):
        mp, crl = self.masked.mp_loss(x), self.contrastive.crl_loss(x)
        loss = mp + self.alpha * crl
        return loss, {"mp": mp.detach(), "crl": crl.detach()}


class Supervised:
    def __init__(self, config: dict, model):
        self.model = model

    def __call__(self, x, y):
        loss = F.cross_entropy(self.model.classify(self.model.encode(x)).float(), y)
        return loss, {"ce": loss.detach()}


PARADIGMS = {"CRL": Contrastive, "MP": MaskedPrediction, "Hybrid": Hybrid, "Supervised": Supervised}
SCRIPTS = {"CRL": "train_crl.py", "MP": "train_mp.py", "Hybrid": "train_hybrid.py"}
