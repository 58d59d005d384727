"""A trained probe as plain data, so that a new night is staged without retraining (predict.py).

    results/<run>/probe_fold-0K.pt    torch.save of tensors, numbers, strings, lists and dicts only
                                      (readable with torch.load(weights_only=True)):
        format            1
        probe_config      the config's probe section it was trained with (type, context settings, ...)
        latent_dim        D
        state_dict        {name: tensor} of the head: linear / mlp layers, or the context model
        standardisation   {"mean": (D,), "std": (D,)}: the head sees (z - mean) / std
        checkpoint        {"exp_name", "fold", "paradigm", "input_norm", "weights_sha256"}: the encoder
                          state the probe was trained on (a SHA-256 over its state_dict)
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from utils import InputError, atomic_torch_save, fold_name, safe_torch_load

FORMAT = 1


def probe_path(out_dir: str | Path, fold: int) -> Path:
    return Path(out_dir) / f"probe_{fold_name(fold)}.pt"


def weights_sha256(state_dict: dict) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a state_dict's tensors, in order."""
    digest = hashlib.sha256()
    for name, tensor in state_dict.items():
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def checkpoint_info(encoder: nn.Module, input_norm: dict, config: dict, fold: int, paradigm: str) -> dict:
    """What a saved probe records of the encoder it was trained on."""
    return {"exp_name": config["exp_name"], "fold": int(fold), "paradigm": paradigm,
            "input_norm": {k: float(v) for k, v in input_norm.items()},
            "weights_sha256": weights_sha256(encoder.state_dict())}


def save_probe(path: str | Path, head: nn.Module, standardisation: dict, probe_config: dict, checkpoint: dict) -> None:
    """Write a trained probe: its head's weights, the latent standardisation, its config and encoder (atomic)."""
    mean = standardisation["mean"].detach().float().cpu()
    atomic_torch_save({
        "format": FORMAT,
        "probe_config": probe_config,
        "latent_dim": int(mean.numel()),
        "state_dict": {k: v.detach().cpu() for k, v in head.state_dict().items()},
        "standardisation": {"mean": mean, "std": standardisation["std"].detach().float().cpu()},
        "checkpoint": checkpoint,
    }, path)


class SavedProbe:
    """A loaded probe: probabilities of one night's latents (n, D), in order -> (n, 5)."""

    def __init__(self, record: dict, device="cpu"):
        from probing.context import ContextProbe, build_context_model
        from probing.probe import LatentProbe, build_head

        self.record, self.device = record, torch.device(device)
        config, dim = record["probe_config"], record["latent_dim"]
        self.is_context = config["type"] == "context"
        head = build_context_model(config, dim) if self.is_context else build_head(config["type"], dim)
        head.load_state_dict(record["state_dict"])
        probe = ContextProbe if self.is_context else LatentProbe
        self.probe = probe(head, record["standardisation"]["mean"], record["standardisation"]["std"])
        self.probe.to(self.device).eval()

    @property
    def checkpoint(self) -> dict:
        return self.record["checkpoint"]

    @torch.no_grad()
    def probabilities(self, z: np.ndarray) -> np.ndarray:
        z_t = torch.as_tensor(z, dtype=torch.float32, device=self.device)
        logits = self.probe(z_t, np.zeros(len(z), np.int64)) if self.is_context else self.probe(z_t)
        return torch.softmax(logits.float(), dim=1).cpu().numpy()


def load_probe(path: str | Path, device="cpu") -> SavedProbe:
    """The probe saved at `path`, loaded without running code (FileNotFoundError when absent, InputError for
    another format or a file holding anything but plain data)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no saved probe at {path}")
    record = safe_torch_load(path)
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise InputError(f"{path} is not a saved probe of format {FORMAT}: retrain it with classifier_training.py")
    return SavedProbe(record, device)
