"""Numbers behind the slicer and scaling panels, precomputed once per workspace (no widgets).

The slicer must redraw in under 200 ms at 5,000 points, so everything it shows is computed here on a
grid of prefix sizes: probe Spearman (reverse-distilled prefix vs ESM-2's largest model truncated),
nearest-neighbour agreement of ``prefix(k)`` with the full embedding, the cosine between each
(centred) vector and its prefix for every ``k``, and a 2-D PCA view of each grid prefix. Moving the
slider then only swaps arrays.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pandas as pd

from .workspace import Workspace

logger = logging.getLogger(__name__)

__all__ = ["SlicerCurves", "slicer_curves", "prefix_grid", "nn_agreement", "prefix_cosine",
           "probe_folds", "scaling_table", "SCALING_COLUMNS"]

ProgressCallback = Callable[[float, str], None]
SCALING_COLUMNS = ("axis", "representation", "model", "dim", "spearman", "low", "high", "target")


def probe_folds(workspace: Workspace, n_folds: int = 5, seed: int = 0) -> np.ndarray:
    """Official fold labels when the data set has them, else a seeded random 5-fold split."""
    if workspace.dataset.folds is not None:
        return workspace.dataset.folds
    n = len(workspace.dataset)
    return np.random.default_rng(seed).permutation(n) % n_folds


def prefix_grid(boundaries: tuple[int, ...], max_points: int = 32) -> np.ndarray:
    """Prefix sizes to precompute: every level boundary plus evenly spaced sizes in between.

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
class SlicerCurves:
    """Precomputed per-``k`` values for the Matryoshka slicer.

    Attributes
    ----------
    ks : numpy.ndarray, shape (n_grid,)
        Grid of prefix sizes (all level boundaries included).
    spearman_rd, spearman_esm : numpy.ndarray, shape (n_grid,)
        Out-of-fold probe Spearman of the reverse-distilled prefix and of the largest ESM-2 model's
        embedding truncated to ``k`` (NaN where ``k`` exceeds that model's width).
    nn_agreement : numpy.ndarray, shape (n_grid,)
        Nearest-neighbour agreement of ``prefix(k)`` with the full embedding.
    cosine : numpy.ndarray, shape (D,)
        :func:`prefix_cosine` for every ``k`` in ``1..D``.
    views : numpy.ndarray, shape (n_grid, 2, n_records)
        PCA of each grid prefix (x row, y row: contiguous, so they ship to the browser as binary
        buffers), signs aligned from one ``k`` to the next.
    target : str
        What the probe predicts.
    """

    ks: np.ndarray
    boundaries: tuple[int, ...]
    names: tuple[str, ...]
    spearman_rd: np.ndarray
    spearman_esm: np.ndarray
    nn_agreement: np.ndarray
    cosine: np.ndarray
    views: np.ndarray
    target: str
    n_neighbors: int

    def grid_index(self, k: int) -> int:
        """Index of the largest grid size not above ``k``."""
        return int(max(np.searchsorted(self.ks, int(k), side="right") - 1, 0))

    def at(self, k: int) -> dict[str, float]:
        """Values at prefix size ``k`` (interpolated between grid sizes; cosine exact)."""
        def interp(curve: np.ndarray) -> float:
            good = np.isfinite(curve)
            if not good.any() or k > self.ks[good].max():
                return float("nan")
            return float(np.interp(k, self.ks[good], curve[good]))

        return {"spearman_rd": interp(self.spearman_rd), "spearman_esm": interp(self.spearman_esm),
                "nn_agreement": interp(self.nn_agreement), "cosine": float(self.cosine[int(k) - 1])}


def _single_threaded_blas():
    """Context limiting BLAS to one thread: on a busy 2-core box, threaded BLAS spins and is ~10x slower."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    return threadpool_limits(limits=1, user_api="blas")


def slicer_curves(workspace: Workspace, *, max_points: int = 32, n_neighbors: int = 10,
                  n_queries: int = 1000, progress: ProgressCallback | None = None) -> SlicerCurves:
    """Compute every curve and view the slicer shows (run in the background once per workspace).

    Parameters
    ----------
    workspace : Workspace
    max_points : int
        Approximate number of grid sizes.
    n_neighbors : int
        Neighbourhood size for the agreement.
    n_queries : int
        Query points for the agreement (a seeded subsample when there are more records).
    progress : callable, optional
        ``progress(fraction, message)``.
    """
    with _single_threaded_blas():
        return _slicer_curves(workspace, max_points, n_neighbors, n_queries,
                              progress or (lambda fraction, message: None))


def _slicer_curves(workspace: Workspace, max_points: int, n_neighbors: int, n_queries: int,
                   report: ProgressCallback) -> SlicerCurves:
    from revdistill.views.projection import pca_view  # noqa: PLC0415

    from .prefix_probe import prefix_probe_spearman  # noqa: PLC0415

    nested = workspace.nested
    values = np.asarray(nested.values, dtype=np.float64)
    n = values.shape[0]
    ks = prefix_grid(nested.boundaries, max_points)
    dataset = workspace.dataset
    scores = dataset.table[dataset.target].to_numpy(dtype=np.float64)
    folds = probe_folds(workspace)
    largest = np.asarray(workspace.pooled[workspace.models[-1]], dtype=np.float64)
    rng = np.random.default_rng(0)
    queries = np.sort(rng.choice(n, size=min(n, n_queries), replace=False))
    neighbors = min(n_neighbors, n - 2)
    reference = _knn(values, queries, neighbors) if neighbors >= 1 else None
    spearman_rd = np.full(len(ks), np.nan)
    spearman_esm = np.full(len(ks), np.nan)
    if np.ptp(scores) > 0 and len(np.unique(folds)) >= 2:
        report(0.0, "slicer: probing every prefix")
        spearman_rd = prefix_probe_spearman(values, scores, folds, ks)
        in_largest = ks <= largest.shape[1]
        spearman_esm[in_largest] = prefix_probe_spearman(largest, scores, folds, ks[in_largest])
    agreement = np.full(len(ks), np.nan)
    views = np.zeros((len(ks), 2, n), dtype=np.float32)
    for index, k in enumerate(ks):
        prefix = values[:, :k]
        if reference is not None:
            agreement[index] = nn_agreement(prefix, reference, queries, neighbors)
        view = pca_view(prefix, n_components=2).T
        if index:
            view = _align_signs(view, views[index - 1])
        views[index] = view
        report((index + 1) / len(ks), f"slicer: prefix {k} of {ks[-1]}")
    return SlicerCurves(ks=ks, boundaries=tuple(nested.boundaries), names=tuple(nested.names),
                        spearman_rd=spearman_rd, spearman_esm=spearman_esm, nn_agreement=agreement,
                        cosine=prefix_cosine(values), views=views, target=dataset.target,
                        n_neighbors=neighbors)


def _align_signs(view: np.ndarray, previous: np.ndarray) -> np.ndarray:
    """Flip each row (axis) of ``view`` ``(2, n)`` to correlate positively with ``previous``."""
    aligned = view.copy()
    for axis in range(view.shape[0]):
        if float(np.dot(view[axis], previous[axis])) < 0:
            aligned[axis] = -aligned[axis]
    return aligned


def _bootstrap_interval(predictions: np.ndarray, scores: np.ndarray, n_bootstrap: int = 200,
                        seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval (resampling variants) of the Spearman of out-of-fold predictions."""
    from scipy.stats import rankdata  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    n = len(scores)
    values = []
    for _ in range(n_bootstrap):
        rows = rng.integers(0, n, n)
        a, b = rankdata(predictions[rows]), rankdata(scores[rows])
        if np.ptp(a) > 0 and np.ptp(b) > 0:
            values.append(np.corrcoef(a, b)[0, 1])
    if not values:
        return float("nan"), float("nan")
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def scaling_table(workspace: Workspace, prefix_dims: list[int] | None = None,
                  progress: ProgressCallback | None = None) -> pd.DataFrame:
    """Probe Spearman of ESM-2, reverse-distilled and naive embeddings over size and prefix dim.

    Parameters
    ----------
    workspace : Workspace
    prefix_dims : list of int, optional
        Prefix sizes of the nested embedding (default: the level boundaries and midpoints).
    progress : callable, optional

    Returns
    -------
    pandas.DataFrame
        Columns :data:`SCALING_COLUMNS`; ``axis`` is ``"size"`` or ``"prefix"``; ``low``/``high``
        bound a 95% bootstrap interval over variants.
    """
    with _single_threaded_blas():
        return _scaling_table(workspace, prefix_dims, progress or (lambda fraction, message: None))


def _scaling_table(workspace: Workspace, prefix_dims: list[int] | None,
                   report: ProgressCallback) -> pd.DataFrame:
    from revdistill.experiment.probe import cross_validate  # noqa: PLC0415

    dataset = workspace.dataset
    scores = dataset.table[dataset.target].to_numpy(dtype=np.float64)
    folds = probe_folds(workspace)
    nested = workspace.nested
    jobs: list[tuple[str, str, str, int, np.ndarray]] = []
    for name, dim in zip(workspace.models, workspace.dims):
        jobs.append(("size", "ESM-2", name, dim, workspace.pooled[name]))
        jobs.append(("size", "reverse-distilled", name, dim, np.asarray(nested.level(name))))
        jobs.append(("size", "naive", name, dim, workspace.naive[name]))
    if prefix_dims is None:
        bounds = list(nested.boundaries)
        prefix_dims = sorted(set(bounds + [(a + b) // 2 for a, b in zip([0] + bounds, bounds)]))
    largest_name = workspace.models[-1]
    largest = workspace.pooled[largest_name]
    for dim in prefix_dims:
        jobs.append(("prefix", "reverse-distilled", nested.level_of(dim), dim, np.asarray(nested.prefix(dim))))
        jobs.append(("prefix", "ESM-2 truncated", largest_name, dim, largest[:, :dim]))
    rows = []
    for index, (axis, representation, model, dim, features) in enumerate(jobs):
        result = cross_validate(features, scores, folds, inner_folds=3)
        low, high = _bootstrap_interval(result.predictions, scores)
        rows.append({"axis": axis, "representation": representation, "model": model, "dim": int(dim),
                     "spearman": result.spearman, "low": low, "high": high, "target": dataset.target})
        report((index + 1) / len(jobs), f"scaling: {representation} {model} {dim}")
    return pd.DataFrame(rows, columns=list(SCALING_COLUMNS))
