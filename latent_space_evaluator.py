"""Evaluate the latent space of a pretrained run: cluster quality of the sleep stages, faithfulness of
PCA / t-SNE / UMAP maps, and maps coloured by stage.

    python latent_space_evaluator.py --config configs/<config>.json            # every fold found
    python latent_space_evaluator.py --config configs/<config>.json --fold 3   # one fold, added to the report
    python latent_space_evaluator.py --embeddings path/to/embeddings_fold-01.pt
    python latent_space_evaluator.py --summarize                               # compare all evaluated runs

Reads checkpoints/<exp_name>/embeddings_fold-XX.pt (written by pretraining), stores each evaluated fold in
results/<exp_name>/latent/folds/fold-XX.npz and writes results/<exp_name>/latent/{metrics.json, metrics.csv,
maps.png} covering every fold evaluated so far with the same --max-points/--map-points/--seed whose embeddings
and checkpoint are unchanged (SHA-256; folds may be evaluated one at a time or in parallel jobs). Embeddings
made from a checkpoint that has been replaced since are refused. --summarize writes
results/latent_summary.{md,csv,png} and names each fold whose embeddings or checkpoint changed since it was
evaluated. Paths are relative to the working directory.
Metric definitions: latent_space_evaluation/metrics.py.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from latent_space_evaluation.evaluate import EmbeddingsError, evaluate_run, find_embeddings, load_embeddings, summarize
from utils import ConfigError, InputError

CHECKPOINTS_DIR = Path("checkpoints")
RESULTS_DIR = Path("results")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="config of the run (only exp_name is used)")
    parser.add_argument("--embeddings", help="one embeddings file to evaluate instead of the run's folds")
    parser.add_argument("--fold", type=int, help="evaluate only this fold (default: every fold found)")
    parser.add_argument("--max-points", type=int, default=10_000,
                        help="stratified subsample for quadratic metrics (silhouette, uniformity); default 10000")
    parser.add_argument("--map-points", type=int, default=5_000,
                        help="stratified subsample for the t-SNE/UMAP/PCA maps and their trustworthiness and "
                             "alignment (capped at --max-points); default 5000")
    parser.add_argument("--seed", type=int, default=0, help="seed of subsampling, k-means, t-SNE and UMAP")
    parser.add_argument("--self-comparison", action="store_true",
                        help="also report the reference's trustworthiness and alignment of the embeddings against "
                             "themselves (1 by construction; for reference-compatible runs), labelled as such")
    parser.add_argument("--summarize", action="store_true",
                        help="gather every results/*/latent/metrics.json into results/latent_summary.{md,csv,png}")
    args = parser.parse_args(argv)
    if not (args.config or args.embeddings or args.summarize):
        parser.error("give --config (or --embeddings) to evaluate a run, and/or --summarize")
    if args.embeddings and args.fold is not None:
        parser.error("--fold selects among a run's files; with --embeddings the file is given directly")
    for name in ("max_points", "map_points"):
        if getattr(args, name) < 100:
            parser.error(f"--{name.replace('_', '-')} must be at least 100")
    return args


def run_to_evaluate(args: argparse.Namespace) -> tuple[str, list[Path]]:
    """(exp_name, embedding files) from --config / --embeddings / --fold."""
    if args.config:
        from training.config import load_config

        config = load_config(args.config)
        exp_name = config["exp_name"]
        if args.embeddings:
            return exp_name, [Path(args.embeddings)]
        from training.paradigms import SCRIPTS

        script = SCRIPTS.get(config["ssl"]["type"], "classifier_training.py --baseline supervised")
        command = f"python {script} --config {args.config}"
        return exp_name, find_embeddings(exp_name, args.fold, CHECKPOINTS_DIR, create_hint=command)
    return load_embeddings(args.embeddings).exp_name, [Path(args.embeddings)]


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    try:
        if args.config or args.embeddings:
            exp_name, paths = run_to_evaluate(args)
            out_dir = RESULTS_DIR / exp_name / "latent"
            report = evaluate_run(paths, exp_name, out_dir, args.max_points, args.map_points, args.seed,
                                  self_comparison=args.self_comparison)
            print(f"wrote {out_dir / 'metrics.json'}, metrics.csv, maps.png (folds "
                  f"{', '.join(str(f) for f in report['folds'])})")
        if args.summarize:
            written = summarize(RESULTS_DIR)
            print("wrote " + ", ".join(str(p) for p in written))
    except (FileNotFoundError, ConfigError, InputError, EmbeddingsError) as exc:
        raise SystemExit(f"error: {exc}") from None


if __name__ == "__main__":
    main()
