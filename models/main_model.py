"""The model factory: config -> SSLModel (backbone + the heads its paradigm needs).

    backbone         CNN, CNN_Attention or Transformer (BACKBONES); each class's PARAMS is the
                     schema of config["backbone"]["params"]
    decoder          inside the backbone, built for MP and Hybrid only
    projection_head  latent -> latent -> ReLU -> projection_dim (SimCLR MLP), CRL and Hybrid only
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
from training.config import SCHEMA, SSL_TYPES
from utils import STAGES, ConfigError, Field, fill_defaults, validate

BACKBONES: dict[str, type] = {"CNN": CNN, "CNN_Attention": CNNAttention, "Transformer": AutoEncoderViT}
DECODER_PARADIGMS = ("MP", "Hybrid")
PROJECTION_PARADIGMS = ("CRL", "Hybrid")


def backbone_problems(value, path: str = "backbone") -> list[str]:
    """Every problem of a config's backbone section: its type, its params, and their consistency."""
    if not isinstance(value, dict):
        return [f"{path}: expected an object with 'type' and 'params'"]
    problems = validate(value, {"type": Field(str, choices=tuple(BACKBONES)), "params": Field(dict, default={})}, path)
    kind, params = value.get("type"), value.get("params", {})
    if kind in BACKBONES and isinstance(params, dict):
        cls = BACKBONES[kind]
        problems += validate(params, cls.PARAMS, f"{path}.params") or cls.consistency_problems(
            fill_defaults(params, cls.PARAMS), f"{path}.params")
    return problems


class SSLModel(nn.Module):
    """A backbone with the heads of one paradigm. Inputs x are standardised epochs (B, C, T)."""

    def __init__(self, backbone: nn.Module, ssl_type: str, projection_dim: int = 128):
        super().__init__()
        self.backbone = backbone
        self.ssl_type = ssl_type
        self.latent_dim = backbone.latent_dim
        self.has_decoder = backbone.decoder is not None
        self.projection_head = None
        self.classifier = None
        if ssl_type in PROJECTION_PARADIGMS:
            self.projection_head = nn.Sequential(
                nn.Linear(self.latent_dim, self.latent_dim), nn.ReLU(inplace=True), nn.Linear(self.latent_dim, projection_dim)
            )
        if ssl_type == "Supervised":
            self.classifier = nn.Linear(self.latent_dim, len(STAGES))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, T) -> latent (B, latent_dim), no masking: what CRL, the probe and the embeddings use."""
        return self.backbone.encode(x)

    def project(self, z: torch.Tensor) -> torch.Tensor:
        """latent (B, latent_dim) -> (B, projection_dim)."""
        return self.projection_head(z)

    def classify(self, z: torch.Tensor) -> torch.Tensor:
        """latent (B, latent_dim) -> stage logits (B, 5)."""
        return self.classifier(z)

    def forward_mp(self, x: torch.Tensor, mask_ratio: float, masking: str, mask_span: int,
                   generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Masked prediction on x (B, C, T). Returns pred and target (B, N, P), mask (B, N) (1 = masked:
        the loss units), recon (B, C, T) and latent (B, latent_dim).

        random / span  masked samples are zeroed at the input and the whole signal is encoded and
                       decoded; the units are samples: pred = recon (B, T, C), target = x (B, T, C)
        token          (Transformer) tokens dropped before the encoder, MAE style; the units are
                       tokens: pred and target (B, L, C * W), target the framed input
        """
        if not self.has_decoder:
            raise RuntimeError(f"this {self.ssl_type} model was built without a decoder; masked prediction "
                               f"needs ssl.type in {list(DECODER_PARADIGMS)}")
        if masking == "token":
            problem = self.backbone.token_masking_problem(mask_ratio)
            if problem:
                raise ValueError(problem)
            return self.backbone.forward_token_masking(x, mask_ratio, generator)
        masked, mask = mask_input(x, mask_ratio, masking, mask_span, generator)
        recon, latent = self.backbone.reconstruct(masked)
        return {"pred": recon.transpose(1, 2), "target": x.transpose(1, 2), "mask": mask, "recon": recon, "latent": latent}


def build_model(config: dict) -> SSLModel:
    """The SSLModel of a config (validated or raw: missing backbone params take their defaults).

    Raises ConfigError naming the key path (backbone.type, backbone.params.X, ssl.type, ...).
    """
    ssl = config.get("ssl") or {}
    projection_dim = (ssl.get("params") or {}).get("projection_dim", SCHEMA["ssl"]["params"]["projection_dim"].default)
    problems = backbone_problems(config.get("backbone"))
    problems += validate({"type": ssl["type"]} if "type" in ssl else {}, {"type": Field(str, choices=SSL_TYPES)}, "ssl")
    problems += Field(int, min=1).problems(projection_dim, "ssl.params.projection_dim")
    if problems:
        raise ConfigError(problems, config.get("_source"))

    cls = BACKBONES[config["backbone"]["type"]]
    params = fill_defaults(config["backbone"].get("params", {}), cls.PARAMS)
    backbone = cls(**params, build_decoder=ssl["type"] in DECODER_PARADIGMS)
    data = fill_defaults(config.get("data", {}), SCHEMA["data"])
    if ssl["type"] in DECODER_PARADIGMS and data["masking"] == "token":
        problem = backbone.token_masking_problem(data["masking_ratio"])
        if problem:
            raise ConfigError([f"data.masking: {problem}"], config.get("_source"))
    return SSLModel(backbone, ssl["type"], projection_dim)
