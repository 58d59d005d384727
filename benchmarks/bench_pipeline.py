"""The cost of the table: one config on one fold end to end, every stage timed, and the 9 x 10 projection.

    python benchmarks/bench_pipeline.py --config configs/DLPROJ_pretrain_CRL_CNN_Attention_Sleep-EDF-2018.json \
        --fold 1 --gpu 0 --set data.root_dir=/data/npz --json pipeline_CRL_CNN_Attention.json
    python benchmarks/bench_pipeline.py --project pipeline_CRL_CNN_Attention.json pipeline_Hybrid_Transformer.json
    python benchmarks/bench_pipeline.py --config configs/demo/DEMO_CRL_CNN.json --gpu cpu --max-epochs 1 \
        --set trainer.max_steps_per_epoch=2                       # CPU smoke test on the demo data

The run is pipeline.run_fold (load -> pretrain to early stopping with the shipped settings -> embed ->
each probe) followed by the latent-space evaluation, in a scratch directory (--workdir) so that no run
of yours is touched. Stages:

    data_load      the fold's NPZ nights into memory
    compile        the first training step: torch.compile and CUDA-graph capture (on CPU: one eager step)
    training       the rest of pretraining without validation (steps, logging, checkpoints)
    validation     every validation pass
    embedding      the best checkpoint encoding train/val/test, the test latents saved
    probe_linear, probe_mlp
    latent_eval    latent_space_evaluator on the test latents (metrics, maps, plots)

It also measures validation memory on one validation batch of trainer.val_batch_size, with the encoder
seeing the whole batch at once (before issue 15) and in chunks of the training batch (now), and the loss
of both. The projection multiplies the mean cost of a fold over the given JSON files by 9 configs x 10 folds.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

TABLE_RUNS = 9 * 10  # configs x folds of the seed table
STAGES = ("data_load", "compile", "training", "validation", "embedding", "probe_linear", "probe_mlp", "latent_eval")


def validation_memory(config: dict, data, device) -> dict:
    """{"whole" | "chunked": {"loss", "peak_gpu_memory_gb"}} of one validation batch, eval mode, fixed seed."""
    from models.main_model import build_model
    from training.checkpoint import input_norm_of
    from training.engine import build_objective, chunked_backbone, standardised_batch

    t = config["trainer"]
    torch.manual_seed(t["seed"])
    model = build_model(config).to(device).eval()
    objective = build_objective(config, model)
    x_val, y_val = torch.from_numpy(data.val.x).to(device), torch.from_numpy(data.val.y).to(device)
    idx = torch.arange(min(t["val_batch_size"], len(x_val)), device=device)
    batch = standardised_batch(x_val, idx, input_norm_of(data.train.x, config["data"]["standardise"]))
    use_amp = t["amp"] and device.type == "cuda"
    result = {}
    for mode, chunking in (("whole", nullcontext()), ("chunked", chunked_backbone(model.backbone, t["batch_size"]))):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        torch.manual_seed(t["seed"] + 1)
        with torch.no_grad(), chunking, torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = float(objective(batch, y_val[idx])[0])
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        result[mode] = {"loss": loss, "peak_gpu_memory_gb": peak}
    return result


def run(args) -> dict:
    import pipeline
    from dset.loader import load_fold
    from latent_space_evaluation.evaluate import evaluate_run
    from training.checkpoint import checkpoint_dir, embeddings_path
    from training.config import load_config
    from utils import fold_name, select_device

    overrides = list(args.set) + ([f"trainer.max_epochs={args.max_epochs}"] if args.max_epochs else [])
    config = load_config(args.config, overrides)
    for key in ("root_dir", "splits"):  # the run happens in the scratch directory
        config["data"][key] = str(Path(config["data"][key]).resolve())
    device = select_device(args.gpu)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_pipeline_"))
    workdir.mkdir(parents=True, exist_ok=True)
    here = os.getcwd()
    os.chdir(workdir)
    try:
        times, started = {}, time.perf_counter()
        scores = pipeline.run_fold(config, args.fold, device, times=times)
        t0 = time.perf_counter()
        evaluate_run([embeddings_path(config, args.fold)], config["exp_name"],
                     Path("results") / config["exp_name"] / "latent", 10_000, 5_000, 0, progress=lambda line: None)
        times["latent_eval"] = time.perf_counter() - t0
        wall = time.perf_counter() - started
        train = json.loads((checkpoint_dir(config) / f"train_{fold_name(args.fold)}.json").read_text())
        memory = validation_memory(config, load_fold(config["data"], args.fold), device)
    finally:
        os.chdir(here)
    stages = {"data_load": times["data_load"], "compile": train["first_step_seconds"],
              "training": times["pretraining"] - train["first_step_seconds"] - train["validation_seconds"],
              "validation": train["validation_seconds"], "embedding": times["embedding"],
              **{k: v for k, v in times.items() if k.startswith("probe_")}, "latent_eval": times["latent_eval"]}
    return {"config": config["exp_name"], "source": args.config, "fold": args.fold, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "overrides": overrides, "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "stages_s": stages, "total_s": wall, "training": train, "validation_memory": memory,
            "probe_metrics": {kind: {k: s[k] for k in ("accuracy", "macro_f1", "kappa")} for kind, s in scores.items()},
            "workdir": str(workdir)}


def print_report(report: dict) -> None:
    train = report["training"]
    print(f"\n{report['config']} fold {report['fold']} on {report['device_name']} ({report['date']}): "
          f"{train['steps']} steps, {train['epochs_completed']} epochs, stopped early: {train['stopped_early']}, "
          f"{train['train_samples_per_s'] or 0:.0f} samples/s")
    print("| stage | seconds | share |\n|---|---:|---:|")
    for stage, seconds in report["stages_s"].items():
        print(f"| {stage} | {seconds:.1f} | {100 * seconds / report['total_s']:.0f} % |")
    print(f"| total | {report['total_s']:.1f} | |")
    for mode, m in report["validation_memory"].items():
        peak = "-" if m["peak_gpu_memory_gb"] is None else f"{m['peak_gpu_memory_gb']:.2f} GB"
        print(f"validation batch, encoder {mode}: loss {m['loss']:.6f}, peak {peak}")
    print(f"training peak {train['peak_training_gpu_memory_gb']}, validation peak "
          f"{train['peak_validation_gpu_memory_gb']} (GB, during the run)")
    for kind, m in report["probe_metrics"].items():
        print(f"{kind} probe: accuracy {100 * m['accuracy']:.1f} %, macro-F1 {m['macro_f1']:.3f}, kappa {m['kappa']:.3f}")


def project(reports: list[dict]) -> dict:
    """Mean seconds per (config, fold) over the measured runs, x 9 configs x 10 folds, in device-hours."""
    per_fold = sum(r["total_s"] for r in reports) / len(reports)
    largest = max(STAGES, key=lambda s: sum(r["stages_s"].get(s, 0.0) for r in reports))
    return {"runs": [r["config"] for r in reports], "mean_fold_s": per_fold,
            "table_device_hours": per_fold * TABLE_RUNS / 3600, "largest_stage": largest}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="the config to run end to end")
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--gpu", default="0", help="CUDA device id or 'cpu'")
    parser.add_argument("--max-epochs", type=int, help="cap trainer.max_epochs (smoke tests; default: as shipped)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--workdir", help="where checkpoints/, logs/, results/ go (default: a new temporary folder)")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--project", nargs="+", type=Path, metavar="JSON",
                        help="project the 9 x 10 table from these reports instead of running")
    args = parser.parse_args()
    if not (args.config or args.project):
        parser.error("give --config (run one fold) or --project REPORT.json ...")

    reports = [json.loads(path.read_text()) for path in args.project or []]
    if args.config:
        report = run(args)
        print_report(report)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        reports.append(report)
    projection = project(reports)
    print(f"\nprojection of the {TABLE_RUNS} runs (9 configs x 10 folds) from {', '.join(projection['runs'])}: "
          f"{projection['mean_fold_s']:.0f} s per fold -> {projection['table_device_hours']:.2f} device-hours on one "
          f"device; largest stage: {projection['largest_stage']}")


if __name__ == "__main__":
    main()
