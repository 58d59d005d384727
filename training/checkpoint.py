"""Checkpoint files and frozen-encoder inference shared by pretraining, the probe and the evaluators.

A checkpoint (`checkpoints/<exp_name>/ckpt_fold-01.pth`, the best state of a fold) is a dict:
    model         SSLModel.state_dict()
    config        the validated config it was trained with
    fold          fold number (1-based)
    input_norm    {"mean": float, "std": float}: x_model = (x_uV - mean) / std, from the training split
    epoch, step   position of this state in training
    val_loss      validation loss of this state
Only plain data (tensors, numbers, strings, lists, dicts) is saved, and every file is read with
weights_only=True (utils.safe_torch_load): loading a checkpoint from someone else never runs code.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from utils import InputError, embeddings_file_name, fold_name, safe_torch_load


def checkpoint_dir(config: dict) -> Path:
    """Run outputs (logs/, checkpoints/, results/) live under the current directory, as users expect."""
    return Path("checkpoints") / config["exp_name"]


def best_checkpoint_path(config: dict, fold: int) -> Path:
    return checkpoint_dir(config) / f"ckpt_{fold_name(fold)}.pth"


def embeddings_path(config: dict, fold: int) -> Path:
    return checkpoint_dir(config) / embeddings_file_name(fold)


def input_norm_of(x_train: np.ndarray, standardise: bool = True) -> dict:
    """{"mean", "std"} over every sample of the training split (µV), as a checkpoint stores it; with
    standardise false (data.standardise, the reference's raw µV), the identity {0, 1}."""
    if not standardise:
        return {"mean": 0.0, "std": 1.0}
    return {"mean": float(np.mean(x_train, dtype=np.float64)), "std": float(np.std(x_train, dtype=np.float64))}


def differing_keys(trained, wanted, path: str = "") -> list[str]:
    """'key.path: checkpoint A, config B' for every leaf where two nested config dicts differ."""
    if isinstance(trained, dict) and isinstance(wanted, dict):
        return [line for key in sorted(set(trained) | set(wanted), key=str)
                for line in differing_keys(trained.get(key), wanted.get(key), f"{path}.{key}" if path else str(key))]
    return [] if trained == wanted else [f"{path}: checkpoint {trained!r}, config {wanted!r}"]


def read_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict of `path`, loaded without running code (utils.safe_torch_load)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path} (train it first: python train_<paradigm>.py --config ...)")
    ckpt = safe_torch_load(path)
    if not isinstance(ckpt, dict) or not {"model", "config", "fold", "input_norm"} <= ckpt.keys():
        raise InputError(f"{path}: not a DeepSleepBench checkpoint (needs keys model, config, fold, input_norm)")
    config = ckpt["config"]
    if not (isinstance(config, dict) and isinstance(config.get("ssl"), dict) and "type" in config["ssl"]
            and isinstance(config.get("backbone"), dict) and isinstance(ckpt["fold"], int)):
        raise InputError(f"{path}: not a DeepSleepBench checkpoint (its config lacks ssl.type or backbone, or its "
                         "fold is not a number)")
    return ckpt


def load_checkpoint(path: str | Path, config: dict | None = None, device="cpu"):
    """Rebuild the model of a checkpoint. Returns (model in eval mode, checkpoint dict).

    With `config`, refuses a checkpoint whose paradigm (ssl.type) or backbone differs from the config's,
    naming each differing key on its own line, so a probe never silently scores the wrong model.
    """
    from models.main_model import build_model

    path = Path(path)
    ckpt = read_checkpoint(path)
    trained = ckpt["config"]
    if config is not None:
        if trained["ssl"]["type"] != config["ssl"]["type"]:
            raise InputError(f"{path} is a {trained['ssl']['type']} checkpoint but the config is a "
                             f"{config['ssl']['type']} config (ssl.type); pass the config it was trained with")
        if differences := differing_keys(trained["backbone"], config["backbone"], "backbone"):
            raise InputError(f"{path} does not match the config; pass the config it was trained with:\n  "
                             + "\n  ".join(differences))
    model = build_model(trained)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        raise InputError(f"{path} does not match the current model code for its config (trained with an older "
                         f"version of models/?); retrain it. Details: {str(exc).splitlines()[0]}") from exc
    return model.to(device).eval(), ckpt


@torch.no_grad()
def encode_array(model, x: np.ndarray, input_norm: dict, device, amp: bool, batch_size: int = 1024) -> np.ndarray:
    """Latents of a frozen encoder. x: (n, T) float32 µV -> (n, latent_dim) float32. `amp`: bf16 autocast on
    CUDA, as the encoder was trained (trainer.amp)."""
    model.eval()
    device = torch.device(device)
    latents = []
    for start in range(0, len(x), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(x[start : start + batch_size])).to(device)
        batch = ((batch - input_norm["mean"]) / input_norm["std"]).unsqueeze(1)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp and device.type == "cuda"):
            latents.append(model.encode(batch).float().cpu())
    return torch.cat(latents).numpy() if latents else np.zeros((0, model.latent_dim), np.float32)
