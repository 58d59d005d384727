"""One fold end to end, as train_crl.py, train_mp.py and train_hybrid.py run it: pretrain -> embed -> probe(s).

    run_fold(config, fold, device)   load the fold once; pretrain (training.engine.train_fold); encode its
                                     train/val/test splits with the best checkpoint and save the test latents
                                     (embeddings_fold-0K.pt); fit and score each probe of probe.type
    finish(config, folds)            pool every fold's predictions into results/<run>/ for each probe; print
                                     the closing report (scores on the test subjects, where the files are)
    main(paradigm)                   the command line of the training scripts (training/cli.py)

Stage wall times go into `times` when given (benchmarks/bench_pipeline.py).
"""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path

from dset.loader import load_fold
from probing.probe import encode_fold, probe_kinds, probe_latents, with_probe
from probing.saved_probe import checkpoint_info
from probing.results import describe, record_checkpoint, results_dir, write_results
from training import cli
from training.checkpoint import checkpoint_dir, load_checkpoint
from training.engine import Distributed, save_embeddings, train_fold
from utils import fold_name


@contextmanager
def timed(times: dict | None, stage: str):
    """Add the block's wall time (s) to times[stage], also when it raises (a paused training); device work is
    synchronised by the stage itself."""
    started = time.perf_counter()
    try:
        yield
    finally:
        if times is not None:
            times[stage] = times.get(stage, 0.0) + time.perf_counter() - started


def run_fold(config: dict, fold: int, device, resume: bool = False, distributed: Distributed = Distributed(),
             times: dict | None = None, deadline: float | None = None) -> dict[str, dict]:
    """Pretrain, embed and probe one fold; {probe kind: test metrics} (empty on the other DDP ranks).
    `deadline`: see training.engine.train_fold (TrainingPaused propagates; nothing is embedded then)."""
    with timed(times, "data_load"):
        data = load_fold(config["data"], fold)
    with timed(times, "pretraining"):
        best_path = train_fold(config, fold, device, resume=resume, distributed=distributed, data=data,
                               deadline=deadline)
    if not distributed.is_main:
        return {}
    with timed(times, "embedding"):
        model, ckpt = load_checkpoint(best_path, device=device)
        latents = encode_fold(model, ckpt["input_norm"], data, device, config["trainer"]["amp"])
        save_embeddings(config, fold, data.test, latents["test"], best_path)
    scores = {}
    if config["probe"]["run_after_pretraining"]:
        for kind in probe_kinds(config["probe"]):
            with timed(times, f"probe_{kind}"):
                scores |= probe_latents(latents, data, with_probe(config, kind), fold, device, config["ssl"]["type"],
                                        checkpoint_info(model, ckpt["input_norm"], config, fold, config["ssl"]["type"]))
            record_checkpoint(results_dir(with_probe(config, kind)), fold, best_path)
            print(f"[{config['exp_name']} fold {fold}] {kind} probe on {scores[kind]['n_epochs']} test epochs: "
                  f"{describe(scores[kind])}", flush=True)
    return scores


def finish(config: dict, folds: list[int]) -> None:
    """Pool the folds scored so far into results/<run>/ (metrics.json, plots) for each configured probe, then
    print the closing report."""
    runs = [with_probe(config, kind) for kind in probe_kinds(config["probe"])] if config["probe"]["run_after_pretraining"] else []
    for run in runs:
        write_results(run)
    print(closing_report(config, folds, runs))


def closing_report(config: dict, folds: list[int], runs: list[dict]) -> str:
    """What a finished run produced: each probe's test-subject scores (its metrics.json) and where everything is."""
    lines = [f"{config['exp_name']}: trained fold(s) {', '.join(map(str, folds))}"]
    for run in runs:
        results = results_dir(run)
        metrics = json.loads((results / "metrics.json").read_text())
        pooled = metrics["pooled"]
        kappa = "n/a" if pooled.get("kappa") is None else f"{pooled['kappa']:.3f}"
        lines.append(f"  {metrics['classifier']}, test subjects ({metrics['n_folds']} fold(s), {metrics['n_epochs']} "
                     f"epochs): ACC {100 * pooled['accuracy']:.1f} %, MF1 {pooled['macro_f1']:.3f}, kappa {kappa}; {results}/")
        if metrics.get("stale_folds"):
            lines.append(f"  fold(s) {metrics['stale_folds']} were probed with an earlier checkpoint: "
                         "re-run python classifier_training.py --config <config> --fold K")
    if not runs:
        lines.append("  no probe results (probe.run_after_pretraining is false): "
                     "python classifier_training.py --config <config> --fold all")
    checkpoints = ", ".join(str(checkpoint_dir(config) / f"ckpt_{fold_name(f)}.pth") for f in folds)
    lines += [f"  checkpoints: {checkpoints}", f"  TensorBoard: tensorboard --logdir {Path('logs') / config['exp_name']}"]
    return "\n".join(lines)


def main(paradigm: str, argv=None) -> None:
    cli.main(paradigm, run_fold, finish, argv)
