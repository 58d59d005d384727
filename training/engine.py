"""The one training loop of DeepSleepBench, shared by every paradigm.

train_fold(config, fold, device):
    data      the fold's train/val/test arrays live in device memory; a mini-batch is an index
              into them (no DataLoader, no per-sample Python)
    model     models.build_model(config), wrapped with its paradigm in one nn.Module (Objective) so
              that DistributedDataParallel (torchrun) sees a single forward; on CUDA the paradigm's
              loss (encoder, heads, loss) is torch.compiled (trainer.compile) and the whole step,
              optimiser included, is replayed as one CUDA graph (trainer.cuda_graphs, single GPU)
    loop      AdamW/Adam, bf16 autocast on CUDA; validation every `val_period` mini-batches of an epoch
              and at its end (`val_counter: global`, the reference's: of the run, no epoch end), the
              backbone seeing at most `val_chunk_size` samples at a time (chunked_backbone); early
              stopping on the validation loss, TensorBoard, tqdm
    files     checkpoints/<exp>/ckpt_fold-0K.pth (best), last_fold-0K.pth (resume state),
              train_fold-0K.json (throughput, memory, wall time of the first step, of validation)

save_embeddings(config, fold, test_split, z, checkpoint) writes embeddings_fold-0K.pt (test-set latents, with the
path and SHA-256 of the checkpoint that encoded them).
The probe is not the engine's business: pipeline.py runs pretrain -> embed -> probe.
"""
from __future__ import annotations

import json
import math
import os
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from dset.loader import load_fold
from models.main_model import build_model
from training.checkpoint import best_checkpoint_path, checkpoint_dir, embeddings_path, input_norm_of
from training.paradigms import PARADIGMS
from utils import InputError, atomic_torch_save, atomic_write_bytes, file_sha256, fold_name, safe_torch_load

LOG_EVERY = 25  # mini-batches between host syncs for logging and the finite-loss check


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoints are left as they were."""


class TrainingPaused(RuntimeError):
    """The deadline passed; training stopped after a validation, with its resume state saved."""


@dataclass(frozen=True)
class Distributed:
    """Process layout: one process per GPU under torchrun, else a single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> tuple[Distributed, torch.device]:
    """Join the process group when started by torchrun (WORLD_SIZE > 1); NCCL on CUDA, gloo on CPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Distributed(), device
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device(f"cuda:{local_rank}")
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank, world_size, local_rank), device


class Objective(nn.Module):
    """Model + paradigm: forward(x, y) -> (loss, parts). One module for DDP.

    With `compile`, training steps run the paradigm's loss through torch.compile (fixed shapes, so it
    compiles once); the inputs (augmentations) stay eager, and so does validation (eval mode, other
    batch sizes), which would otherwise trigger recompilation.
    """

    def __init__(self, model: nn.Module, paradigm, compile: bool = False):
        super().__init__()
        self.model = model
        self.paradigm = paradigm
        self.compiled_loss = torch.compile(paradigm.loss, dynamic=False) if compile else None

    def forward(self, x: torch.Tensor, y: torch.Tensor):
        inputs = self.paradigm.inputs(x, y)
        if self.compiled_loss is not None and self.model.training:
            return self.compiled_loss(*inputs)
        return self.paradigm.loss(*inputs)


def build_objective(config: dict, model: nn.Module, compile: bool = False) -> Objective:
    return Objective(model, PARADIGMS[config["ssl"]["type"]](config, model), compile=compile)


def use_fast_cuda_kernels() -> None:
    """TF32 matmuls and convolutions, and cuDNN autotuning (the shapes are fixed): a large gain on CUDA."""
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True


def make_optimizer(config: dict, model: nn.Module, capturable: bool = False) -> torch.optim.Optimizer:
    """Adam/AdamW from the config; fused on CUDA, `capturable` for CUDA-graph replay."""
    t = config["trainer"]
    cls = torch.optim.AdamW if t["optimizer"] == "adamw" else torch.optim.Adam
    on_cuda = next(model.parameters()).is_cuda
    return cls(model.parameters(), lr=t["learning_rate"], weight_decay=t["weight_decay"], fused=on_cuda or None,
               capturable=capturable)


def standardised_batch(x: torch.Tensor, idx: torch.Tensor, input_norm: dict) -> torch.Tensor:
    """Rows idx of a device-resident (N, T) µV array -> (b, 1, T) standardised batch."""
    return ((x[idx] - input_norm["mean"]) / input_norm["std"]).unsqueeze(1)


def train_step(step_fn, optimizer, x: torch.Tensor, y: torch.Tensor, use_amp: bool, grad_clip: float | None):
    """One optimisation step; returns (loss, parts) as device tensors (no host sync)."""
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=use_amp):
        loss, parts = step_fn(x, y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip:
        nn.utils.clip_grad_norm_([p for group in optimizer.param_groups for p in group["params"]], grad_clip)
    optimizer.step()
    return loss.detach(), parts


class GraphedStep:
    """A whole training step (forward, backward, clip, optimiser) captured once as a CUDA graph.

    At batch 128 these models launch thousands of small kernels per step and the GPU waits on the
    host (measured: 46 % busy); replaying one graph removes that launch overhead. Warm-up and capture
    run real steps on the first batch, so the model and optimiser state are restored afterwards:
    training proceeds exactly as if the graph had been there from the start. Randomness (augmentations,
    masks, dropout) is drawn inside the graph, fresh on every replay.

    The graph reads the model's weights, the optimiser's state and step_fn's tensors by address, so the step
    holds all three for as long as the graph lives: a caller that kept only the step (the benchmarks did) once
    let the weights' memory be freed and reused, and replays faulted (benchmarks/diagnose_two_graphs.py).
    The warm-up's gradients are dropped before capture, as in PyTorch's documented recipe.
    """

    def __init__(self, step_fn, optimizer, model: nn.Module, x: torch.Tensor, y: torch.Tensor, use_amp: bool,
                 grad_clip: float | None, warmup: int = 3, capture_stream: torch.cuda.Stream | None = None):
        self.x, self.y = x.clone(), y.clone()
        self.step_fn, self.optimizer, self.model = step_fn, optimizer, model
        saved_model = {k: v.clone() for k, v in model.state_dict().items()}
        saved_optim = [{k: v.clone() for k, v in state.items()} for state in optimizer.state.values()]
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    train_step(step_fn, optimizer, self.x, self.y, use_amp, grad_clip)
            torch.cuda.current_stream().wait_stream(side)
            optimizer.zero_grad(set_to_none=True)  # the graph's gradients are allocated in its own pool
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph, stream=capture_stream):
                self.loss, self.parts = train_step(step_fn, optimizer, self.x, self.y, use_amp, grad_clip)
        finally:  # warm-up and capture ran real updates: undo them (also when capture fails)
            with torch.no_grad():
                for key, value in model.state_dict().items():
                    value.copy_(saved_model[key])
                for state, saved in zip(optimizer.state.values(), saved_optim + [{}] * len(optimizer.state)):
                    for key, value in state.items():
                        if key in saved:
                            value.copy_(saved[key])
                        else:
                            value.zero_()

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        self.x.copy_(x)
        self.y.copy_(y)
        self.graph.replay()
        return self.loss, self.parts


@contextmanager
def chunked_backbone(backbone: nn.Module, chunk: int):
    """Inside the block, backbone.encode and backbone.reconstruct see at most `chunk` samples per call; the
    outputs (a tensor, or a tuple of tensors) are concatenated along the batch. In eval mode every sample's
    output is independent of the others, so a loss over the whole batch (NT-Xent's negatives, the masked
    mean) is unchanged; only the activation memory shrinks. Masks and augmentations are drawn outside."""
    def chunked(method):
        def run(x: torch.Tensor):
            parts = [method(x[start : start + chunk]) for start in range(0, len(x), chunk)]
            if isinstance(parts[0], tuple):
                return tuple(torch.cat(column) for column in zip(*parts))
            return torch.cat(parts)
        return run

    backbone.encode, backbone.reconstruct = chunked(backbone.encode), chunked(backbone.reconstruct)
    try:
        yield backbone
    finally:
        del backbone.encode, backbone.reconstruct  # the class's methods again


def train_fold(config: dict, fold: int, device, resume: bool = False, distributed: Distributed = Distributed(),
               data=None, deadline: float | None = None) -> Path:
    """Pretrain on one fold; returns the path of the best checkpoint (see module docstring).

    `data`: the fold's FoldData when the caller has loaded it already, else it is loaded here.
    `deadline` (a time.monotonic() value, one process only): at the first validation after it, save the
    resume state and raise TrainingPaused; `resume=True` continues from there.
    """
    t = config["trainer"]
    device = torch.device(device)
    rank, world = distributed.rank, distributed.world_size
    main = distributed.is_main
    name = fold_name(fold)
    run_dir = checkpoint_dir(config)
    best_path, last_path = best_checkpoint_path(config, fold), run_dir / f"last_{name}.pth"
    use_amp = t["amp"] and device.type == "cuda"

    # ------------------------------------------------------------------ data (device-resident)
    data = data if data is not None else load_fold(config["data"], fold)
    input_norm = input_norm_of(data.train.x, config["data"]["standardise"])
    x_train, y_train = torch.from_numpy(data.train.x).to(device), torch.from_numpy(data.train.y).to(device)
    x_val, y_val = torch.from_numpy(data.val.x).to(device), torch.from_numpy(data.val.y).to(device)
    global_batch = t["batch_size"]
    if global_batch % world:
        raise InputError(f"trainer.batch_size={global_batch} must be divisible by the {world} processes")
    local_batch = global_batch // world
    if deadline is not None and world > 1:
        raise ValueError("a training deadline needs a single process (the ranks would disagree on the time)")
    steps_per_epoch = len(x_train) // global_batch
    if t["max_steps_per_epoch"]:
        steps_per_epoch = min(steps_per_epoch, t["max_steps_per_epoch"])
    if steps_per_epoch == 0:
        raise InputError(f"trainer.batch_size={global_batch}: fold {fold} has {len(x_train)} training epochs, fewer "
                         "than one batch; lower trainer.batch_size")
    if len(x_val) < world:
        raise InputError(f"fold {fold}: {len(x_val)} validation epochs, fewer than the {world} process(es); give the "
                         f"fold validation subjects in {config['data']['splits']}")
    val_every = t["val_period"] or steps_per_epoch

    # ------------------------------------------------------------------ model, optimiser, state
    if device.type == "cuda":
        use_fast_cuda_kernels()
    torch.manual_seed(t["seed"])
    model = build_model(config).to(device)
    objective = build_objective(config, model, compile=t["compile"] and device.type == "cuda")
    use_graphs = t["cuda_graphs"] and device.type == "cuda" and world == 1
    optimizer = make_optimizer(config, model, capturable=use_graphs)
    state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_val": math.inf, "stale": 0}
    if resume and last_path.is_file():
        last = safe_torch_load(last_path)
        model.load_state_dict(last["model"])
        optimizer.load_state_dict(last["optimizer"])
        state = last["state"]
        torch.set_rng_state(last["rng"]["cpu"])
        if device.type == "cuda" and last["rng"]["cuda"] is not None:
            torch.cuda.set_rng_state(last["rng"]["cuda"], device)
        if main:
            print(f"[{config['exp_name']} {name}] resuming at epoch {state['epoch']} step {state['global_step']}")
    step_fn = objective
    if world > 1:
        step_fn = nn.parallel.DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None)

    writer = None
    if main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(Path("logs") / config["exp_name"] / name))

    def checkpoint_payload(val_loss: float) -> dict:
        return {"model": model.state_dict(), "config": config, "fold": fold, "input_norm": input_norm,
                "epoch": state["epoch"], "step": state["global_step"], "val_loss": val_loss}

    def save_last() -> None:
        rng = {"cpu": torch.get_rng_state(), "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}
        atomic_torch_save({**checkpoint_payload(state["best_val"]), "optimizer": optimizer.state_dict(),
                           "state": dict(state), "rng": rng}, last_path)

    def validate() -> float:
        started = time.perf_counter()
        track_peak("training")
        loss = validation_loss(objective, x_val, y_val, input_norm, batch=t["val_batch_size"], chunk=t["val_chunk_size"],
                               seed=t["seed"] + 1, use_amp=use_amp, distributed=distributed)
        timing["validation_seconds"] += time.perf_counter() - started
        track_peak("validation")
        return loss

    # ------------------------------------------------------------------ the loop
    model.train()
    if objective.compiled_loss is not None and main:
        print(f"[{config['exp_name']} {name}] compiling the training step with torch.compile: once per run, "
              "about 30-150 s on an H100 (trainer.compile=false skips it)", flush=True)
    graphed = None
    first_bad_step = torch.tensor(-1, device=device)
    running = {}
    samples_seen, train_seconds, stopped_early, paused = 0, 0.0, False, False
    timing = {"first_step_seconds": None, "validation_seconds": 0.0}
    peaks = {"training": 0.0, "validation": 0.0}

    def track_peak(phase: str) -> None:
        """Fold the CUDA memory peak since the last call into peaks[phase] (GB), then restart the count."""
        if device.type == "cuda":
            peaks[phase] = max(peaks[phase], torch.cuda.max_memory_allocated(device) / 2**30)
            torch.cuda.reset_peak_memory_stats(device)
    interval_start, interval_samples = time.perf_counter(), 0
    wall_start = time.perf_counter()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for epoch in range(state["epoch"], t["max_epochs"]):
        state["epoch"] = epoch
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(t["seed"] + epoch)).to(device)
        bar = tqdm(range(state["step_in_epoch"], steps_per_epoch), desc=f"{config['exp_name']} {name} epoch {epoch + 1}",
                   disable=not main, leave=False, dynamic_ncols=True)
        for step in bar:
            idx = order[step * global_batch + rank * local_batch : step * global_batch + (rank + 1) * local_batch]
            xb, yb = standardised_batch(x_train, idx, input_norm), y_train[idx]
            if use_graphs and graphed is None:
                graphed = capture_or_fall_back(step_fn, optimizer, model, xb, yb, use_amp, t["grad_clip"])
                use_graphs = graphed is not None
            if graphed is not None:
                loss, parts = graphed(xb, yb)
            else:
                loss, parts = train_step(step_fn, optimizer, xb, yb, use_amp, t["grad_clip"])
            if timing["first_step_seconds"] is None:  # compilation and graph capture happen here
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                timing["first_step_seconds"] = time.perf_counter() - wall_start
            state["global_step"] += 1
            first_bad_step = torch.where((first_bad_step < 0) & ~torch.isfinite(loss),
                                         torch.tensor(state["global_step"], device=device), first_bad_step)
            for key, value in parts.items():
                running[key] = running.get(key, 0.0) + value.float()
            interval_samples += global_batch
            if t["val_counter"] == "global":  # the reference's counter; the run's last step validates if none has
                validate_now = state["global_step"] % val_every == 0 or (
                    epoch + 1 == t["max_epochs"] and step + 1 == steps_per_epoch and state["best_val"] == math.inf)
            else:
                validate_now = (step + 1) % val_every == 0 or step + 1 == steps_per_epoch
            if state["global_step"] % LOG_EVERY == 0 or validate_now:
                if (bad := int(first_bad_step)) >= 0:
                    kept = [str(p) for p in (best_path, last_path) if p.is_file()]
                    raise TrainingDiverged(
                        f"{config['exp_name']} {name}: loss became NaN/inf at step {bad}; stopped. "
                        f"{'Kept, unchanged: ' + ', '.join(kept) if kept else 'No checkpoint of this fold was saved yet'}. "
                        "Possible causes: non-finite input data, too high trainer.learning_rate, no trainer.grad_clip.")
                elapsed = time.perf_counter() - interval_start
                if state["global_step"] > LOG_EVERY:  # the first interval (warm-up, autotuning) is not timed
                    train_seconds += elapsed
                    samples_seen += interval_samples
                if main:
                    steps = state["global_step"] % LOG_EVERY or LOG_EVERY
                    for key, value in running.items():
                        writer.add_scalar(f"train/loss_{key}", float(value) / steps, state["global_step"])
                    writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], state["global_step"])
                    writer.add_scalar("train/samples_per_s", interval_samples / max(elapsed, 1e-9), state["global_step"])
                    bar.set_postfix({k: f"{float(v) / steps:.4f}" for k, v in running.items()})
                running = {}
                if validate_now:
                    val_loss = validate()
                    improved = val_loss < state["best_val"]
                    state["best_val"], state["stale"] = (val_loss, 0) if improved else (state["best_val"], state["stale"] + 1)
                    state["epoch"], state["step_in_epoch"] = (epoch, step + 1) if step + 1 < steps_per_epoch else (epoch + 1, 0)
                    if main:
                        writer.add_scalar("val/loss", val_loss, state["global_step"])
                        if improved:
                            atomic_torch_save(checkpoint_payload(val_loss), best_path)
                        save_last()
                        bar.write(f"[{config['exp_name']} {name}] step {state['global_step']}: val loss {val_loss:.4f}"
                                  f"{' (best)' if improved else ''}")
                    if state["stale"] >= t["early_stopping_patience"]:
                        stopped_early = True
                        break
                    if deadline is not None and time.monotonic() >= deadline and state["epoch"] < t["max_epochs"]:
                        paused = True
                        break
                interval_start, interval_samples = time.perf_counter(), 0
        state["step_in_epoch"] = 0
        if stopped_early or paused:
            break

    # ------------------------------------------------------------------ after training
    if world > 1:
        dist.barrier()
    if main:
        track_peak("training")
        summary = {"exp_name": config["exp_name"], "fold": fold, "device": str(device), "world_size": world,
                   "global_batch": global_batch, "steps": state["global_step"], "epochs_completed": state["epoch"],
                   "stopped_early": stopped_early, "paused": paused, "best_val_loss": state["best_val"],
                   "train_samples_per_s": samples_seen / train_seconds if train_seconds else None,
                   "wall_seconds": time.perf_counter() - wall_start, **timing,
                   "peak_gpu_memory_gb": max(peaks.values()) if device.type == "cuda" else None,
                   **{f"peak_{phase}_gpu_memory_gb": gb if device.type == "cuda" else None for phase, gb in peaks.items()}}
        atomic_write_bytes(run_dir / f"train_{name}.json", json.dumps(summary, indent=2).encode())
        writer.close()
    if paused:
        raise TrainingPaused(f"{config['exp_name']} {name}: paused at the deadline after step {state['global_step']} "
                             f"({state['epoch']} epochs complete); the resume state is {last_path}")
    return best_path


@torch.no_grad()
def validation_loss(objective: Objective, x_val: torch.Tensor, y_val: torch.Tensor, input_norm: dict, *, batch: int,
                    chunk: int, seed: int, use_amp: bool, distributed: Distributed = Distributed()) -> float:
    """Mean loss over the device-resident validation split (N, T), eval mode, randomness fixed by `seed`.

    It runs in global batches of `batch` epochs, each split evenly over the ranks, so that CRL's gathered
    negatives are those of the single-GPU batch; under DDP the last N % world epochs are left out (all_gather
    needs equal shares). The backbone sees at most `chunk` samples per call (chunked_backbone): in eval mode
    this changes memory and speed, not the loss."""
    model, world, rank = objective.model, distributed.world_size, distributed.rank
    device = x_val.device
    was_training = model.training
    model.eval()
    total = torch.zeros(2, device=device, dtype=torch.float64)
    usable = len(x_val) - len(x_val) % world
    batch = max(world, batch // world * world)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            chunked_backbone(model.backbone, chunk):
        torch.manual_seed(seed)
        for start in range(0, usable, batch):
            share = min(batch, usable - start) // world
            idx = torch.arange(start + rank * share, start + (rank + 1) * share, device=device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss, _ = objective(standardised_batch(x_val, idx, input_norm), y_val[idx])
            total += torch.stack([loss.double() * len(idx), torch.tensor(len(idx), device=device, dtype=torch.float64)])
    if world > 1:
        dist.all_reduce(total)
    model.train(was_training)
    return (total[0] / total[1].clamp(min=1)).item()


def capture_or_fall_back(step_fn, optimizer, model, x, y, use_amp, grad_clip) -> GraphedStep | None:
    """A GraphedStep, or None (eager steps) with a warning if this model cannot be captured."""
    try:
        return GraphedStep(step_fn, optimizer, model, x, y, use_amp, grad_clip)
    except RuntimeError as exc:
        warnings.warn(f"CUDA-graph capture failed, training eagerly (set trainer.cuda_graphs=false to silence): {exc}")
        torch.cuda.synchronize()
        return None


def save_embeddings(config: dict, fold: int, test_split, z: np.ndarray, checkpoint: Path) -> Path:
    """Write the test split's latents z (n, latent_dim) with labels and subject ids -> embeddings_fold-0K.pt,
    with the path and SHA-256 of the `checkpoint` that encoded them (results derived from them can tell when it
    has been replaced)."""
    path = embeddings_path(config, fold)
    atomic_torch_save({"z": torch.from_numpy(z), "y": torch.from_numpy(test_split.y).long(),
                       "subject": torch.from_numpy(test_split.subject.astype(np.int64)),
                       "night": torch.from_numpy(test_split.night.astype(np.int64)),
                       "fold": fold, "exp_name": config["exp_name"],
                       "checkpoint": str(checkpoint), "checkpoint_sha256": file_sha256(checkpoint)}, path)
    return path
