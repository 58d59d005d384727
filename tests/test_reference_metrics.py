"""The reference implementation's definitions of the seed metrics, each against a hand computation from its
written definition, and the self-against-self values only when asked."""
import numpy as np
import pytest
from sklearn.manifold import trustworthiness as sklearn_trustworthiness

from latent_space_evaluation import metrics as M
from latent_space_evaluation.evaluate import Embeddings, evaluate_fold

# The 13 metric names of the seed page (reference latent_space_evaluation/README.md, "Metrics").
SEED_PAGE_METRICS = ["Silhouette Score", "Davies-Bouldin Index", "Adjusted Rand Index", "Adjusted Mutual Information",
                     "Purity Score", "Average Entropy", "Trustworthiness", "Intra-Class Compactness",
                     "Inter-Class Separation", "Compactness-to-Separation Ratio", "Mutual Information", "Uniformity",
                     "Alignment"]


def test_hungarian_purity_differs_from_standard_purity_on_four_points():
    stages = np.array([0, 0, 0, 1])
    clusters = np.array([0, 0, 1, 2])
    # standard: every cluster is pure -> 4/4; one-to-one: stage 0 gets cluster 0 (2 epochs), stage 1 cluster 2 (1)
    assert M.purity(stages, clusters) == 1.0
    assert M.purity_hungarian(stages, clusters) == pytest.approx(3 / 4)


def test_entropy_in_bits_by_hand():
    stages = np.array([0, 0, 0, 1, 1, 2])
    clusters = np.array([0, 0, 1, 1, 1, 1])
    # cluster {0, 0}: 0 bits; cluster {0, 1, 1, 2}: 1.5 bits; weighted 4/6 * 1.5 = 1 bit
    assert M.average_entropy(stages, clusters, base=2) == pytest.approx(1.0)


def test_squared_compactness_and_separation_by_hand():
    z = np.array([[0.0, 1.0], [2.0, 1.0], [4.0, 1.0], [10.0, 1.0], [13.0, 1.0], [20.0, 1.0]])
    stages = np.array([0, 0, 0, 1, 1, 2])
    # stage 0: squared distances 4, 16, 4 -> 8; stage 1: 9; stage 2 (one epoch): 0 -> (8 + 9 + 0) / 3
    # centroids 2, 11.5, 20: squared distances 90.25, 324, 72.25
    compactness, separation = M.squared_compactness_separation(z, stages)
    assert compactness == pytest.approx(17 / 3)
    assert separation == pytest.approx((90.25 + 324 + 72.25) / 3)
    ratio = {m.name: m.value for m in M.reference_geometry(z, stages, "latent")}["compactness_separation_ratio_sq"]
    assert ratio == pytest.approx(17 / 486.5)


def test_squared_compactness_equals_the_mean_over_distinct_pairs():
    rng = np.random.default_rng(0)
    z, stages = rng.normal(size=(40, 3)), rng.integers(0, 3, size=40)
    per_stage = []
    for s in range(3):
        members = z[stages == s]
        squared = [np.sum((a - b) ** 2) for i, a in enumerate(members) for j, b in enumerate(members) if i != j]
        per_stage.append(np.mean(squared))
    assert M.squared_compactness_separation(z, stages)[0] == pytest.approx(np.mean(per_stage))


def test_grid_mutual_information_by_hand():
    points = np.array([[0.0, 5.0], [0.4, 5.0], [0.6, 5.0], [1.0, 5.0]])
    stages = np.array([0, 1, 1, 1])
    # 2 bins in x: cells 0, 0, 1, 1 (y constant: one bin); joint 1/4, 1/4, 1/2; marginals stage 1/4, 3/4, cell 1/2, 1/2
    expected = 0.25 * np.log(2) + 0.25 * np.log(2 / 3) + 0.5 * np.log(4 / 3)
    assert M.mutual_info_grid(points, stages, bins=2) == pytest.approx(expected)
    # only the first two coordinates are binned, as the reference did with the 128-D latent
    extra = np.c_[points, [9.0, -3.0, 7.0, 0.0]]
    assert M.mutual_info_grid(extra, stages, bins=2) == pytest.approx(expected)


def test_cosine_alignment_of_squared_distances_by_hand():
    z = np.array([[0.0], [1.0], [3.0]])
    embedded = np.array([[0.0, 0.0], [2.0, 0.0], [2.0, 1.0]])
    # pairs (0,1), (0,2), (1,2): squared latent 1, 9, 4; squared map 4, 5, 1
    expected = (4 + 45 + 4) / (np.sqrt(1 + 81 + 16) * np.sqrt(16 + 25 + 1))
    assert M.alignment_cosine_sq(z, embedded) == pytest.approx(expected)


def small_fold(n_per_stage=30, seed=0):
    rng = np.random.default_rng(seed)
    stages = np.repeat(np.arange(5), n_per_stage)
    z = rng.normal(size=(5, 8))[stages] * 4 + rng.normal(size=(len(stages), 8))
    return Embeddings(z.astype(np.float32), stages, 1, "toy")


def test_self_comparison_only_when_asked_and_labelled():
    embeddings = small_fold()
    default = {(m.name, m.space) for m in evaluate_fold(embeddings, max_points=150, map_points=150).metrics}
    assert not {name for name, _ in default} & M.SELF_COMPARISONS
    asked = {(m.name, m.space): m.value
             for m in evaluate_fold(embeddings, max_points=150, map_points=150, self_comparison=True).metrics}
    assert asked["trustworthiness_self", "latent->latent"] == pytest.approx(
        sklearn_trustworthiness(embeddings.z, embeddings.z, n_neighbors=5))
    assert asked["alignment_cosine_sq_self", "latent->latent"] == pytest.approx(1.0)
    assert M.definition("trustworthiness_self") == "reference, self against self"
    # the corrected trustworthiness (latent vs map) stays, for every map
    assert {("trustworthiness", f"latent->{m}") for m in ("pca", "tsne", "umap")} <= default


def test_every_seed_metric_is_reported_under_its_seed_name_in_both_definitions():
    assert list(M.SEED_NAMES) == SEED_PAGE_METRICS
    reported = {m.name for m in evaluate_fold(small_fold(), max_points=150, map_points=150).metrics}
    for seed_name, names in M.SEED_NAMES.items():
        assert set(names) - M.SELF_COMPARISONS <= reported, seed_name
    for name in ("purity_hungarian_kmeans", "entropy_bits_kmeans", "compactness_sq_labels", "alignment_cosine_sq",
                 "mutual_info_grid"):
        assert M.definition(name) == "reference"
        standard = [n for n in M.SEED_NAMES[M.SEED_NAME[name]] if M.definition(n) == "standard"]
        assert standard, f"{name}: the standard definition must be reported beside it"
