"""Linear evaluation: a classifier trained on the frozen latents of a pretrained encoder.

For one fold: encode the train/val/test epochs once (latents cached in memory), train the probe on
(a label fraction of) the training subjects, keep the epoch with the best validation macro-F1
(early stopping), and score it on the fold's test subjects. A model pretrained with labels
(ssl.type "Supervised") is scored with its own classifier head instead.

    probe.type "linear"  one linear layer on standardised latents: the true linear evaluation
    probe.type "mlp"     128 -> 256 -> 256 -> 5 with BatchNorm, ReLU, Dropout 0.5 (the seed's probe)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn
from tqdm.auto import tqdm

from probing.results import record_checkpoint, results_dir, run_meta, save_fold_predictions
from training.checkpoint import encode_array, load_checkpoint
from utils import STAGES

N_CLASSES = len(STAGES)


class LatentProbe(nn.Module):
    """Standardise latents with training-split statistics, then classify. z: (B, D) -> logits (B, 5)."""

    def __init__(self, head: nn.Module, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.head = head
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.head((z - self.mean) / self.std)


def build_head(kind: str, latent_dim: int, n_classes: int = N_CLASSES) -> nn.Module:
    if kind == "linear":
        return nn.Linear(latent_dim, n_classes)
    if kind == "mlp":
        return nn.Sequential(
            nn.Linear(latent_dim, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(256, 256), nn.BatchNorm1d(256), nn.ReLU(), nn.Dropout(0.5),
            nn.Linear(256, n_classes),
        )
    raise ValueError(f"probe.type: {kind!r} is not one of ['linear', 'mlp']")


def label_subset(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of a stratified, seeded `fraction` of the epochs; every stage in y keeps >= 1 epoch.

    Each stage gets its share of round(fraction * n) by largest remainder, so the total is exact
    unless a stage must be raised to its one guaranteed epoch.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"label fraction must be in (0, 1], got {fraction}")
    if fraction == 1:
        return np.arange(len(y))
    counts = np.bincount(y, minlength=N_CLASSES)
    quota = counts * round(fraction * len(y)) / len(y)
    take = np.floor(quota).astype(int)
    by_remainder = np.argsort(-(quota - take), kind="stable")
    take[by_remainder[: round(quota.sum()) - take.sum()]] += 1
    take = np.where(counts > 0, np.maximum(take, 1), 0)
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(y == c))[:k] for c, k in enumerate(take)]
    return np.sort(np.concatenate(chosen))


def class_weights(y: np.ndarray, mode: str) -> torch.Tensor | None:
    """'balanced': n / (n_classes * count_c) (scikit-learn's convention); 'none': None."""
    if mode == "none":
        return None
    counts = np.bincount(y, minlength=N_CLASSES).astype(np.float64)
    weights = np.where(counts > 0, len(y) / (N_CLASSES * np.maximum(counts, 1)), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def fit_probe(z_train: np.ndarray, y_train: np.ndarray, z_val: np.ndarray, y_val: np.ndarray, probe_cfg: dict,
              seed: int, device="cpu", z_stats: np.ndarray | None = None) -> tuple[LatentProbe, dict]:
    """Train a probe on latents (n, D); return it at its best validation macro-F1, and a training summary.

    Training stops after probe.patience epochs in which neither the validation macro-F1 nor the
    validation loss improved (a loss still falling means the probe is still learning).

    z_stats (default z_train) gives the standardisation statistics: pass the whole training
    split's latents when training on a label fraction (they need no labels).
    """
    if len(z_val) == 0:
        raise ValueError("the validation split is empty: the probe needs it for early stopping")
    device = torch.device(device)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    stats = torch.as_tensor(z_train if z_stats is None else z_stats, dtype=torch.float32, device=device)
    mean, std = stats.mean(0), stats.std(0).clamp_min(1e-6)
    probe = LatentProbe(build_head(probe_cfg["type"], stats.shape[1]), mean, std).to(device)
    head = probe.head  # trained on latents standardised once, here, rather than per mini-batch
    weights = class_weights(y_train, probe_cfg["class_weighting"])
    loss_fn = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))
    optimizer = torch.optim.AdamW(head.parameters(), lr=probe_cfg["learning_rate"],
                                  weight_decay=probe_cfg["weight_decay"], fused=True)
    z_train_t = (torch.as_tensor(z_train, dtype=torch.float32, device=device) - mean) / std
    y_train_t = torch.as_tensor(y_train, dtype=torch.long, device=device)
    z_val_t = (torch.as_tensor(z_val, dtype=torch.float32, device=device) - mean) / std
    y_val_t = torch.as_tensor(y_val, dtype=torch.long, device=device)
    n, batch_size = len(z_train_t), probe_cfg["batch_size"]

    best = {"val_macro_f1": -1.0, "val_loss": float("inf"), "epoch": 0}
    best_state, stale, epoch, lowest_loss = None, 0, 0, float("inf")
    bar = tqdm(range(1, probe_cfg["epochs"] + 1), desc=f"{probe_cfg['type']} probe", unit="epoch", leave=False)
    for epoch in bar:
        head.train()
        order = torch.randperm(n, generator=generator).to(device)
        for start in range(0, n - 1, batch_size):  # stop before a last batch of 1 (BatchNorm needs 2)
            batch = order[start : start + batch_size]
            loss = loss_fn(head(z_train_t[batch]), y_train_t[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        head.eval()
        logits = _logits(head, z_val_t)
        val_loss = float(loss_fn(logits, y_val_t))
        val_f1 = f1_score(y_val, logits.argmax(1).cpu().numpy(), average="macro", zero_division=0)
        bar.set_postfix(val_mf1=f"{val_f1:.3f}", val_loss=f"{val_loss:.3f}")
        improved = val_f1 > best["val_macro_f1"] or val_loss < lowest_loss
        if val_f1 > best["val_macro_f1"]:
            best = {"val_macro_f1": float(val_f1), "val_loss": val_loss, "epoch": epoch}
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        lowest_loss = min(lowest_loss, val_loss)
        stale = 0 if improved else stale + 1
        if stale >= probe_cfg["patience"]:
            break
    head.load_state_dict(best_state)
    summary = {"best_epoch": best["epoch"], "epochs_trained": epoch, "best_val_macro_f1": best["val_macro_f1"],
               "best_val_loss": best["val_loss"], "n_train_labels": int(n)}
    return probe.eval(), summary


@torch.no_grad()
def _logits(classifier, z: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
    return torch.cat([classifier(z[start : start + batch_size]) for start in range(0, len(z), batch_size)])


def predict(classifier, z: np.ndarray, device="cpu") -> np.ndarray:
    """Stage labels (n,) int64 of latents (n, D) through a probe or head in eval mode: (B, D) -> (B, 5)."""
    z_t = torch.as_tensor(z, dtype=torch.float32, device=torch.device(device))
    return _logits(classifier, z_t).argmax(1).cpu().numpy().astype(np.int64)


# ----------------------------------------------------------------------------- one fold
def probe_encoder(encoder: nn.Module, input_norm: dict, data, config: dict, fold: int, device,
                  paradigm: str, out_dir: Path | None = None, test_latents: np.ndarray | None = None) -> dict:
    """Encode the fold once, fit the configured probe, save the test predictions; return fold metrics.

    data: a FoldData (.train/.val/.test Splits with x (n, 3000) µV, y, subject, night). `test_latents`:
    the test split already encoded by this encoder (the engine's embeddings), else it is encoded here.
    """
    splits = ("train", "val") if test_latents is not None else ("train", "val", "test")
    latents = {split: encode_array(encoder, getattr(data, split).x, input_norm, device)
               for split in tqdm(splits, desc="encoding", leave=False)}
    if test_latents is not None:
        latents["test"] = test_latents
    probe_cfg, seed = config["probe"], config["trainer"]["seed"] + fold
    labelled = label_subset(data.train.y, probe_cfg["label_fraction"], seed)
    probe, summary = fit_probe(latents["train"][labelled], data.train.y[labelled], latents["val"], data.val.y,
                               probe_cfg, seed=seed, device=device, z_stats=latents["train"])
    meta = run_meta(config, paradigm, config["backbone"]["type"], f"{probe_cfg['type']} probe",
                    probe_cfg["label_fraction"])
    meta |= {"probe": probe_cfg["type"], **summary}
    y_pred = predict(probe, latents["test"], device)
    return save_fold_predictions(out_dir or results_dir(config), fold, data.test, y_pred, meta)


def score_supervised(model: nn.Module, input_norm: dict, data, config: dict, fold: int, device) -> dict:
    """Score a model trained end to end with labels by its own head: classify(encode(x)) on the test split."""
    latents = encode_array(model, data.test.x, input_norm, device)
    y_pred = predict(model.classify, latents, device)
    meta = run_meta(config, "Supervised", config["backbone"]["type"], "supervised head", 1.0)
    meta |= {"n_train_labels": int(len(data.train.y))}
    return save_fold_predictions(results_dir(config), fold, data.test, y_pred, meta)


def run_probe(config: dict, fold: int, ckpt_path, device, data=None, test_latents=None) -> dict:
    """Score the best checkpoint of one fold (called by the training engine after each fold).

    `data` is the fold's FoldData when the caller has it in memory already (the engine), else it is loaded;
    `test_latents` the checkpoint's test-split latents when the caller has them (the engine's embeddings).

    Refuses a checkpoint of another fold (its pretraining data would contain this fold's test
    subjects) or of another paradigm or backbone than the config's.
    """
    from dset.loader import load_fold

    model, ckpt = load_checkpoint(ckpt_path, config, device)
    if ckpt["fold"] != fold:
        raise ValueError(f"{ckpt_path} was trained on fold {ckpt['fold']}, not fold {fold}: its training subjects "
                         f"overlap fold {fold}'s test subjects; use checkpoints/<exp>/ckpt_fold-{fold:02d}.pth")
    trained = ckpt["config"]["ssl"]["type"]  # equal to the config's: load_checkpoint checks it
    data = data if data is not None else load_fold(config["data"], fold)
    if trained == "Supervised":
        scores = score_supervised(model, ckpt["input_norm"], data, config, fold, device)
    else:
        scores = probe_encoder(model, ckpt["input_norm"], data, config, fold, device, paradigm=trained,
                               test_latents=test_latents)
    record_checkpoint(results_dir(config), fold, ckpt_path)
    return scores
