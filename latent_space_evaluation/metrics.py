"""Metrics of a latent space: how sleep stages cluster in it, and how faithful each 2-D map of it is.

Every metric is computed in a named space: "latent" (the D-dim embedding), "pca" / "tsne" / "umap"
(a 2-D map), or "latent->tsne" (the embedding compared with a map). Suffix `_labels`: the groups are
the true stages; `_kmeans`: the groups are k-means clusters (k = 5) of the embedding, compared with
the stages. Entropies and mutual information are in nats. Distances are Euclidean.

Cluster quality
    silhouette_{labels,kmeans}      mean over epochs of (b - a) / max(a, b); a = mean distance to its own
                                    group, b = to the nearest other group. In [-1, 1], higher is better.
    davies_bouldin_{labels,kmeans}  mean over groups i of max_j (s_i + s_j) / ||c_i - c_j||; s = mean
                                    distance to the group centroid c. >= 0, lower is better.
    purity_kmeans                   (1/n) sum over clusters of the size of its largest stage. In (0, 1],
                                    higher is better.
    entropy_kmeans                  sum over clusters c of (|c| / n) H(stages in c) = H(stage | cluster).
                                    0 when every cluster holds one stage; lower is better.
Label-aware (k-means clusters vs stages)
    adjusted_rand_index_kmeans      pair-counting agreement corrected for chance: ~0 random, 1 identical.
    adjusted_mutual_info_kmeans     mutual information corrected for chance: ~0 random, 1 identical.
    mutual_info_kmeans              I(stage; cluster) = H(stage) - entropy_kmeans, higher is better.
Geometry (true stages, latent space)
    compactness_labels              mean distance of an epoch to its stage centroid, lower is better.
    separation_labels               mean distance between two stage centroids, higher is better.
    compactness_separation_ratio    compactness / separation; scale-free, lower is better.
    uniformity                      log mean over pairs i != j of exp(-2 ||u_i - u_j||^2), u = z / ||z||
                                    (Wang & Isola, 2020). In [-4, 0]; lower = spread more evenly on the sphere.
Faithfulness of a 2-D map (space "latent->pca" etc.) and stage separation on it
    trustworthiness                 1 - 2 / (n k (2n - 3k - 1)) * sum_i sum_{j in N_k^map(i)} max(0, r(i, j) - k),
                                    r(i, j) = rank of j among i's neighbours in the latent space (Venna &
                                    Kaski, 2001). 1 = no false neighbours on the map, ~0.5 for a random map.
                                    Equals sklearn.manifold.trustworthiness; computed in row chunks.
    distance_alignment_spearman     Spearman rank correlation between latent and map distances of random
                                    pairs of epochs: 1 = the map keeps the distance order, ~0 random.
    silhouette_labels (space "tsne" etc.)  the silhouette of the stages on the map itself.

Reference definitions (RaphaelKreft/DeepLearningProject, latent_space_evaluation/metrics.py), reported beside
the standard ones where the reference defined a metric differently. Its evaluator applied every metric to the
128-D embeddings ("Original"); the definitions were written for a 2-D map, so they are reported in the latent
space and on each map.
    purity_hungarian_kmeans         one-to-one matching of clusters to stages (Hungarian algorithm on the
                                    contingency table): matched epochs / n. <= purity_kmeans.
    entropy_bits_kmeans             entropy_kmeans in bits (log base 2).
    compactness_sq_labels           mean over stages of the mean squared distance between two distinct epochs
                                    of the stage (the reference also dropped exactly coincident pairs).
    separation_sq_labels            mean squared distance between two stage centroids.
    compactness_separation_ratio_sq compactness_sq_labels / separation_sq_labels.
    mutual_info_grid                I(stage; cell) in nats, cell = the square of a 10 x 10 grid of equal-width
                                    bins over the range of the first two coordinates (in the latent space: its
                                    first two dimensions, as the reference computed it).
    alignment_cosine_sq             sum_p d_p e_p / (||d|| ||e||) over pairs p of epochs, d = squared latent
                                    distance, e = squared map distance (same pairs as the Spearman alignment).
Self against self (only when asked, `self_comparison`; labelled space "latent->latent"): the reference compared
the embeddings with themselves, so these are 1 by construction and say nothing about a map.
    trustworthiness_self            trustworthiness of z against z, k = 5 as the reference.
    alignment_cosine_sq_self        alignment_cosine_sq of z against z.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import xlogy
from scipy.stats import spearmanr
from sklearn.cluster import KMeans
from sklearn.metrics import (adjusted_mutual_info_score, adjusted_rand_score, davies_bouldin_score,
                             mutual_info_score, pairwise_distances_chunked, silhouette_score)
from sklearn.metrics.cluster import contingency_matrix
from sklearn.neighbors import NearestNeighbors

from utils import STAGES

BETTER = {
    "silhouette_labels": "higher", "silhouette_kmeans": "higher",
    "davies_bouldin_labels": "lower", "davies_bouldin_kmeans": "lower",
    "purity_kmeans": "higher", "entropy_kmeans": "lower",
    "adjusted_rand_index_kmeans": "higher", "adjusted_mutual_info_kmeans": "higher", "mutual_info_kmeans": "higher",
    "compactness_labels": "lower", "separation_labels": "higher", "compactness_separation_ratio": "lower",
    "uniformity": "lower",
    "trustworthiness": "higher", "distance_alignment_spearman": "higher",
    "purity_hungarian_kmeans": "higher", "entropy_bits_kmeans": "lower", "compactness_sq_labels": "lower",
    "separation_sq_labels": "higher", "compactness_separation_ratio_sq": "lower", "mutual_info_grid": "higher",
    "alignment_cosine_sq": "higher", "trustworthiness_self": "higher", "alignment_cosine_sq_self": "higher",
}
# The seed's 13 metrics under the names its page uses, each with our metrics that measure it.
SEED_NAMES = {
    "Silhouette Score": ("silhouette_kmeans", "silhouette_labels"),
    "Davies-Bouldin Index": ("davies_bouldin_kmeans", "davies_bouldin_labels"),
    "Adjusted Rand Index": ("adjusted_rand_index_kmeans",),
    "Adjusted Mutual Information": ("adjusted_mutual_info_kmeans",),
    "Purity Score": ("purity_kmeans", "purity_hungarian_kmeans"),
    "Average Entropy": ("entropy_kmeans", "entropy_bits_kmeans"),
    "Trustworthiness": ("trustworthiness", "trustworthiness_self"),
    "Intra-Class Compactness": ("compactness_labels", "compactness_sq_labels"),
    "Inter-Class Separation": ("separation_labels", "separation_sq_labels"),
    "Compactness-to-Separation Ratio": ("compactness_separation_ratio", "compactness_separation_ratio_sq"),
    "Mutual Information": ("mutual_info_kmeans", "mutual_info_grid"),
    "Uniformity": ("uniformity",),
    "Alignment": ("distance_alignment_spearman", "alignment_cosine_sq", "alignment_cosine_sq_self"),
}
SEED_NAME = {name: seed for seed, names in SEED_NAMES.items() for name in names}
REFERENCE_DEFINITIONS = {"purity_hungarian_kmeans", "entropy_bits_kmeans", "compactness_sq_labels",
                         "separation_sq_labels", "compactness_separation_ratio_sq", "mutual_info_grid",
                         "alignment_cosine_sq"}
SELF_COMPARISONS = {"trustworthiness_self", "alignment_cosine_sq_self"}
GRID_BINS = 10
REFERENCE_TRUSTWORTHINESS_NEIGHBORS = 5
WORKING_MEMORY_MB = 64  # size of one block of pairwise distances; bounds the memory of quadratic metrics


def definition(name: str) -> str:
    """How a metric is defined: "standard", "reference", or "reference, self against self"."""
    if name in SELF_COMPARISONS:
        return "reference, self against self"
    return "reference" if name in REFERENCE_DEFINITIONS else "standard"


@dataclass(frozen=True)
class Metric:
    """One number: `name` computed in `space` on `points` epochs."""

    name: str
    space: str
    value: float
    points: int

    @property
    def better(self) -> str:
        return BETTER[self.name]


# ----------------------------------------------------------------------------- clusters vs stages
def kmeans_clusters(z: np.ndarray, seed: int, n_clusters: int = len(STAGES)) -> np.ndarray:
    """(n, D) -> (n,) k-means cluster ids (k-means++, 4 restarts, seeded)."""
    return KMeans(n_clusters=n_clusters, n_init=4, random_state=seed).fit_predict(z)


def purity(stages: np.ndarray, clusters: np.ndarray) -> float:
    """Share of epochs that belong to the most frequent stage of their cluster."""
    table = contingency_matrix(stages, clusters)  # (n_stages, n_clusters) counts
    return float(table.max(axis=0).sum() / table.sum())


def average_entropy(stages: np.ndarray, clusters: np.ndarray, base: float = np.e) -> float:
    """Size-weighted mean over clusters of the entropy (nats, or log `base`) of the stages inside it:
    H(stage | cluster)."""
    table = contingency_matrix(stages, clusters).astype(np.float64)
    sizes = table.sum(axis=0)
    share = table / sizes
    return float(-(sizes / sizes.sum() * xlogy(share, share).sum(axis=0)).sum() / np.log(base))


def purity_hungarian(stages: np.ndarray, clusters: np.ndarray) -> float:
    """Share of epochs whose cluster is matched to their stage by the best one-to-one matching."""
    table = contingency_matrix(stages, clusters)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def mutual_info_grid(points: np.ndarray, stages: np.ndarray, bins: int = GRID_BINS) -> float:
    """I(stage; grid cell) in nats; cells of a bins x bins grid over the range of the first two coordinates."""
    xy = np.asarray(points[:, :2], dtype=np.float64)
    if xy.shape[1] == 1:  # one coordinate: a 1-D grid
        xy = np.column_stack([xy, np.zeros(len(xy))])
    low, span = xy.min(axis=0), np.ptp(xy, axis=0)
    cell = np.minimum(np.floor((xy - low) / (span + 1e-8) * bins).astype(np.int64), bins - 1)
    return float(mutual_info_score(stages, cell[:, 0] * bins + cell[:, 1]))


# ----------------------------------------------------------------------------- geometry
def compactness_separation(z: np.ndarray, stages: np.ndarray) -> tuple[float, float]:
    """Mean distance of an epoch to its stage centroid, and mean distance between two stage centroids."""
    present, index = np.unique(stages, return_inverse=True)
    centroids = np.stack([z[index == k].mean(axis=0, dtype=np.float64) for k in range(len(present))])
    compactness = np.linalg.norm(z - centroids[index], axis=1).mean()
    i, j = np.triu_indices(len(present), k=1)
    separation = np.linalg.norm(centroids[i] - centroids[j], axis=1).mean()
    return float(compactness), float(separation)


def squared_compactness_separation(z: np.ndarray, stages: np.ndarray) -> tuple[float, float]:
    """Mean over stages of the mean squared distance of two distinct epochs of the stage, and the mean squared
    distance between two stage centroids. Uses mean_{i != j} ||z_i - z_j||^2 = 2 / (n - 1) sum_i ||z_i - c||^2
    (c the stage centroid), so no pairwise matrix is built; a stage of one epoch counts 0, as in the reference."""
    present, index = np.unique(stages, return_inverse=True)
    centroids, within = [], []
    for k in range(len(present)):
        members = np.asarray(z[index == k], dtype=np.float64)
        centroids.append(members.mean(axis=0))
        n = len(members)
        within.append(2.0 * ((members - centroids[-1]) ** 2).sum() / (n - 1) if n > 1 else 0.0)
    centroids = np.stack(centroids)
    i, j = np.triu_indices(len(present), k=1)
    separation = ((centroids[i] - centroids[j]) ** 2).sum(axis=1).mean()
    return float(np.mean(within)), float(separation)


def uniformity(z: np.ndarray, block_rows: int = 2048) -> float:
    """Wang & Isola uniformity (t = 2) of the L2-normalised rows u of z (n, D), in row blocks of the Gram matrix.

    For unit vectors ||u_i - u_j||^2 = 2 - 2 u_i.u_j, so exp(-2 ||u_i - u_j||^2) = exp(4 u_i.u_j - 4), whose
    exponent lies in [-8, 0]: a plain float64 sum is exact enough and needs no log-sum-exp.
    """
    unit = (z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)).astype(np.float32)
    n = len(unit)
    total = 0.0
    for start in range(0, n, block_rows):
        total += np.exp(4.0 * (unit[start:start + block_rows] @ unit.T) - 4.0).sum(dtype=np.float64)
    total -= np.exp(4.0 * np.einsum("ij,ij->i", unit, unit, dtype=np.float64) - 4.0).sum()  # the i == j terms
    return float(np.log(total / (n * (n - 1))))


# ----------------------------------------------------------------------------- faithfulness of maps
def trustworthiness(z: np.ndarray, maps: dict[str, np.ndarray], n_neighbors: int = 10) -> dict[str, float]:
    """Trustworthiness of each 2-D map (n, 2) of z (n, D), without an n x n matrix.

    Each block of latent distances (rows x n) is computed once and scored against every map: the rank
    of a map neighbour j of i is one plus the number of epochs closer to i than j in the latent space.
    """
    n, k = len(z), n_neighbors
    if k >= n / 2:
        raise ValueError(f"trustworthiness: n_neighbors ({k}) must be below half the number of points ({n})")
    map_neighbors = [NearestNeighbors(n_neighbors=k).fit(m).kneighbors(return_distance=False)
                     for m in maps.values()]  # each (n, k), self excluded

    def block_penalty(dist: np.ndarray, start: int) -> np.ndarray:
        rows = np.arange(len(dist))
        dist[rows, start + rows] = np.inf  # an epoch is not its own neighbour
        penalties = []
        for neighbors in map_neighbors:
            to_neighbors = np.take_along_axis(dist, neighbors[start:start + len(dist)], axis=1)  # (rows, k)
            rank = (dist[:, None, :] < to_neighbors[:, :, None]).sum(axis=2) + 1  # (rows, k)
            penalties.append(np.maximum(rank - k, 0).sum(axis=1))
        return np.stack(penalties, axis=1)  # (rows, n_maps)

    total = np.concatenate(list(pairwise_distances_chunked(
        np.asarray(z, dtype=np.float64), reduce_func=block_penalty, working_memory=WORKING_MEMORY_MB))).sum(axis=0)
    scale = 2.0 / (n * k * (2.0 * n - 3.0 * k - 1.0))
    return {name: float(1.0 - scale * penalty) for name, penalty in zip(maps, total)}


def pair_distances(z: np.ndarray, embedded: np.ndarray, n_pairs: int = 100_000,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Distances in z (n, D) and in a map (n, 2) of the same pairs of rows: all pairs if fewer than n_pairs,
    else n_pairs uniform random pairs of distinct rows."""
    n = len(z)
    if n * (n - 1) // 2 <= n_pairs:
        i, j = np.triu_indices(n, k=1)
    else:
        rng = np.random.default_rng(seed)
        i = rng.integers(n, size=n_pairs)
        j = rng.integers(n - 1, size=n_pairs)
        j += j >= i  # a uniform partner other than i
    return np.linalg.norm(z[i] - z[j], axis=1), np.linalg.norm(embedded[i] - embedded[j], axis=1)


def distance_alignment(z: np.ndarray, embedded: np.ndarray, n_pairs: int = 100_000, seed: int = 0) -> float:
    """Spearman correlation of the pair distances (`pair_distances`) in z (n, D) and a map (n, 2)."""
    return float(spearmanr(*pair_distances(z, embedded, n_pairs, seed)).statistic)


def alignment_cosine_sq(z: np.ndarray, embedded: np.ndarray, n_pairs: int = 100_000, seed: int = 0) -> float:
    """The reference's alignment: cosine between the squared pair distances in z (n, D) and in a map."""
    latent, mapped = (d.astype(np.float64) ** 2 for d in pair_distances(z, embedded, n_pairs, seed))
    return float(latent @ mapped / (np.linalg.norm(latent) * np.linalg.norm(mapped)))


# ----------------------------------------------------------------------------- all metrics of a fold
def reference_geometry(points: np.ndarray, stages: np.ndarray, space: str) -> list[Metric]:
    """The reference's squared compactness / separation and grid mutual information of points (n, d) in `space`."""
    compactness, separation = squared_compactness_separation(points, stages)
    n = len(points)
    return [
        Metric("compactness_sq_labels", space, compactness, n),
        Metric("separation_sq_labels", space, separation, n),
        Metric("compactness_separation_ratio_sq", space, compactness / separation, n),
        Metric("mutual_info_grid", space, mutual_info_grid(points, stages), n),
    ]


def latent_metrics(z: np.ndarray, stages: np.ndarray, subsample: np.ndarray, seed: int) -> list[Metric]:
    """Cluster, label-aware and geometry metrics of z (n, D); quadratic ones on the rows `subsample`."""
    n, m = len(z), len(subsample)
    clusters = kmeans_clusters(z, seed)
    compactness, separation = compactness_separation(z, stages)
    return [
        Metric("silhouette_labels", "latent", float(silhouette_score(z[subsample], stages[subsample])), m),
        Metric("silhouette_kmeans", "latent", float(silhouette_score(z[subsample], clusters[subsample])), m),
        Metric("davies_bouldin_labels", "latent", float(davies_bouldin_score(z, stages)), n),
        Metric("davies_bouldin_kmeans", "latent", float(davies_bouldin_score(z, clusters)), n),
        Metric("purity_kmeans", "latent", purity(stages, clusters), n),
        Metric("purity_hungarian_kmeans", "latent", purity_hungarian(stages, clusters), n),
        Metric("entropy_kmeans", "latent", average_entropy(stages, clusters), n),
        Metric("entropy_bits_kmeans", "latent", average_entropy(stages, clusters, base=2), n),
        Metric("adjusted_rand_index_kmeans", "latent", float(adjusted_rand_score(stages, clusters)), n),
        Metric("adjusted_mutual_info_kmeans", "latent", float(adjusted_mutual_info_score(stages, clusters)), n),
        Metric("mutual_info_kmeans", "latent", float(mutual_info_score(stages, clusters)), n),
        Metric("compactness_labels", "latent", compactness, n),
        Metric("separation_labels", "latent", separation, n),
        Metric("compactness_separation_ratio", "latent", compactness / separation, n),
        Metric("uniformity", "latent", uniformity(z[subsample]), m),
        *reference_geometry(z, stages, "latent"),
    ]


def map_metrics(z: np.ndarray, stages: np.ndarray, maps: dict[str, np.ndarray], seed: int,
                n_neighbors: int = 10, self_comparison: bool = False) -> list[Metric]:
    """Trustworthiness, both alignments, stage silhouette and the reference's geometry of each map (n, 2) of the
    rows z (n, D); with `self_comparison`, also the reference's self-against-self trustworthiness and alignment."""
    n = len(z)
    trust = trustworthiness(z, maps, n_neighbors)
    metrics = []
    for name, embedded in maps.items():
        metrics += [
            Metric("trustworthiness", f"latent->{name}", trust[name], n),
            Metric("distance_alignment_spearman", f"latent->{name}", distance_alignment(z, embedded, seed=seed), n),
            Metric("alignment_cosine_sq", f"latent->{name}", alignment_cosine_sq(z, embedded, seed=seed), n),
            Metric("silhouette_labels", name, float(silhouette_score(embedded, stages)), n),
            *reference_geometry(embedded, stages, name),
        ]
    if self_comparison:
        self_trust = trustworthiness(z, {"latent": z}, REFERENCE_TRUSTWORTHINESS_NEIGHBORS)["latent"]
        metrics += [Metric("trustworthiness_self", "latent->latent", self_trust, n),
                    Metric("alignment_cosine_sq_self", "latent->latent", alignment_cosine_sq(z, z, seed=seed), n)]
    return metrics
