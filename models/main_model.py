"""The model factory: config -> SSLModel (backbone + the heads its paradigm needs).

    backbone         CNN, CNN_Attention or Transformer (BACKBONES); each class's PARAMS is the
                     schema of config["backbone"]["params"]
    decoder          inside the backbone, built for MP and Hybrid only
    projection_head  CRL and Hybrid with ssl.params.projection_head: latent -> latent -> ReLU -> projection_dim
                     (SimCLR MLP); off by default, as in the reference code (NT-Xent on the latent itself)
    classifier       latent -> 5 sleep stages (linear), Supervised only

Every backbone offers encode(x), reconstruct(x) and token_masking_problem(ratio); the Transformer
also forward_token_masking(x, ratio). SSLModel.forward_mp turns them into the masked-prediction
output that loss.py consumes.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from models.cnn import CNN
from models.cnn_attention import CNNAttention
from models.masking import mask_input
from models.transformer import AutoEncoderViT
from utils import STAGES, ConfigError, Field, fill_defaults, validate

BACKBONES: dict[str, type] = {"CNN": CNN, "CNN_Attention": CNNAttention, "Transformer": AutoEncoderViT}
SSL_TYPES = ("CRL", "MP", "Hybrid", "Supervised")
DECODER_PARADIGMS = ("MP", "Hybrid")
PROJECTION_PARADIGMS = ("CRL", "Hybrid")
HEAD_PARAMS = {  # the heads' part of config["ssl"]["params"] (training/config.py includes it in its schema)
    "projection_head": Field(bool, False, doc="CRL/Hybrid: an MLP head between the latent and NT-Xent (SimCLR); "
                                               "the reference has none"),
    "projection_dim": Field(int, 128, min=1, doc="output width of the projection head"),
}


def backbone_params(kind: str, params: dict) -> dict:
    """`params` of backbone `kind` with every missing value filled: from its preset, then from PARAMS."""
    cls = BACKBONES[kind]
    preset = params.get("preset", cls.PARAMS["preset"].default)
    return fill_defaults({**cls.PRESETS.get(preset, {}), **params}, cls.PARAMS)


def build_backbone(kind: str, params: dict, build_decoder: bool) -> nn.Module:
    """Backbone `kind` from its default-filled params (backbone_params); the preset has done its work there."""
    return BACKBONES[kind](**{k: v for k, v in params.items() if k != "preset"}, build_decoder=build_decoder)


def backbone_problems(value, path: str = "backbone") -> list[str]:
    """Every problem of a config's backbone section: its type, its params, and their consistency."""
    if not isinstance(value, dict):
        return [f"{path}: expected an object with 'type' and 'params'"]
    problems = validate(value, {"type": Field(str, choices=tuple(BACKBONES)), "params": Field(dict, default={})}, path)
    kind, params = value.get("type"), value.get("params", {})
    if kind in BACKBONES and isinstance(params, dict):
        cls = BACKBONES[kind]
        problems += validate(params, cls.PARAMS, f"{path}.params") or cls.consistency_problems(
            backbone_params(kind, params), f"{path}.params")
    return problems


class SSLModel(nn.Module):
    """A backbone with the heads of one paradigm. Inputs x are standardised epochs (B, C, T)."""

    def __init__(self, backbone: nn.Module, ssl_type: str, projection_head: bool = False, projection_dim: int = 128):
        super().__init__()
        self.backbone = backbone
        self.ssl_type = ssl_type
        self.latent_dim = backbone.latent_dim
        self.has_decoder = backbone.decoder is not None
        self.projection_head = None
        self.classifier = None
        if ssl_type in PROJECTION_PARADIGMS and projection_head:
            self.projection_head = nn.Sequential(
                nn.Linear(self.latent_dim, self.latent_dim), nn.ReLU(inplace=True), nn.Linear(self.latent_dim, projection_dim)
            )
        if ssl_type == "Supervised":
            self.classifier = nn.Linear(self.latent_dim, len(STAGES))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, T) -> latent (B, latent_dim), no masking: what CRL, the probe and the embeddings use."""
        return self.backbone.encode(x)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """latent (B, latent_dim) -> (B, projection_dim), or the latent itself without a projection head."""
        return z if self.projection_head is None else self.projection_head(z)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """latent (B, latent_dim) -> stage logits (B, 5)."""
        return self.classifier(z)

    def forward_mp(self, x: torch.Tensor, mask_ratio: float, masking: str, mask_span: int,
                   generator: torch.Generator | None = None, companions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Masked prediction on x (B, C, T). Returns pred and target (B, N, P), mask (B, N) (1 = masked:
        the loss units), recon (B, C, T) and latent (B, latent_dim). `companions` (M, C, T), unmasked, go
        through encoder and decoder in the same batch as the masked x (the reference's Hybrid); their
        latents are returned as companion_latent (M, latent_dim).

        random / span  masked samples are zeroed at the input and the whole signal is encoded and
                       decoded; the units are samples: pred = recon (B, T, C), target = x (B, T, C)
        token          (Transformer) tokens dropped before the encoder, MAE style; the units are
                       tokens: pred and target (B, L, C * W), target the framed input
        """
        if not self.has_decoder:
            raise RuntimeError(f"this {self.ssl_type} model was built without a decoder; masked prediction "
                               f"needs ssl.type in {list(DECODER_PARADIGMS)}")
        if masking == "token":
            if companions is not None:
                raise ValueError("token masking cannot share its batch with unmasked companions")
            if problem := self.backbone.token_masking_problem(mask_ratio):
                raise ValueError(problem)
            return self.backbone.forward_token_masking(x, mask_ratio, generator)
        masked, mask = mask_input(x, mask_ratio, masking, mask_span, generator)
        recon, latent = self.backbone.reconstruct(masked if companions is None else torch.cat([masked, companions]))
        n = len(x)
        out = {"pred": recon[:n].transpose(1, 2), "target": x.transpose(1, 2), "mask": mask, "recon": recon[:n],
               "latent": latent[:n]}
        if companions is not None:
            out["companion_latent"] = latent[n:]
        return out


def build_model(config: dict) -> SSLModel:
    """The SSLModel of a config (validated or raw: missing backbone and head params take their defaults).

    Raises ConfigError naming the key path (backbone.type, backbone.params.X, ssl.type, ...).
    """
    ssl = config.get("ssl") or {}
    heads = {key: value for key, value in (ssl.get("params") or {}).items() if key in HEAD_PARAMS}
    problems = backbone_problems(config.get("backbone"))
    problems += validate({"type": ssl["type"]} if "type" in ssl else {}, {"type": Field(str, choices=SSL_TYPES)}, "ssl")
    problems += validate(heads, HEAD_PARAMS, "ssl.params")
    if problems:
        raise ConfigError(problems, config.get("_source"))

    kind = config["backbone"]["type"]
    params = backbone_params(kind, config["backbone"].get("params", {}))
    backbone = build_backbone(kind, params, build_decoder=ssl["type"] in DECODER_PARADIGMS)
    return SSLModel(backbone, ssl["type"], **fill_defaults(heads, HEAD_PARAMS))
