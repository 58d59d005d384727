"""One fold end to end, as train_crl.py, train_mp.py and train_hybrid.py run it: pretrain -> embed -> probe(s).

    run_fold(config, fold, device)   load the fold once; pretrain (training.engine.train_fold); encode its
                                     train/val/test splits with the best checkpoint and save the test latents
                                     (embeddings_fold-0K.pt); fit and score each probe of probe.type
    finish(config)                   pool every fold's predictions into results/<run>/ for each probe
    main(paradigm)                   the command line of the training scripts (training/cli.py)

Stage wall times go into `times` when given (benchmarks/bench_pipeline.py).
"""
from __future__ import annotations

import time
from contextlib import contextmanager

from dset.loader import load_fold
from probing.probe import encode_fold, probe_kinds, probe_latents, with_probe
from probing.results import describe, write_results
from training import cli
from training.checkpoint import load_checkpoint
from training.engine import Distributed, save_embeddings, train_fold


@contextmanager
def timed(times: dict | None, stage: str):
    """Add the block's wall time (s) to times[stage]; device work is synchronised by the stage itself."""
    started = time.perf_counter()
    yield
    if times is not None:
        times[stage] = times.get(stage, 0.0) + time.perf_counter() - started


def run_fold(config: dict, fold: int, device, resume: bool = False, distributed: Distributed = Distributed(),
             times: dict | None = None) -> dict[str, dict]:
    """Pretrain, embed and probe one fold; {probe kind: test metrics} (empty on the other DDP ranks)."""
    with timed(times, "data_load"):
        data = load_fold(config["data"], fold)
    with timed(times, "pretraining"):
        best_path = train_fold(config, fold, device, resume=resume, distributed=distributed, data=data)
    if not distributed.is_main:
        return {}
    with timed(times, "embedding"):
        model, ckpt = load_checkpoint(best_path, device=device)
        latents = encode_fold(model, ckpt["input_norm"], data, device)
        save_embeddings(config, fold, data.test, latents["test"])
    scores = {}
    if config["probe"]["run_after_pretraining"]:
        for kind in probe_kinds(config["probe"]):
            with timed(times, f"probe_{kind}"):
                scores |= probe_latents(latents, data, with_probe(config, kind), fold, device, config["ssl"]["type"])
            print(f"[{config['exp_name']} fold {fold}] {kind} probe on {scores[kind]['n_epochs']} test epochs: "
                  f"{describe(scores[kind])}", flush=True)
    return scores


def finish(config: dict) -> list[dict]:
    """Pool the folds scored so far into results/<run>/ (metrics.json, plots) for each configured probe."""
    if not config["probe"]["run_after_pretraining"]:
        return []
    return [write_results(with_probe(config, kind)) for kind in probe_kinds(config["probe"])]


def main(paradigm: str, argv=None) -> None:
    cli.main(paradigm, run_fold, finish, argv)
