"""Sequence-context probe: a small temporal model over L consecutive frozen latents of one night.

    probe.type "context"        each epoch is classified from the window of L = probe.context.length latents
                                around it (L//2 before it, L - L//2 - 1 after it), as in SleePyCo's
                                frozen-backbone protocol (L = 10)
    probe.context.model         "transformer" (pre-norm encoder, learned positions, key-padding mask)
                                or "gru" (bidirectional GRU; the validity mask is an extra input feature)

A window never leaves its epoch's night: positions past a night's edge are zero-filled and masked.
The encoder stays frozen; its latents (n, D) are standardised with training-split statistics, kept on
the device, and gathered into windows (B, L, D) per mini-batch of probe.context.batch_size epochs.
Only labelled epochs (a label fraction) are classified in training; any latent may serve as context.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn
from tqdm.auto import tqdm

from utils import STAGES, InputError


def night_ids(subject: np.ndarray, night: np.ndarray) -> np.ndarray:
    """(n,) int64 id of each epoch's night (subject, night); epochs of one night must be consecutive."""
    pairs = np.stack([np.asarray(subject, np.int64), np.asarray(night, np.int64)], axis=1)
    ids = np.unique(pairs, axis=0, return_inverse=True)[1].reshape(-1)
    if np.count_nonzero(np.diff(ids)) != len(np.unique(ids)) - 1:
        raise ValueError("the epochs of a night are not consecutive: the context probe needs each night in order")
    return ids


def window_index(night_id: np.ndarray, length: int) -> np.ndarray:
    """(n, L) int64 index of each epoch's window into the n epochs; -1 where it leaves the epoch's night."""
    n = len(night_id)
    index = np.arange(n)[:, None] + (np.arange(length) - length // 2)
    clipped = index.clip(0, max(n - 1, 0))
    inside = (index == clipped) & (night_id[clipped] == night_id[:, None])
    return np.where(inside, index, -1)


def gather_windows(z: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents z (n, D) and window indices (B, L) -> windows (B, L, D), zero outside the night, and valid (B, L)."""
    valid = index >= 0
    return z[index.clamp_min(0)] * valid.unsqueeze(-1), valid


class ContextModel(nn.Module):
    """Windows of standardised latents (B, L, D) and their validity (B, L) -> logits (B, 5) of the centre epoch."""

    def __init__(self, latent_dim: int, length: int, model: str, hidden_dim: int, layers: int, heads: int,
                 dropout: float, n_classes: int = len(STAGES)):
        super().__init__()
        self.kind, self.length, self.centre = model, length, length // 2
        self.embed = nn.Linear(latent_dim, hidden_dim)
        if model == "transformer":
            if hidden_dim % heads:
                raise ValueError(f"probe.context.heads: {heads} does not divide probe.context.hidden_dim {hidden_dim}")
            self.position = nn.Parameter(torch.randn(length, hidden_dim) * 0.02)
            layer = nn.TransformerEncoderLayer(hidden_dim, heads, 2 * hidden_dim, dropout, batch_first=True,
                                               norm_first=True)
            self.temporal = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        elif model == "gru":
            self.temporal = nn.GRU(hidden_dim + 1, hidden_dim // 2, layers, batch_first=True, bidirectional=True,
                                   dropout=dropout if layers > 1 else 0.0)
        else:
            raise ValueError(f"probe.context.model: {model!r} is not one of ['transformer', 'gru']")
        self.norm = nn.LayerNorm(hidden_dim if model == "transformer" else 2 * (hidden_dim // 2))
        self.classify = nn.Linear(self.norm.normalized_shape[0], n_classes)

    def forward(self, windows: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        h = self.embed(windows) * valid.unsqueeze(-1)
        if self.kind == "transformer":
            h = self.temporal(h + self.position, src_key_padding_mask=~valid)
        else:
            h = self.temporal(torch.cat([h, valid.unsqueeze(-1).to(h.dtype)], dim=-1))[0]
        return self.classify(self.norm(h[:, self.centre]))


def build_context_model(probe_cfg: dict, latent_dim: int) -> ContextModel:
    c = probe_cfg["context"]
    return ContextModel(latent_dim, c["length"], c["model"], c["hidden_dim"], c["layers"], c["heads"], c["dropout"])


class ContextProbe(nn.Module):
    """Standardisation + ContextModel over whole nights: latents (n, D), night ids (n,) -> logits (n, 5)."""

    def __init__(self, head: ContextModel, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.head = head
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    @torch.no_grad()
    def forward(self, z: torch.Tensor, night_id: np.ndarray, batch_size: int = 8192) -> torch.Tensor:
        index = torch.as_tensor(window_index(night_id, self.head.length), device=z.device)
        return _window_logits(self.head, (z - self.mean) / self.std, index, batch_size)


def _window_logits(head: ContextModel, z: torch.Tensor, index: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([head(*gather_windows(z, index[start : start + batch_size]))
                      for start in range(0, len(index), batch_size)])


def fit_context_probe(z_train: np.ndarray, train, labelled: np.ndarray, z_val: np.ndarray, val, probe_cfg: dict,
                      seed: int, device="cpu") -> tuple[ContextProbe, dict]:
    """Train the context probe; return it at its best validation macro-F1, and a training summary.

    z_train, z_val: latents (n, D) of the Splits `train`, `val` (their y, subject, night, in night order);
    `labelled`: indices of the training epochs whose labels are used. Stops after probe.patience epochs in
    which neither the validation macro-F1 nor the validation loss improved, as the per-epoch probes do.
    """
    from probing.probe import EMPTY_VALIDATION, class_weights

    if len(z_val) == 0:
        raise InputError(EMPTY_VALIDATION)
    device, context = torch.device(device), probe_cfg["context"]
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    z_train_t = torch.as_tensor(z_train, dtype=torch.float32, device=device)
    mean, std = z_train_t.mean(0), z_train_t.std(0).clamp_min(1e-6)
    probe = ContextProbe(build_context_model(probe_cfg, z_train_t.shape[1]), mean, std).to(device)
    head = probe.head
    z_train_t = (z_train_t - mean) / std
    z_val_t = (torch.as_tensor(z_val, dtype=torch.float32, device=device) - mean) / std
    train_index = torch.as_tensor(window_index(night_ids(train.subject, train.night), context["length"])[labelled],
                                  device=device)
    val_index = torch.as_tensor(window_index(night_ids(val.subject, val.night), context["length"]), device=device)
    y_train = torch.as_tensor(train.y[labelled], dtype=torch.long, device=device)
    y_val_t = torch.as_tensor(val.y, dtype=torch.long, device=device)
    weights = class_weights(train.y[labelled], probe_cfg["class_weighting"])
    loss_fn = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))
    optimizer = torch.optim.AdamW(head.parameters(), lr=probe_cfg["learning_rate"],
                                  weight_decay=probe_cfg["weight_decay"])
    n, batch_size = len(train_index), context["batch_size"]

    best = {"val_macro_f1": -1.0, "val_loss": float("inf"), "epoch": 0}
    best_state, stale, epoch, lowest_loss = None, 0, 0, float("inf")
    bar = tqdm(range(1, probe_cfg["epochs"] + 1), desc="context probe", unit="epoch", leave=False)
    for epoch in bar:
        head.train()
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n, batch_size):
            batch = order[start : start + batch_size]
            loss = loss_fn(head(*gather_windows(z_train_t, train_index[batch])), y_train[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        head.eval()
        with torch.no_grad():
            logits = _window_logits(head, z_val_t, val_index, batch_size=8192)
        val_loss = float(loss_fn(logits, y_val_t))
        val_f1 = f1_score(val.y, logits.argmax(1).cpu().numpy(), average="macro", zero_division=0)
        bar.set_postfix(val_mf1=f"{val_f1:.3f}", val_loss=f"{val_loss:.3f}")
        stale = 0 if val_f1 > best["val_macro_f1"] or val_loss < lowest_loss else stale + 1
        lowest_loss = min(lowest_loss, val_loss)
        if val_f1 > best["val_macro_f1"]:
            best = {"val_macro_f1": float(val_f1), "val_loss": val_loss, "epoch": epoch}
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        if stale >= probe_cfg["patience"]:
            break
    head.load_state_dict(best_state)
    summary = {"best_epoch": best["epoch"], "epochs_trained": epoch, "best_val_macro_f1": best["val_macro_f1"],
               "best_val_loss": best["val_loss"], "n_train_labels": int(n)}
    return probe.eval(), summary


def predict_context(probe: ContextProbe, z: np.ndarray, split, device="cpu") -> np.ndarray:
    """Stage labels (n,) int64 of a Split's latents z (n, D) (its nights in order) through a context probe."""
    z_t = torch.as_tensor(z, dtype=torch.float32, device=torch.device(device))
    return probe(z_t, night_ids(split.subject, split.night)).argmax(1).cpu().numpy().astype(np.int64)
