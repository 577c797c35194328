"""What the Matryoshka slicer shows for every prefix size ``k``, precomputed once (no widgets).

A slider must redraw in under 200 ms, so everything is computed here on a grid of prefix sizes:
nearest-neighbour agreement of ``prefix(k)`` with the full embedding, the cosine between each
(centred) vector and its prefix for every ``k``, and a 2-D PCA view of each grid prefix (signs aligned
from one ``k`` to the next). Probe Spearman per ``k`` is not computed here: it comes from the
experiment's results (``nested`` and ``truncated`` rows), the same numbers every front-end shows.

>>> import numpy as np
>>> from revdistill.core.nested import NestedEmbedding
>>> values = np.random.default_rng(0).normal(size=(40, 12))
>>> views = slicer_views(NestedEmbedding(values, ("a", "b"), (4, 12)), max_points=6)
>>> views.ks.tolist(), views.views.shape
([1, 2, 3, 4, 7, 12], (6, 2, 40))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

__all__ = ["SlicerViews", "slicer_views", "prefix_grid", "nn_agreement", "prefix_cosine"]

ProgressCallback = Callable[[float, str], None]


def prefix_grid(boundaries: tuple[int, ...], max_points: int = 32) -> np.ndarray:
    """Prefix sizes to precompute: every level boundary plus geometrically spaced sizes.

    Parameters
    ----------
    boundaries : tuple of int
        Cumulative level ends; the last is the full dimension ``D``.
    max_points : int
        About how many sizes in total (all of ``1..D`` when ``D`` is at most this).

    Returns
    -------
    numpy.ndarray
        Sorted unique sizes in ``1..D``.
    """
    full = int(boundaries[-1])
    if full <= max_points:
        return np.arange(1, full + 1)
    spaced = np.unique(np.round(np.geomspace(1, full, max_points)).astype(int))
    return np.unique(np.concatenate([spaced, np.asarray(boundaries, dtype=int)]))


def _knn(values: np.ndarray, queries: np.ndarray, n_neighbors: int) -> np.ndarray:
    """Indices of the ``n_neighbors`` nearest rows of ``values`` to each query row (self excluded)."""
    squared = np.einsum("ij,ij->i", values, values)
    distances = squared[queries][:, None] - 2.0 * values[queries] @ values.T + squared[None, :]
    distances[np.arange(len(queries)), queries] = np.inf
    return np.argpartition(distances, n_neighbors, axis=1)[:, :n_neighbors]


def nn_agreement(prefix: np.ndarray, reference_neighbors: np.ndarray, queries: np.ndarray,
                 n_neighbors: int) -> float:
    """Mean fraction of each query's ``n_neighbors`` nearest neighbours shared with the reference."""
    neighbors = _knn(prefix, queries, n_neighbors)
    shared = [len(np.intersect1d(a, b, assume_unique=True)) for a, b in zip(neighbors, reference_neighbors)]
    return float(np.mean(shared) / n_neighbors)


def prefix_cosine(values: np.ndarray) -> np.ndarray:
    """Mean cosine between each centred vector and its zero-padded prefix, for every ``k``.

    That cosine is ``||x[:k]|| / ||x||``: the share of the vector's length already in the prefix.

    Returns
    -------
    numpy.ndarray, shape (D,)
        Entry ``k - 1`` is the value for ``prefix(k)``.
    """
    centred = values - values.mean(axis=0)
    cumulative = np.cumsum(centred.astype(np.float64) ** 2, axis=1)
    total = np.maximum(cumulative[:, -1:], 1e-300)
    return np.sqrt(cumulative / total).mean(axis=0)


@dataclass
class SlicerViews:
    """Precomputed per-``k`` views of one nested embedding.

    Attributes
    ----------
    ks : numpy.ndarray, shape (n_grid,)
        Grid of prefix sizes (all level boundaries included).
    boundaries, names : tuple
        The nested embedding's levels.
    nn_agreement : numpy.ndarray, shape (n_grid,)
        Nearest-neighbour agreement of ``prefix(k)`` with the full embedding.
    cosine : numpy.ndarray, shape (D,)
        :func:`prefix_cosine` for every ``k`` in ``1..D``.
    views : numpy.ndarray, shape (n_grid, 2, n_records)
        PCA of each grid prefix (x row, y row: contiguous, so they ship to the browser as binary
        buffers), signs aligned from one ``k`` to the next.
    n_neighbors : int
    """

    ks: np.ndarray
    boundaries: tuple[int, ...]
    names: tuple[str, ...]
    nn_agreement: np.ndarray
    cosine: np.ndarray
    views: np.ndarray
    n_neighbors: int

    def grid_index(self, k: int) -> int:
        """Index of the largest grid size not above ``k``."""
        return int(max(np.searchsorted(self.ks, int(k), side="right") - 1, 0))

    def agreement_at(self, k: int) -> float:
        """kNN agreement at ``k``, interpolated between grid sizes."""
        good = np.isfinite(self.nn_agreement)
        return float(np.interp(k, self.ks[good], self.nn_agreement[good])) if good.any() else float("nan")


def slicer_views(nested, *, max_points: int = 32, n_neighbors: int = 10, n_queries: int = 1000,
                 progress: ProgressCallback | None = None) -> SlicerViews:
    """Compute every per-``k`` view the slicer shows (once per result, in the background).

    Parameters
    ----------
    nested : NestedEmbedding
        Rows are records (pooled), columns the nested dimensions.
    max_points : int
        Approximate number of grid sizes.
    n_neighbors : int
        Neighbourhood size for the agreement.
    n_queries : int
        Query points for the agreement (a seeded subsample when there are more records).
    progress : callable, optional
        ``progress(fraction, message)``.
    """
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    from revdistill.views.projection import pca_view  # noqa: PLC0415

    report = progress or (lambda fraction, message: None)
    values = np.asarray(nested.values, dtype=np.float64)
    n = values.shape[0]
    ks = prefix_grid(tuple(nested.boundaries), max_points)
    queries = np.sort(np.random.default_rng(0).choice(n, size=min(n, n_queries), replace=False))
    neighbors = min(n_neighbors, n - 2)
    agreement = np.full(len(ks), np.nan)
    views = np.zeros((len(ks), 2, n), dtype=np.float32)
    with threadpool_limits(limits=1, user_api="blas"):  # threaded BLAS spins on a busy 2-core box
        reference = _knn(values, queries, neighbors) if neighbors >= 1 else None
        for index, k in enumerate(ks):
            prefix = values[:, :k]
            if reference is not None:
                agreement[index] = nn_agreement(prefix, reference, queries, neighbors)
            view = pca_view(prefix, n_components=2).T
            if index:
                view = _align_signs(view, views[index - 1])
            views[index] = view
            report((index + 1) / len(ks), f"slicer: prefix {k} of {ks[-1]}")
    return SlicerViews(ks=ks, boundaries=tuple(nested.boundaries), names=tuple(nested.names),
                       nn_agreement=agreement, cosine=prefix_cosine(values), views=views, n_neighbors=neighbors)


def _align_signs(view: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Flip each row (axis) of ``view`` ``(2, n)`` to correlate positively with ``previous``."""
    aligned = view.copy()
    for axis in range(view.shape[0]):
        if float(np.dot(view[axis], previous[axis])) < 0:
            aligned[axis] = -aligned[axis]
    return aligned
