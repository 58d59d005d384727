"""The paradigms: what each feeds the encoder and which loss it computes. The loop is shared.

A paradigm has two parts, called by the engine as `loss, parts = paradigm.loss(*paradigm.inputs(x, y))`
on a standardised batch x (B, 1, T) and its labels y (B,):

    inputs(x, y)   what the encoder is fed: augmented views for CRL (random, batched on the device)
    loss(*inputs)  encoder -> heads -> loss; pure tensor code, the part the engine may torch.compile.
                   `parts` holds every loss term (detached) for logging.

    CRL         two augmented views -> encoder (one batch of 2B) -> [projection head] -> NT-Xent(temperature)
    MP          masked input (samples, spans or tokens) -> encoder -> decoder -> loss on the masked units
                (ssl.params.mp_loss_on 'visible' scores the others instead, as the reference did)
    Hybrid      MP loss + alpha_crl * CRL loss on the same batch (ssl.params.hybrid_batch 'joint': masked
                epochs and views through encoder and decoder as one batch of 3B, as the reference did)
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
        self.identical_validation_views = params["validation_views"] == "identical"

    def views(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Two augmented views of x; in validation with ssl.params.validation_views 'identical' (the
        reference's bug), x twice."""
        if self.identical_validation_views and not self.model.training:
            return x, x
        return self.augment(x), self.augment(x)

    def crl_loss(self, view1: torch.Tensor, view2: torch.Tensor) -> torch.Tensor:
        """Both views go through the encoder as one batch (SimCLR: BatchNorm sees all 2B views)."""
        return self.latent_loss(self.model.encode(torch.cat([view1, view2])))

    def latent_loss(self, latents: torch.Tensor) -> torch.Tensor:
        """NT-Xent of the latents (2B, D) of view 1 then view 2."""
        z1, z2 = self.model.project(latents).chunk(2)
        return nt_xent(z1, z2, self.temperature, gather=self.gather)

    def inputs(self, x, y):
        return self.views(x)

    def loss(self, view1, view2):
        loss = self.crl_loss(view1, view2)
        return loss, {"crl": loss.detach()}


class MaskedPrediction:
    def __init__(self, config: dict, model):
        data, params = config["data"], config["ssl"]["params"]
        self.model = model
        self.mask_ratio, self.masking, self.mask_span = data["masking_ratio"], data["masking"], data["mask_span"]
        self.kind = params["mp_loss"]
        self.score_visible = params["mp_loss_on"] == "visible"  # reproduces the reference's bug

    def forward_mp(self, x: torch.Tensor, companions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.model.forward_mp(x, self.mask_ratio, self.masking, self.mask_span, companions=companions)

    def mp_loss(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruction_loss(self.forward_mp(x))

    def reconstruction_loss(self, out: dict[str, torch.Tensor]) -> torch.Tensor:
        scored = 1 - out["mask"] if self.score_visible else out["mask"]
        return masked_reconstruction_loss(out["pred"], out["target"], scored, kind=self.kind)

    def inputs(self, x, y):
        return (x,)

    def loss(self, x):
        loss = self.mp_loss(x)
        return loss, {"mp": loss.detach()}


class Hybrid:
    def __init__(self, config: dict, model):
        self.contrastive = Contrastive(config, model)
        self.masked = MaskedPrediction(config, model)
        self.alpha = config["ssl"]["params"]["alpha_crl"]
        self.joint = config["ssl"]["params"]["hybrid_batch"] == "joint"

    def inputs(self, x, y):
        return (x, *self.contrastive.views(x))

    def loss(self, x, view1, view2):
        if self.joint:  # the reference's: masked x and both views as one batch of 3B through encoder and decoder
            out = self.masked.forward_mp(x, companions=torch.cat([view1, view2]))
            mp, crl = self.masked.reconstruction_loss(out), self.contrastive.latent_loss(out["companion_latent"])
        else:
            mp, crl = self.masked.mp_loss(x), self.contrastive.crl_loss(view1, view2)
        loss = mp + self.alpha * crl
        return loss, {"mp": mp.detach(), "crl": crl.detach()}


class Supervised:
    def __init__(self, config: dict, model):
        self.model = model

    def inputs(self, x, y):
        return x, y

    def loss(self, x, y):
        loss = F.cross_entropy(self.model.classify(self.model.encode(x)).float(), y)
        return loss, {"ce": loss.detach()}


PARADIGMS = {"CRL": Contrastive, "MP": MaskedPrediction, "Hybrid": Hybrid, "Supervised": Supervised}
SCRIPTS = {"CRL": "train_crl.py", "MP": "train_mp.py", "Hybrid": "train_hybrid.py"}
