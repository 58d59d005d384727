"""Evaluation on frozen latents: a classifier trained on the latents of a pretrained encoder.

For one fold: encode the train/val/test epochs once, train each configured probe on (a label fraction
of) the training subjects with plain cross-entropy, keep its state of lowest validation loss (early
stopping after probe.patience epochs without improvement, as the reference trains its classifier),
and score it on the fold's test subjects. A model pretrained with labels (ssl.type "Supervised") is
scored with its own classifier head instead.

    probe.type "linear"  one linear layer on standardised latents (multinomial logistic regression),
                         full-batch L-BFGS: one epoch = up to 10 L-BFGS iterations over the whole training split
    probe.type "mlp"     128 -> 256 -> 256 -> 5 with BatchNorm, ReLU, Dropout 0.5 (the seed's probe, the
                         reference's DLProjMLP), Adam with L2 weight decay in mini-batches of probe.batch_size
    probe.type "both"    the two, each in its own results folder (the default)
    probe.type "context" a temporal model over probe.context.length latents of one night (probing/context.py)

The latents stay on the device for the whole fit; an epoch synchronises with the host once (the
validation loss that decides early stopping). Each trained probe is saved beside its predictions
(results/<run>/probe_fold-0K.pt, probing/saved_probe.py).
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import f1_score
from torch import nn
from tqdm.auto import tqdm

from probing.results import record_checkpoint, results_dir, run_meta, save_fold_predictions
from probing.saved_probe import checkpoint_info, probe_path, save_probe
from training.checkpoint import encode_array, load_checkpoint
from utils import STAGES, InputError

N_CLASSES = len(STAGES)
EMPTY_VALIDATION = "the fold's validation split is empty (data.splits): the probe needs it for early stopping"


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


PROBE_KINDS = ("linear", "mlp")
LBFGS_ITERATIONS_PER_EPOCH = 10  # the linear probe's epoch
LINE_SEARCH_EVALS = 25  # line-search evaluations budgeted per L-BFGS iteration


def probe_kinds(probe_cfg: dict) -> list[str]:
    """The probes a config asks for: probe.type "linear", "mlp" or "both"."""
    return list(PROBE_KINDS) if probe_cfg["type"] == "both" else [probe_cfg["type"]]


def with_probe(config: dict, kind: str) -> dict:
    """A copy of config whose probe.type is the single probe `kind` (its results folder follows)."""
    config = copy.deepcopy(config)
    config["probe"]["type"] = kind
    return config


def fit_probe(z_train: np.ndarray, y_train: np.ndarray, z_val: np.ndarray, y_val: np.ndarray, probe_cfg: dict,
              seed: int, device="cpu", z_stats: np.ndarray | None = None) -> tuple[LatentProbe, dict]:
    """Train a probe on latents (n, D); return it at its lowest validation loss, and a training summary.

    The probe (a LatentProbe: head + the standardisation buffers `mean`, `std`; 0 and 1 when
    probe.standardise is false) takes raw latents (B, D) -> logits (B, 5), so it can be saved and
    reused as it is. Training stops after
    probe.patience epochs without a lower validation loss, or after probe.epochs.

    z_stats (default z_train) gives the standardisation statistics: pass the whole training
    split's latents when training on a label fraction (they need no labels).
    """
    if len(z_val) == 0:
        raise InputError(EMPTY_VALIDATION)
    kind = probe_cfg["type"]
    device = torch.device(device)
    torch.manual_seed(seed)
    stats = torch.as_tensor(z_train if z_stats is None else z_stats, dtype=torch.float32, device=device)
    mean, std = stats.mean(0), stats.std(0).clamp_min(1e-6)
    if not probe_cfg["standardise"]:
        mean, std = torch.zeros_like(mean), torch.ones_like(std)
    probe = LatentProbe(build_head(kind, stats.shape[1]), mean, std).to(device)
    head = probe.head  # trained on latents standardised once, here, rather than per mini-batch
    weights = class_weights(y_train, probe_cfg["class_weighting"])
    loss_fn = nn.CrossEntropyLoss(weight=None if weights is None else weights.to(device))
    z_train_t = (torch.as_tensor(z_train, dtype=torch.float32, device=device) - mean) / std
    y_train_t = torch.as_tensor(y_train, dtype=torch.long, device=device)
    z_val_t = (torch.as_tensor(z_val, dtype=torch.float32, device=device) - mean) / std
    y_val_t = torch.as_tensor(y_val, dtype=torch.long, device=device)
    if kind == "linear":
        train_epoch = _lbfgs_epochs(head, z_train_t, y_train_t, loss_fn, probe_cfg["weight_decay"])
    else:
        train_epoch = _adam_epochs(head, z_train_t, y_train_t, loss_fn, probe_cfg, seed)

    best_loss, best_epoch, best_state, stale, epoch = float("inf"), 0, None, 0, 0
    bar = tqdm(range(1, probe_cfg["epochs"] + 1), desc=f"{kind} probe", unit="epoch", leave=False)
    for epoch in bar:
        head.train()
        train_epoch()
        head.eval()
        val_loss = float(loss_fn(_logits(head, z_val_t), y_val_t))  # the epoch's one host sync
        bar.set_postfix(val_loss=f"{val_loss:.4f}")
        if val_loss < best_loss:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in head.state_dict().items()}
        else:
            stale += 1
            if stale >= probe_cfg["patience"]:
                break
    if best_state is None:
        raise ValueError(f"{kind} probe: the validation loss was never finite; check the latents for NaN")
    head.load_state_dict(best_state)
    val_pred = _logits(head, z_val_t).argmax(1).cpu().numpy()
    summary = {"best_epoch": best_epoch, "epochs_trained": epoch, "best_val_loss": best_loss,
               "best_val_macro_f1": float(f1_score(y_val, val_pred, average="macro", zero_division=0)),
               "n_train_labels": int(len(z_train_t))}
    return probe.eval(), summary


def _lbfgs_epochs(head: nn.Module, z: torch.Tensor, y: torch.Tensor, loss_fn, weight_decay: float):
    """One epoch: up to LBFGS_ITERATIONS_PER_EPOCH full-batch L-BFGS iterations (strong-Wolfe line search) on
    cross-entropy + weight_decay/2 * |θ|², the objective that Adam's L2 weight decay descends.

    max_eval is set: torch's default, max_iter * 5 // 4, left one iteration per epoch no line-search evaluation
    past the unit step, so the first unit step that raised the loss returned t = 0 and every later epoch
    repeated it; the probe stalled short of the optimum on ill-conditioned latents (on the demo, 5-9 points)."""
    optimizer = torch.optim.LBFGS(head.parameters(), lr=1.0, max_iter=LBFGS_ITERATIONS_PER_EPOCH,
                                  max_eval=LBFGS_ITERATIONS_PER_EPOCH * LINE_SEARCH_EVALS,
                                  history_size=20, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(head(z), y) + 0.5 * weight_decay * sum(p.square().sum() for p in head.parameters())
        loss.backward()
        return loss

    return lambda: optimizer.step(objective)


def _adam_epochs(head: nn.Module, z: torch.Tensor, y: torch.Tensor, loss_fn, probe_cfg: dict, seed: int,
                 graphed: bool | None = None):
    """One epoch of Adam (L2 weight decay, as the reference) over a device-side permutation in mini-batches
    of probe.batch_size; no host sync. A last batch of one epoch is skipped (BatchNorm needs two).

    graphed (default: on CUDA): the first epoch runs eagerly, then the whole epoch is captured as one CUDA
    graph that every later epoch replays with a fresh permutation (and fresh dropout). At batch 128 an epoch of
    164k latents is about 1,300 steps of a few dozen small kernels each, which eagerly wait on Python's launches.
    """
    graphed = z.is_cuda if graphed is None else graphed
    optimizer = torch.optim.Adam(head.parameters(), lr=probe_cfg["learning_rate"],
                                 weight_decay=probe_cfg["weight_decay"], fused=z.is_cuda or None, capturable=graphed)
    generator = torch.Generator(device=z.device).manual_seed(seed)
    n, batch_size = len(z), probe_cfg["batch_size"]
    order = torch.empty(n, dtype=torch.long, device=z.device)  # static: the captured epoch reads its slices

    def steps() -> None:
        for start in range(0, n - 1, batch_size):
            batch = order[start : start + batch_size]
            loss = loss_fn(head(z[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    graph = None

    def epoch() -> None:
        nonlocal graph
        order.copy_(torch.randperm(n, generator=generator, device=z.device))
        if graph is not None:
            graph.replay()
        elif not graphed:
            steps()
        else:  # a real epoch on a side stream (lazy state, cuBLAS workspaces), then the capture, which runs nothing
            side = torch.cuda.Stream(z.device)
            side.wait_stream(torch.cuda.current_stream(z.device))
            with torch.cuda.stream(side):
                steps()
            torch.cuda.current_stream(z.device).wait_stream(side)
            optimizer.zero_grad(set_to_none=True)  # before capture, as in training.engine.GraphedStep
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                steps()

    return epoch


@torch.no_grad()
def _logits(classifier, z: torch.Tensor, batch_size: int = 65536) -> torch.Tensor:
    return torch.cat([classifier(z[start : start + batch_size]) for start in range(0, len(z), batch_size)])


def predict(classifier, z: np.ndarray, device="cpu") -> np.ndarray:
    """Stage labels (n,) int64 of latents (n, D) through a probe or head in eval mode: (B, D) -> (B, 5)."""
    z_t = torch.as_tensor(z, dtype=torch.float32, device=torch.device(device))
    return _logits(classifier, z_t).argmax(1).cpu().numpy().astype(np.int64)


# ----------------------------------------------------------------------------- one fold
def encode_fold(encoder: nn.Module, input_norm: dict, data, device, amp: bool,
                test_latents: np.ndarray | None = None) -> dict:
    """{"train", "val", "test"}: latents (n, D) of a FoldData's splits; `test_latents`, when given, is reused.
    `amp`: encode under bf16 autocast on CUDA (the config's trainer.amp)."""
    splits = ("train", "val") if test_latents is not None else ("train", "val", "test")
    latents = {split: encode_array(encoder, getattr(data, split).x, input_norm, device, amp)
               for split in tqdm(splits, desc="encoding", leave=False)}
    return latents if test_latents is None else latents | {"test": test_latents}


def probe_latents(latents: dict, data, config: dict, fold: int, device, paradigm: str,
                  checkpoint: dict | None = None) -> dict[str, dict]:
    """Fit every configured probe on a fold's latents, save its test predictions and the probe itself;
    return {kind: fold metrics}. Each probe writes to its own results folder, results_dir(with_probe(config, kind)).
    `checkpoint`: what the saved probe records of its encoder (checkpoint_info), or None to save no probe."""
    seed = config["trainer"]["seed"] + fold
    labelled = label_subset(data.train.y, config["probe"]["label_fraction"], seed)
    scores = {}
    for kind in probe_kinds(config["probe"]):
        run = with_probe(config, kind)
        if kind == "context":
            from probing.context import fit_context_probe, predict_context

            probe, summary = fit_context_probe(latents["train"], data.train, labelled, latents["val"], data.val,
                                               run["probe"], seed=seed, device=device)
            y_pred = predict_context(probe, latents["test"], data.test, device)
        else:
            probe, summary = fit_probe(latents["train"][labelled], data.train.y[labelled], latents["val"], data.val.y,
                                       run["probe"], seed=seed, device=device, z_stats=latents["train"])
            y_pred = predict(probe, latents["test"], device)
        meta = run_meta(run, paradigm, config["backbone"]["type"], f"{kind} probe", config["probe"]["label_fraction"])
        out_dir = results_dir(run)
        scores[kind] = save_fold_predictions(out_dir, fold, data.test, y_pred, meta | {"probe": kind, **summary})
        if checkpoint is not None:
            save_probe(probe_path(out_dir, fold), probe.head, {"mean": probe.mean, "std": probe.std}, run["probe"],
                       checkpoint)
    return scores


def probe_encoder(encoder: nn.Module, input_norm: dict, data, config: dict, fold: int, device, paradigm: str,
                  test_latents: np.ndarray | None = None) -> dict[str, dict]:
    """Encode the fold once, fit the configured probes; {kind: fold metrics}.

    data: a FoldData (.train/.val/.test Splits with x (n, 3000) µV, y, subject, night). `test_latents`:
    the test split already encoded by this encoder (the pipeline's embeddings), else it is encoded here.
    """
    latents = encode_fold(encoder, input_norm, data, device, config["trainer"]["amp"], test_latents)
    return probe_latents(latents, data, config, fold, device, paradigm,
                         checkpoint_info(encoder, input_norm, config, fold, paradigm))


def score_supervised(model: nn.Module, input_norm: dict, data, config: dict, fold: int, device) -> dict:
    """Score a model trained end to end with labels by its own head: classify(encode(x)) on the test split."""
    latents = encode_array(model, data.test.x, input_norm, device, config["trainer"]["amp"])
    y_pred = predict(model.classify, latents, device)
    meta = run_meta(config, "Supervised", config["backbone"]["type"], "supervised head", 1.0)
    meta |= {"n_train_labels": int(len(data.train.y))}
    return save_fold_predictions(results_dir(config), fold, data.test, y_pred, meta)


def run_probe(config: dict, fold: int, ckpt_path, device, data=None, test_latents=None) -> dict[str, dict]:
    """Score the best checkpoint of one fold: {kind: fold metrics} of each probe, or {"supervised": ...}.

    `data` is the fold's FoldData when the caller has it in memory already (the pipeline), else it is loaded;
    `test_latents` the checkpoint's test-split latents when the caller has them (the pipeline's embeddings).

    Refuses a checkpoint of another fold (its pretraining data would contain this fold's test
    subjects) or of another paradigm or backbone than the config's.
    """
    from dset.loader import load_fold

    model, ckpt = load_checkpoint(ckpt_path, config, device)
    if ckpt["fold"] != fold:
        raise InputError(f"{ckpt_path} was trained on fold {ckpt['fold']}, not fold {fold}: its training subjects "
                         f"overlap fold {fold}'s test subjects; use checkpoints/<exp>/ckpt_fold-{fold:02d}.pth, or "
                         f"leave --fold out to probe fold {ckpt['fold']}")
    trained = ckpt["config"]["ssl"]["type"]  # equal to the config's: load_checkpoint checks it
    data = data if data is not None else load_fold(config["data"], fold)
    if trained == "Supervised":
        scores = {"supervised": score_supervised(model, ckpt["input_norm"], data, config, fold, device)}
        runs = [config]
    else:
        scores = probe_encoder(model, ckpt["input_norm"], data, config, fold, device, paradigm=trained,
                               test_latents=test_latents)
        runs = [with_probe(config, kind) for kind in probe_kinds(config["probe"])]
    for run in runs:
        record_checkpoint(results_dir(run), fold, ckpt_path)
    return scores
