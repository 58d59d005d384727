"""The cost of the table: one config on one fold end to end, every stage timed, and the 9 x 10 projection.

    python benchmarks/bench_pipeline.py --config configs/DLPROJ_pretrain_CRL_CNN_Attention_Sleep-EDF-2018.json \
        --fold 1 --gpu 0 --set data.root_dir=/data/npz --json pipeline_CRL_CNN_Attention.json
    python benchmarks/bench_pipeline.py ... --workdir W --stop-after 480   # pauses at the first validation after
    python benchmarks/bench_pipeline.py ... --workdir W --resume           # 480 s (exit 3); then continues, any machine
    python benchmarks/bench_pipeline.py --project pipeline_CRL_CNN_Attention.json pipeline_Hybrid_Transformer.json
    python benchmarks/bench_pipeline.py --project pipeline_CRL_CNN_Attention.json --throughput bench_train.json \
        --shared pipeline_MP_CNN_mps.json --mps 1.30 3.0   # epochs of runs made on a shared GPU; 4 runs under MPS
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
seeing the whole batch at once (before issue 15) and in chunks of trainer.val_chunk_size (now), and the
loss of both. The projection multiplies the mean cost of a fold over the given JSON files by 9 configs x 10 folds;
with --throughput (bench_train.py's JSON) it models each config without a report from its own samples/s.
--shared names reports of runs that shared their GPU with others (`run_gpu_benchmark.sh pipelines`): their
stage times are not a lone run's, but their epochs to early stopping are, so the projection models those
configs from their samples/s at their own measured epochs. --mps GAIN OVERLAP adds the table's GPU-hours with
several runs per GPU under NVIDIA MPS: training and validation GAIN times faster in all, the other GPU stages
overlapped OVERLAP times (both measured by the `mps` and `table` stages of run_gpu_benchmark.sh).

A run to early stopping can outlast a time-limited call (a 10-minute device call, a SLURM job). With
--stop-after it pauses after a validation and saves the engine's resume state, and --resume continues it in
the same --workdir (copied to another machine if need be). Training and validation then add up over the
segments (SEGMENTS). Data load and compilation count once, as a single run pays them; what each resumption
paid again is reported as resume_overhead_s and left out of the total.
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
from statistics import fmean

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from utils import InputError  # noqa: E402 (after the path insert)

TABLE_RUNS = 9 * 10  # configs x folds of the seed table
PAUSED_EXIT_STATUS = 3  # the run paused at --stop-after; --resume continues it
SEGMENTS = "bench_segments.json"  # in --workdir: one entry per invocation (a paused one, then its resumptions)
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
    for mode, chunking in (("whole", nullcontext()), ("chunked", chunked_backbone(model.backbone, t["val_chunk_size"]))):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        torch.manual_seed(t["seed"] + 1)
        with torch.no_grad(), chunking, torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            loss = float(objective(batch, y_val[idx])[0])
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        result[mode] = {"loss": loss, "peak_gpu_memory_gb": peak}
    return result


def run(args) -> dict | None:
    """The report of the finished run, or None when this segment paused at --stop-after (see SEGMENTS)."""
    import pipeline
    from dset.loader import load_fold
    from latent_space_evaluation.evaluate import evaluate_run
    from training.checkpoint import checkpoint_dir, embeddings_path
    from training.config import load_config
    from training.engine import TrainingPaused
    from utils import fold_name, select_device

    overrides = list(args.set) + ([f"trainer.max_epochs={args.max_epochs}"] if args.max_epochs else [])
    config = load_config(args.config, overrides)
    for key in ("root_dir", "splits"):  # the run happens in the scratch directory
        config["data"][key] = str(Path(config["data"][key]).resolve())
    device = select_device(args.gpu)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_pipeline_"))
    ledger = workdir / SEGMENTS
    if args.resume and not ledger.is_file():
        raise InputError(f"--resume: {ledger} does not exist; there is no paused run in {workdir} to continue")
    if not args.resume and (ledger.is_file() or (workdir / "checkpoints").exists()):
        raise InputError(f"{workdir} already holds a run; --resume continues it, or give another --workdir")
    workdir.mkdir(parents=True, exist_ok=True)
    segments = json.loads(ledger.read_text()) if args.resume else []
    if segments and not segments[-1]["paused"]:
        raise InputError(f"--resume: the run in {workdir} is complete (see {ledger}); there is nothing to continue")
    deadline = time.monotonic() + args.stop_after if args.stop_after is not None else None
    here = os.getcwd()
    os.chdir(workdir)
    try:
        times, started = {}, time.perf_counter()
        try:
            scores = pipeline.run_fold(config, args.fold, device, resume=args.resume, times=times, deadline=deadline)
        except TrainingPaused as paused:
            print(paused)
            scores = None
        train = json.loads((checkpoint_dir(config) / f"train_{fold_name(args.fold)}.json").read_text())
        segment = {"date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "paused": scores is None,
                   "data_load": times["data_load"], "compile": train["first_step_seconds"],
                   "training": times["pretraining"] - train["first_step_seconds"] - train["validation_seconds"],
                   "validation": train["validation_seconds"], "epochs_completed": train["epochs_completed"],
                   "steps": train["steps"], "train_samples_per_s": train["train_samples_per_s"]}
        if scores is not None:
            t0 = time.perf_counter()
            evaluate_run([embeddings_path(config, args.fold)], config["exp_name"],
                         Path("results") / config["exp_name"] / "latent", 10_000, 5_000, 0, progress=lambda line: None)
            times["latent_eval"] = time.perf_counter() - t0
        segment["wall_s"] = time.perf_counter() - started
        segments.append(segment)
        ledger.write_text(json.dumps(segments, indent=2))
        if scores is not None:  # a measurement of its own, outside the run's wall time
            memory = validation_memory(config, load_fold(config["data"], args.fold), device)
    finally:
        os.chdir(here)
    if scores is None:
        return None
    first, resumed = segments[0], segments[1:]
    stages = {"data_load": first["data_load"], "compile": first["compile"],
              "training": sum(s["training"] for s in segments), "validation": sum(s["validation"] for s in segments),
              "embedding": times["embedding"], **{k: v for k, v in times.items() if k.startswith("probe_")},
              "latent_eval": times["latent_eval"]}
    resume_overhead = sum(s["data_load"] + s["compile"] for s in resumed)  # a single run would not pay it
    return {"config": config["exp_name"], "source": args.config, "fold": args.fold, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "overrides": overrides, "date": time.strftime("%Y-%m-%d", time.gmtime()),
            "stages_s": stages, "total_s": sum(s["wall_s"] for s in segments) - resume_overhead,
            "segments": segments, "resume_overhead_s": resume_overhead, "training": train,
            "validation_memory": memory,
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
    if len(report["segments"]) > 1:
        print(f"trained in {len(report['segments'])} segments (--stop-after, --resume); each resumption's data load "
              f"and compilation, {report['resume_overhead_s']:.1f} s in all, are left out of the total")
    for mode, m in report["validation_memory"].items():
        peak = "-" if m["peak_gpu_memory_gb"] is None else f"{m['peak_gpu_memory_gb']:.2f} GB"
        print(f"validation batch, encoder {mode}: loss {m['loss']:.6f}, peak {peak}")
    print(f"training peak {train['peak_training_gpu_memory_gb']}, validation peak "
          f"{train['peak_validation_gpu_memory_gb']} (GB, during the run)")
    for kind, m in report["probe_metrics"].items():
        print(f"{kind} probe: accuracy {100 * m['accuracy']:.1f} %, macro-F1 {m['macro_f1']:.3f}, kappa {m['kappa']:.3f}")


def project(reports: list[dict], samples_per_s: dict[str, float] | None = None,
            shared: list[dict] | None = None, mps: tuple[float, float] | None = None) -> dict:
    """Device-hours of the 9 x 10 table (TABLE_RUNS).

    Without `samples_per_s`: the mean cost of a fold over the measured runs, x 90. With it ({config: training
    samples/s}, bench_train.py's JSON), per config: a measured config costs what it measured; any other costs the
    measured runs' mean fixed stages (all but training and validation) plus its epochs at its own samples/s, with
    validation at the measured runs' mean share of training; the nine costs x 10 folds. A config's epochs are
    those of its run in `shared` (reports of runs that shared their GPU: their epochs count, their times do not),
    else the mean epochs of every run in `reports` and `shared`. Latent evaluation needs only the CPU, and
    benchmark.py runs it beside the next run's training, so the GPU-hours leave it out.

    Compilation: where a report was resumed (--resume), its later segments compiled the same step again with the
    inductor cache warm, as folds 2-10 of a config do on one machine. Then each config's fold 1 pays its measured
    compile and folds 2-10 pay the mean warm compile (`warm_compile_s`); without such a segment every fold pays
    the cold compile.

    `mps` = (gain, overlap): several runs per GPU under NVIDIA MPS train `gain` times the samples/s of one alone
    and overlap their other GPU stages `overlap` times; `table_gpu_hours_mps` divides the GPU-hours so."""
    latent = fmean(r["stages_s"].get("latent_eval", 0.0) for r in reports)
    warm_runs = [s["compile"] for r in reports for s in r.get("segments", [])[1:]]
    warm_compile = fmean(warm_runs) if warm_runs else None
    per_config = {r["config"]: {"fold_s": r["total_s"], "gpu_fold_s": r["total_s"] - r["stages_s"].get("latent_eval", 0.0),
                                "train_val_s": r["stages_s"]["training"] + r["stages_s"].get("validation", 0.0),
                                "compile_s": r["stages_s"].get("compile", 0.0), "source": "measured"} for r in reports}
    epochs = val_share = None
    if samples_per_s:
        fixed = fmean(r["total_s"] - r["stages_s"]["training"] - r["stages_s"]["validation"] for r in reports)
        measured_epochs = {r["config"]: r["training"]["epochs_completed"] for r in reports + (shared or [])}
        epochs = fmean(measured_epochs.values())
        epoch_samples = fmean(r["training"]["steps"] * r["training"]["global_batch"] / r["training"]["epochs_completed"]
                             for r in reports)
        val_share = fmean(r["stages_s"]["validation"] / r["stages_s"]["training"] for r in reports)
        compile_s = fmean(r["stages_s"].get("compile", 0.0) for r in reports)
        for config in sorted(set(samples_per_s) - set(per_config)):
            train_val_s = measured_epochs.get(config, epochs) * epoch_samples / samples_per_s[config] * (1 + val_share)
            per_config[config] = {"fold_s": fixed + train_val_s, "gpu_fold_s": fixed + train_val_s - latent,
                                  "train_val_s": train_val_s, "compile_s": compile_s,
                                  "source": "modelled, epochs measured" if config in measured_epochs else "modelled"}
    folds = TABLE_RUNS // 9
    weight = 1 if samples_per_s else 9 / len(per_config)  # each cost stands for one config, or for 9/len of them
    warm_saving = 0.0 if warm_compile is None else sum(c["compile_s"] - warm_compile for c in per_config.values())

    def table_hours(key: str, compiles: bool = True) -> float:
        """Hours of the per-config costs `key`; where they include compilation, folds 2-10 compile warm."""
        saving = warm_saving if compiles else 0.0
        return weight * (folds * sum(c[key] for c in per_config.values()) - (folds - 1) * saving) / 3600

    largest = max(STAGES, key=lambda s: sum(r["stages_s"].get(s, 0.0) for r in reports))
    projection = {"runs": [r["config"] for r in reports], "mean_fold_s": fmean(r["total_s"] for r in reports),
                  "table_device_hours": table_hours("fold_s"), "table_gpu_hours_latent_beside": table_hours("gpu_fold_s"),
                  "warm_compile_s": warm_compile, "largest_stage": largest, "per_config": per_config,
                  "model_epochs": epochs, "validation_share": val_share}
    if mps:
        gain, overlap = mps
        train_val = table_hours("train_val_s", compiles=False)
        projection["table_gpu_hours_mps"] = train_val / gain + (projection["table_gpu_hours_latent_beside"] - train_val) / overlap
    return projection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="the config to run end to end")
    parser.add_argument("--fold", type=int, default=1)
    parser.add_argument("--gpu", default="0", help="CUDA device id or 'cpu'")
    parser.add_argument("--max-epochs", type=int, help="cap trainer.max_epochs (smoke tests; default: as shipped)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--workdir", help="where checkpoints/, logs/, results/ go (default: a new temporary folder)")
    parser.add_argument("--stop-after", type=float, metavar="SECONDS",
                        help="pause training at the first validation after SECONDS (a time-limited device call or "
                             "job); exits with status 3, and --resume continues")
    parser.add_argument("--resume", action="store_true", help="continue the paused run in --workdir")
    parser.add_argument("--json", type=Path, help="write the report here")
    parser.add_argument("--project", nargs="+", type=Path, metavar="JSON",
                        help="project the 9 x 10 table from these reports instead of running")
    parser.add_argument("--throughput", type=Path, metavar="JSON",
                        help="bench_train.py's JSON: model the configs without a report from their samples/s")
    parser.add_argument("--shared", nargs="+", type=Path, default=[], metavar="JSON",
                        help="reports of runs that shared their GPU (run_gpu_benchmark.sh pipelines): their epochs "
                             "to early stopping count, their times do not (needs --throughput)")
    parser.add_argument("--mps", nargs=2, type=float, metavar=("GAIN", "OVERLAP"),
                        help="also project several runs per GPU under MPS: training GAIN times faster in all, the "
                             "other GPU stages overlapped OVERLAP times")
    args = parser.parse_args()
    if not (args.config or args.project):
        parser.error("give --config (run one fold) or --project REPORT.json ...")
    if args.shared and not args.throughput:
        parser.error("--shared needs --throughput: a run on a shared GPU gives its epochs, not its time")

    def read_json(path: Path):
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise SystemExit(f"error: {path}: {exc}") from None

    reports = [read_json(path) for path in args.project or []]
    if args.resume and not args.workdir:
        parser.error("--resume needs the --workdir of the paused run")
    if args.config:
        try:
            report = run(args)
        except InputError as exc:
            raise SystemExit(f"error: {exc}") from None
        if report is None:
            print(f"paused; continue with the same command plus --resume (workdir {args.workdir})")
            raise SystemExit(PAUSED_EXIT_STATUS)
        print_report(report)
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        reports.append(report)
    samples_per_s = None
    if args.throughput:
        samples_per_s = {row["config"]: row["samples_per_s"] for row in read_json(args.throughput)}
    projection = project(reports, samples_per_s, [read_json(path) for path in args.shared], args.mps)
    if samples_per_s:
        print(f"\n| config | one fold (s) | source |\n|---|---:|---|")
        for config, cost in projection["per_config"].items():
            print(f"| {config} | {cost['fold_s']:.0f} | {cost['source']} |")
        print(f"modelled: {projection['model_epochs']:.0f} epochs, validation {100 * projection['validation_share']:.0f} % "
              "of training, the measured runs' fixed stages")
    if projection["warm_compile_s"] is not None:
        print(f"folds 2-10 of each config compile in {projection['warm_compile_s']:.1f} s (inductor cache warm, as measured "
              "by the resumed segments); fold 1 pays the cold compile")
    print(f"\nprojection of the {TABLE_RUNS} runs (9 configs x 10 folds) from {', '.join(projection['runs'])}: "
          f"{projection['mean_fold_s']:.0f} s per measured fold -> {projection['table_device_hours']:.2f} device-hours on "
          f"one device, {projection['table_gpu_hours_latent_beside']:.2f} with the latent evaluation beside the next "
          f"run (benchmark.py); largest stage: {projection['largest_stage']}")
    if "table_gpu_hours_mps" in projection:
        print(f"with several runs per GPU under MPS (training x{args.mps[0]:g}, other GPU stages overlapped "
              f"x{args.mps[1]:g}): {projection['table_gpu_hours_mps']:.2f} GPU-hours")


if __name__ == "__main__":
    main()
