"""2-D maps of an embedding: PCA, t-SNE and UMAP, all seeded, and the stratified subsample they run on.

t-SNE and UMAP cost far more than linear time, so they see a stratified subsample of at most
`map_points` epochs (`stratified_subsample`): every stage keeps its share of the fold, so rare
stages (N1) stay on the map. t-SNE first projects to 50 principal components (the usual
pre-reduction, which also denoises); UMAP is given exact k-nearest neighbours computed by
scikit-learn in the original space, which is faster here than its approximate search and skips
that search's just-in-time compilation.
"""
from __future__ import annotations

import warnings

import numpy as np
from sklearn.decomposition import PCA
from sklearn.manifold import TSNE
from sklearn.neighbors import NearestNeighbors
from threadpoolctl import threadpool_limits

REDUCTION_TITLES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}


def stratified_subsample(labels: np.ndarray, max_points: int, seed: int) -> np.ndarray:
    """Sorted indices of at most `max_points` rows, each label keeping its share (largest remainder).

    labels: (n,) ints. Returns all indices when n <= max_points; every label present keeps >= 1 row.
    """
    n = len(labels)
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(n)
    grouped = shuffled[np.argsort(labels[shuffled], kind="stable")]  # by label, random within a label
    _, starts, counts = np.unique(labels[grouped], return_index=True, return_counts=True)
    exact = max_points * counts / n
    quota = np.maximum(np.floor(exact).astype(int), 1)
    shortfall = max_points - quota.sum()
    if shortfall > 0:
        quota[np.argsort(quota - exact)[:shortfall]] += 1  # largest remainders first
    elif shortfall < 0:  # labels rarer than 1 in n / max_points were lifted to one row
        quota[np.argsort(-quota)[:-shortfall]] -= 1
    return np.sort(np.concatenate([grouped[s:s + q] for s, q in zip(starts, quota)]))


def pca_map(z: np.ndarray, seed: int) -> np.ndarray:
    """(n, D) -> (n, 2): the first two principal components."""
    return PCA(n_components=2, random_state=seed).fit_transform(z).astype(np.float32)


def tsne_map(z: np.ndarray, seed: int, perplexity: float = 30.0, max_iter: int = 500,
             pre_dims: int = 50) -> np.ndarray:
    """(n, D) -> (n, 2): Barnes-Hut t-SNE on the first `pre_dims` principal components, PCA-initialised."""
    n, dims = z.shape
    if dims > pre_dims and n > pre_dims:
        z = PCA(n_components=pre_dims, random_state=seed).fit_transform(z)
    tsne = TSNE(n_components=2, perplexity=min(perplexity, (n - 1) / 3), init="pca",
                learning_rate="auto", max_iter=max_iter, random_state=seed)
    # One OpenMP thread: scikit-learn's Barnes-Hut gradient synchronises its threads every iteration; on 2 busy
    # cores two threads took 1.8-3.4x the CPU time of one and 1.9-4.8x its wall time (5000 and 2000 points).
    with threadpool_limits(limits=1, user_api="openmp"):
        return tsne.fit_transform(z).astype(np.float32)


def umap_map(z: np.ndarray, seed: int, n_neighbors: int = 15, n_epochs: int = 200) -> np.ndarray:
    """(n, D) -> (n, 2): UMAP on exact Euclidean k-nearest neighbours (self included, as UMAP expects)."""
    import umap  # imported here: numba start-up takes seconds and only this map needs it

    n_neighbors = min(n_neighbors, len(z) - 1)
    distances, indices = NearestNeighbors(n_neighbors=n_neighbors).fit(z).kneighbors(z)
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, n_epochs=n_epochs, random_state=seed,
                        n_jobs=1, precomputed_knn=(indices, distances.astype(np.float32)))
    with warnings.catch_warnings():  # "no NNDescent index: transform() unavailable" - we never transform
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
        return reducer.fit_transform(z).astype(np.float32)


REDUCERS = {"pca": pca_map, "tsne": tsne_map, "umap": umap_map}
