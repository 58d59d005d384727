"""Latent-space evaluation: metric values on hand-made cases (worked out by hand or from the written
definition), the chunked trustworthiness against scikit-learn, faithful vs scrambled maps,
clear errors, the CLI end to end on tiny synthetic embeddings in a temporary working directory, and
reports that add up folds evaluated separately (stale or differently-set folds left out)."""
import csv
import json

import numpy as np
import pytest
from scipy.stats import spearmanr
from sklearn.manifold import trustworthiness as sklearn_trustworthiness
from sklearn.metrics import adjusted_mutual_info_score, davies_bouldin_score, mutual_info_score

from benchmarks.bench_latent import gaussian_mixture, write_embeddings
from latent_space_evaluation import metrics as M
from latent_space_evaluation.evaluate import (EmbeddingsError, FoldEvaluation, evaluate_run, find_embeddings,
                                             load_embeddings)
from latent_space_evaluation.reducers import pca_map, stratified_subsample, tsne_map
from latent_space_evaluator import main


def planar_clusters(n_per_stage=60, dim=16, seed=0):
    """Five well-separated 2-D Gaussian blobs placed in a random plane of R^dim (plus tiny noise):
    stage clusters are obvious and a 2-D map can keep every neighbourhood."""
    rng = np.random.default_rng(seed)
    stages = np.repeat(np.arange(5), n_per_stage)
    centres = 30.0 * np.array([[0, 0], [1, 0], [0, 1], [1, 1], [0.5, 2]])
    plane = centres[stages] + rng.normal(size=(len(stages), 2))
    basis = np.linalg.qr(rng.normal(size=(dim, 2)))[0]  # (dim, 2) orthonormal
    z = plane @ basis.T + 0.01 * rng.normal(size=(len(stages), dim))
    return z, stages


def by_name(metrics):
    return {(m.name, m.space): m.value for m in metrics}


# ----------------------------------------------------------------------------- formulas on small cases
def test_purity_and_entropy_by_hand():
    stages = np.array([0, 0, 0, 1, 1, 2])
    clusters = np.array([0, 0, 1, 1, 1, 1])
    # cluster 0 = {0, 0}: pure; cluster 1 = {0, 1, 1, 2}: majority 2 of 4, entropy 1.5 bits = 1.5 ln 2 nats
    assert M.purity(stages, clusters) == pytest.approx(4 / 6)
    assert M.average_entropy(stages, clusters) == pytest.approx(4 / 6 * 1.5 * np.log(2))
    assert M.purity(stages, stages) == 1.0 and M.average_entropy(stages, stages) == 0.0
    # H(stage | cluster) = H(stage) - I(stage; cluster)
    entropy_stages = -np.sum(np.array([3, 2, 1]) / 6 * np.log(np.array([3, 2, 1]) / 6))
    assert M.average_entropy(stages, clusters) == pytest.approx(entropy_stages - mutual_info_score(stages, clusters))


def test_compactness_separation_by_hand():
    z = np.array([[0.0], [2.0], [10.0], [12.0], [20.0], [22.0]])
    stages = np.array([0, 0, 1, 1, 2, 2])  # centroids 1, 11, 21
    compactness, separation = M.compactness_separation(z, stages)
    assert compactness == pytest.approx(1.0)
    assert separation == pytest.approx((10 + 20 + 10) / 3)


# Five pairs on a line, 9 apart: k-means (k = 5) finds the pairs. The stages agree except the last epoch
# (stage 0, not 4), so stage 0 = {0, 1, 41}, stage 4 = {40}.
PAIRS = np.array([[0.0], [1.0], [10.0], [11.0], [20.0], [21.0], [30.0], [31.0], [40.0], [41.0]])
PAIR_STAGES = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 0])


def silhouette_by_definition(z, groups):
    """Mean over points of (b - a) / max(a, b) (a: mean distance to its own group, b: to the nearest other
    group; 0 for a point alone in its group), written from Rousseeuw (1987)."""
    distances = np.abs(z - z.T)  # 1-D points
    values = []
    for i, group in enumerate(groups):
        own = (groups == group) & (np.arange(len(z)) != i)
        if not own.any():
            values.append(0.0)
            continue
        a = distances[i, own].mean()
        b = min(distances[i, groups == other].mean() for other in set(groups) - {group})
        values.append((b - a) / max(a, b))
    return float(np.mean(values))


def test_latent_metrics_on_five_pairs_by_hand():
    metrics = by_name(M.latent_metrics(PAIRS, PAIR_STAGES, np.arange(10), seed=0))
    pairs = np.repeat(np.arange(5), 2)
    # k-means clusters = the pairs: a = 1 everywhere; b = 10.5 at the two ends, 9.5 elsewhere
    assert metrics["silhouette_kmeans", "latent"] == pytest.approx((2 * 9.5 / 10.5 + 8 * 8.5 / 9.5) / 10)
    assert metrics["silhouette_kmeans", "latent"] == pytest.approx(silhouette_by_definition(PAIRS, pairs))
    assert metrics["silhouette_labels", "latent"] == pytest.approx(silhouette_by_definition(PAIRS, PAIR_STAGES))
    # Davies-Bouldin of the pairs: s = 0.5 in each, neighbouring centroids 10 apart: (0.5 + 0.5) / 10
    assert metrics["davies_bouldin_kmeans", "latent"] == pytest.approx(0.1)
    # the last pair holds stages {4, 0}: 9 of 10 epochs in their cluster's majority, H = ln 2 there
    assert metrics["purity_kmeans", "latent"] == pytest.approx(0.9)
    assert metrics["entropy_kmeans", "latent"] == pytest.approx(0.2 * np.log(2))
    stage_shares = np.array([0.3, 0.2, 0.2, 0.2, 0.1])
    assert metrics["mutual_info_kmeans", "latent"] == pytest.approx(
        -np.sum(stage_shares * np.log(stage_shares)) - 0.2 * np.log(2))
    # ARI from pair counts: sum C(n_ij, 2) = 4, rows sum C(a_i, 2) = 6, columns 5, C(10, 2) = 45:
    # (4 - 6 * 5 / 45) / ((6 + 5) / 2 - 6 * 5 / 45) = 20 / 29
    assert metrics["adjusted_rand_index_kmeans", "latent"] == pytest.approx(20 / 29)


def test_uniformity_matches_the_pairwise_formula():
    z = np.random.default_rng(0).normal(size=(300, 8))
    unit = z / np.linalg.norm(z, axis=1, keepdims=True)
    i, j = np.triu_indices(len(z), k=1)
    expected = np.log(np.mean(np.exp(-2 * np.sum((unit[i] - unit[j]) ** 2, axis=1))))
    assert M.uniformity(z, block_rows=64) == pytest.approx(expected, abs=1e-6)
    assert M.uniformity(np.ones((10, 8))) == pytest.approx(0.0, abs=1e-6)  # collapsed: the worst value


def test_stratified_subsample_keeps_shares_and_rare_stages():
    stages = np.r_[np.zeros(5000, int), np.ones(3000, int), np.full(1990, 2), np.full(10, 3)]
    picked = stratified_subsample(stages, 1000, seed=1)
    assert len(picked) == 1000 and np.all(np.diff(picked) > 0)
    assert np.bincount(stages[picked]).tolist() == [500, 300, 199, 1]
    assert np.array_equal(picked, stratified_subsample(stages, 1000, seed=1))
    assert not np.array_equal(picked, stratified_subsample(stages, 1000, seed=2))
    assert np.array_equal(stratified_subsample(stages[:50], 1000, seed=1), np.arange(50))


# ----------------------------------------------------------------------------- agreement with scikit-learn
def test_chunked_trustworthiness_equals_sklearn():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(240, 12))
    maps = {"pca": pca_map(z, 0), "random": rng.normal(size=(240, 2)), "coords": z[:, :2]}
    for k in (5, 10):
        ours = M.trustworthiness(z, maps, n_neighbors=k)
        for name, embedded in maps.items():
            assert ours[name] == pytest.approx(sklearn_trustworthiness(z, embedded, n_neighbors=k), abs=1e-12)


def test_latent_metrics_wiring_for_the_metrics_without_a_hand_case():
    """Wiring only (the values are scikit-learn's): labels vs clusters go to the right metric on a realistic case."""
    z, stages = gaussian_mixture(400, 16, seed=3, separation=0.6)
    metrics = by_name(M.latent_metrics(z, stages, np.arange(len(z)), seed=0))
    clusters = M.kmeans_clusters(z, seed=0)
    assert metrics["davies_bouldin_labels", "latent"] == pytest.approx(davies_bouldin_score(z, stages))
    assert metrics["adjusted_mutual_info_kmeans", "latent"] == pytest.approx(
        adjusted_mutual_info_score(stages, clusters))


def test_trustworthiness_of_six_points_by_hand():
    """Gaps 1, 2, 3, 4, 5 on a line; the map swaps the two end points. k = 1, scale 2 / (n k (2n - 3k - 1)) = 1/24.
    False map neighbours: point 5 (mapped to 0) -> point 1, latent rank 4; point 1 -> point 5, rank 5;
    point 0 (mapped to 15) -> point 4, rank 4. Penalty (4-1) + (5-1) + (4-1) = 10: T = 1 - 10/24."""
    z = np.array([[0.0], [1.0], [3.0], [6.0], [10.0], [15.0]])
    swapped = z[[5, 1, 2, 3, 4, 0]]
    trust = M.trustworthiness(z, {"swapped": np.c_[swapped, np.zeros(6)], "same": np.c_[z, np.zeros(6)]}, n_neighbors=1)
    assert trust["swapped"] == pytest.approx(14 / 24)
    assert trust["same"] == 1.0


def test_trustworthiness_is_one_for_an_isometry_and_low_for_a_permutation():
    rng = np.random.default_rng(0)
    plane = rng.normal(size=(300, 2))
    z = plane @ np.linalg.qr(rng.normal(size=(16, 2)))[0].T  # (300, 16): the plane embedded in R^16
    angle = 0.7
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    maps = {"isometry": plane @ rotation.T + [5.0, -3.0], "permuted": plane[rng.permutation(300)]}
    trust = M.trustworthiness(z, maps, n_neighbors=10)
    assert trust["isometry"] == pytest.approx(1.0, abs=1e-12)
    assert trust["permuted"] < 0.6  # a random map scores about 0.5


def test_distance_alignment_is_spearman_over_all_pairs():
    rng = np.random.default_rng(1)
    z, embedded = rng.normal(size=(60, 5)), rng.normal(size=(60, 2))
    i, j = np.triu_indices(60, k=1)
    expected = spearmanr(np.linalg.norm(z[i] - z[j], axis=1), np.linalg.norm(embedded[i] - embedded[j], axis=1))
    assert M.distance_alignment(z, embedded) == pytest.approx(expected.statistic)
    assert M.distance_alignment(np.c_[z[:, :2], np.zeros((60, 3))], 3.0 * z[:, :2], n_pairs=500) == pytest.approx(1.0)


# ----------------------------------------------------------------------------- behaviour
def test_well_separated_clusters_score_near_perfect():
    z, stages = planar_clusters()
    latent = by_name(M.latent_metrics(z, stages, np.arange(len(z)), seed=0))
    assert latent["silhouette_labels", "latent"] > 0.9
    assert latent["purity_kmeans", "latent"] == 1.0
    assert latent["entropy_kmeans", "latent"] == pytest.approx(0.0, abs=1e-12)
    assert latent["adjusted_rand_index_kmeans", "latent"] == pytest.approx(1.0)
    assert latent["adjusted_mutual_info_kmeans", "latent"] == pytest.approx(1.0)
    assert latent["compactness_separation_ratio", "latent"] < 0.1
    maps = by_name(M.map_metrics(z, stages, {"pca": pca_map(z, 0), "tsne": tsne_map(z, 0)}, seed=0))
    assert maps["trustworthiness", "latent->pca"] > 0.99
    assert maps["distance_alignment_spearman", "latent->pca"] > 0.99
    assert maps["trustworthiness", "latent->tsne"] > 0.95
    assert maps["silhouette_labels", "tsne"] > 0.8


def test_random_labels_score_zero_agreement():
    z, _ = gaussian_mixture(1500, 16, seed=0, separation=1.0)
    random_stages = np.random.default_rng(0).integers(0, 5, len(z))
    metrics = by_name(M.latent_metrics(z, random_stages, np.arange(len(z)), seed=0))
    assert abs(metrics["adjusted_rand_index_kmeans", "latent"]) < 0.01
    assert abs(metrics["adjusted_mutual_info_kmeans", "latent"]) < 0.01
    assert metrics["silhouette_labels", "latent"] < 0.02


def test_scrambled_map_scores_low_where_the_faithful_one_scores_high():
    """The reference compared the embedding with itself (always 1.0); a map that keeps the points but
    scrambles which epoch sits where must be caught."""
    z, stages = planar_clusters()
    faithful = pca_map(z, 0)
    scrambled = faithful[np.random.default_rng(0).permutation(len(z))]
    metrics = by_name(M.map_metrics(z, stages, {"faithful": faithful, "scrambled": scrambled}, seed=0))
    assert metrics["trustworthiness", "latent->faithful"] > 0.99
    assert metrics["trustworthiness", "latent->scrambled"] < 0.6
    assert metrics["distance_alignment_spearman", "latent->faithful"] > 0.99
    assert abs(metrics["distance_alignment_spearman", "latent->scrambled"]) < 0.1


# ----------------------------------------------------------------------------- errors and the CLI
def test_missing_embeddings_name_the_expected_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"run_x/embeddings_fold-01\.pt.*\n.*python train_crl\.py"):
        find_embeddings("run_x", checkpoints_dir=tmp_path, create_hint="python train_crl.py --config c.json")
    with pytest.raises(FileNotFoundError, match=r"run_x/embeddings_fold-07\.pt"):
        find_embeddings("run_x", fold=7, checkpoints_dir=tmp_path)


def test_bad_embeddings_files_name_file_and_key(tmp_path):
    import torch

    z, stages = gaussian_mixture(50, 4, seed=0)
    path = tmp_path / "embeddings_fold-01.pt"
    torch.save({"z": torch.from_numpy(z)}, path)
    with pytest.raises(EmbeddingsError, match=r"embeddings_fold-01\.pt.*'y'"):
        load_embeddings(path)
    z[3, 1] = np.nan
    write_embeddings(path, z, stages)
    with pytest.raises(EmbeddingsError, match="1 NaN/inf"):
        load_embeddings(path)
    write_embeddings(path, np.ones_like(z), stages + 3)
    with pytest.raises(EmbeddingsError, match=r"stages 0\.\.4"):
        load_embeddings(path)


def test_cli_end_to_end(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.json").write_text(json.dumps(
        {"exp_name": "tiny", "backbone": {"type": "CNN"}, "ssl": {"type": "CRL"}}))
    with pytest.raises(SystemExit, match=r"checkpoints/tiny/embeddings_fold-01\.pt(.|\n)*train_crl\.py --config tiny"):
        main(["--config", "tiny.json"])

    for fold in (1, 2):
        z, stages = gaussian_mixture(260, 16, seed=fold, separation=0.8)
        write_embeddings(tmp_path / "checkpoints" / "tiny" / f"embeddings_fold-0{fold}.pt", z, stages, fold, "tiny")
    main(["--config", "tiny.json", "--max-points", "200", "--map-points", "150", "--seed", "3"])
    out = tmp_path / "results" / "tiny" / "latent"
    report = json.loads((out / "metrics.json").read_text())
    assert report["folds"] == [1, 2] and report["n_points"] == 520
    assert (report["max_points"], report["map_points"], report["seed"]) == (200, 150, 3)
    rows = {(r["metric"], r["space"]): r for r in report["metrics"]}
    assert set(M.BETTER) - M.SELF_COMPARISONS == {name for name, _ in rows}  # self-comparison only when asked
    for reduction in ("pca", "tsne", "umap"):
        trust = rows["trustworthiness", f"latent->{reduction}"]  # a range only: values are tested above
        assert 0.5 < trust["value"] <= 1.0 and [f["points"] for f in trust["per_fold"]] == [150, 150]
    assert [f["points"] for f in rows["silhouette_labels", "latent"]["per_fold"]] == [200, 200]
    assert [f["points"] for f in rows["purity_kmeans", "latent"]["per_fold"]] == [260, 260]
    with open(out / "metrics.csv") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and {r["better"] for r in table} == {"higher", "lower"}
    assert (out / "maps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    main(["--config", "tiny.json", "--fold", "2", "--max-points", "200", "--map-points", "100", "--summarize"])
    assert json.loads((out / "metrics.json").read_text())["folds"] == [2]  # fold 1 was mapped on 150 points
    printed = capsys.readouterr().out
    assert "fold-01: stored evaluation left out of the report: it used max_points=200, map_points=150, seed=3" \
        in printed and "wrote" in printed
    summary = (tmp_path / "results" / "latent_summary.md").read_text()
    assert "| Trustworthiness | trustworthiness | standard | latent->umap | higher |" in summary
    assert (tmp_path / "results" / "latent_summary.csv").is_file()
    assert (tmp_path / "results" / "latent_summary.png").is_file()


# ----------------------------------------------------------------------------- folds evaluated separately
SETTINGS = {"max_points": 200, "map_points": 150}


def tiny_run(root, folds=(1, 2), n=260):
    """Embeddings files of run 'tiny' under root/checkpoints: {fold: path}."""
    paths = {}
    for fold in folds:
        paths[fold] = root / "checkpoints" / "tiny" / f"embeddings_fold-0{fold}.pt"
        write_embeddings(paths[fold], *gaussian_mixture(n, 16, seed=fold, separation=0.8), fold, "tiny")
    return paths


def test_fold_evaluation_round_trips_through_its_file(tmp_path):
    rng = np.random.default_rng(0)
    evaluation = FoldEvaluation(7, 300, [M.Metric("uniformity", "latent", -1.234567890123, 200),
                                         M.Metric("trustworthiness", "latent->umap", 0.1 + 0.2, 150)],
                                {"pca": rng.normal(size=(150, 2)), "umap": rng.normal(size=(150, 2)).astype(np.float32)},
                                rng.integers(0, 5, 150), {"pca": 0.25})
    provenance = {"embeddings": "checkpoints/x/embeddings_fold-07.pt", "size": 123, "mtime_ns": 2**62, "seed": 1}
    evaluation.save(tmp_path / "fold-07.npz", provenance)
    loaded, loaded_provenance = FoldEvaluation.load(tmp_path / "fold-07.npz")
    assert loaded_provenance == provenance
    assert (loaded.fold, loaded.n_points, loaded.metrics, loaded.timings) == (7, 300, evaluation.metrics, {"pca": 0.25})
    assert list(loaded.maps) == ["pca", "umap"] and loaded.maps["umap"].dtype == np.float32
    assert all(np.array_equal(loaded.maps[name], evaluation.maps[name]) for name in evaluation.maps)
    assert np.array_equal(loaded.map_stages, evaluation.map_stages)
    assert [p.name for p in tmp_path.iterdir()] == ["fold-07.npz"]  # no temporary file left behind


def test_folds_evaluated_one_at_a_time_add_up_to_the_one_call_report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.json").write_text(json.dumps(
        {"exp_name": "tiny", "backbone": {"type": "CNN"}, "ssl": {"type": "CRL"}}))
    paths = tiny_run(tmp_path)
    for fold in (2, 1):  # in any order, e.g. from parallel jobs
        main(["--config", "tiny.json", "--fold", str(fold), "--max-points", "200", "--map-points", "150"])
    assert "(folds 1, 2)" in capsys.readouterr().out
    out = tmp_path / "results" / "tiny" / "latent"
    separate = json.loads((out / "metrics.json").read_text())
    together = evaluate_run([paths[1], paths[2]], "tiny", tmp_path / "together", **SETTINGS,
                            progress=lambda line: None)
    assert separate["folds"] == together["folds"] == [1, 2]
    assert separate["embeddings"] == [str(p.relative_to(tmp_path)) for p in paths.values()]
    for key in ("n_points", "n_points_per_fold", "embedding_dim", "max_points", "map_points", "seed"):
        assert separate[key] == together[key]
    assert separate["metrics"] == together["metrics"]
    assert list(separate["timings_s"]) == ["fold-01", "fold-02"]
    assert (out / "maps.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with open(out / "metrics.csv") as f:
        assert {row["n_folds"] for row in csv.DictReader(f)} == {"2"}


def test_stale_or_unreadable_stored_folds_are_left_out_by_name(tmp_path):
    paths = tiny_run(tmp_path)
    out = tmp_path / "latent"
    for fold in (1, 2):
        evaluate_run([paths[fold]], "tiny", out, **SETTINGS, progress=lambda line: None)
    write_embeddings(paths[1], *gaussian_mixture(250, 16, seed=9), 1, "tiny")  # fold 1 retrained
    (out / "folds" / "fold-05.npz").write_bytes(b"not a zip file")
    messages = []
    report = evaluate_run([paths[2]], "tiny", out, **SETTINGS, progress=messages.append)
    assert report["folds"] == [2] and json.loads((out / "metrics.json").read_text())["folds"] == [2]
    assert any(line.startswith("fold-01: ") and "changed" in line and "--fold 1" in line for line in messages)
    assert any(line.startswith("fold-05: ") and "cannot be read" in line for line in messages)
    paths[2].unlink()
    with pytest.raises(EmbeddingsError, match="no current fold evaluation"):
        evaluate_run([], "tiny", out, **SETTINGS, progress=messages.append)
    assert any(line.startswith("fold-02: ") and "is gone" in line for line in messages)


def test_folds_of_other_settings_do_not_mix(tmp_path):
    paths = tiny_run(tmp_path)
    out = tmp_path / "latent"
    evaluate_run([paths[1]], "tiny", out, **SETTINGS, seed=3, progress=lambda line: None)
    messages = []
    report = evaluate_run([paths[2]], "tiny", out, **SETTINGS, seed=4, progress=messages.append)
    assert report["folds"] == [2] and report["seed"] == 4
    assert [f["fold"] for row in report["metrics"] for f in row["per_fold"]] == [2] * len(report["metrics"])
    assert any(line.startswith("fold-01: ") and "seed=3" in line and "seed=4" in line for line in messages)
    again = evaluate_run([], "tiny", out, **SETTINGS, seed=3, progress=messages.append)
    assert again["folds"] == [1] and again["seed"] == 3
