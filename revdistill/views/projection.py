"""Two-dimensional views of nested embeddings: PCA (instant) and UMAP (cached on disk).

Data flow: a :class:`~revdistill.core.nested.NestedEmbedding` (or any ``(n_samples, n_features)`` array)
-> :func:`subspace` picks a prefix or a level's block -> :func:`pca_view` or :func:`umap_view`
-> ``(n_samples, 2)`` coordinates for plotting.

UMAP of more than :data:`DEFAULT_FIT_SAMPLE` points is fitted on a seeded subsample of that many, and
the other points are placed by the fitted model's ``transform`` (:func:`umap_note` says so, for the
figure): a full fit of 100,000 points takes minutes on two cores.

``umap-learn`` is imported lazily: its first import compiles numba code (about 25 s) and each fresh
process pays about a minute more on its first fits. :func:`start_warm_up` runs :func:`warm_up_umap` on
a tiny input in a background thread so that the first real UMAP is fast (both live in
:mod:`revdistill.views.umap_engine` and are re-exported here). UMAP results are cached in
``.npz`` files keyed by a hash of the input bytes and the parameters (read with ``allow_pickle=False``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
import re
from typing import Any, Callable

import numpy as np
import torch

from revdistill.io.files import load_npz, save_npz
from revdistill.core.linalg import flip_signs, symmetric_eigh_descending
from revdistill.views.umap_engine import (_import_umap, on_warm_up_done, start_warm_up,
                                          umap_ready, warm_up_umap)

logger = logging.getLogger(__name__)

__all__ = [
    "cached_umap_view",
    "content_hash",
    "default_cache_dir",
    "pca_view",
    "subspace",
    "umap_fit_rows",
    "umap_note",
    "umap_ready",
    "umap_view",
    "DEFAULT_FIT_SAMPLE",
    "on_warm_up_done",
    "start_warm_up",
    "warm_up_umap",
]

_CACHE_VERSION = 1
#: Most points a UMAP is fitted on; the rest are placed by ``transform`` (see the module docstring).
DEFAULT_FIT_SAMPLE = 20_000


def default_cache_dir() -> Path:
    """Folder for cached UMAP coordinates: :func:`revdistill.io.paths.cache_dir` ``("umap")``."""
    from revdistill.io.paths import cache_dir  # noqa: PLC0415

    return cache_dir("umap")


def _as_2d_float(values: Any, argument: str = "values") -> np.ndarray:
    """Return ``values`` as a finite C-contiguous float32/float64 matrix, or raise ``ValueError``."""
    if hasattr(values, "detach"):  # torch tensor
        values = values.detach().cpu().numpy()
    array = np.asarray(values)
    if array.ndim != 2:
        raise ValueError(f"{argument} must be 2-D (n_samples, n_features), got shape {array.shape}")
    if array.shape[0] < 2 or array.shape[1] < 1:
        raise ValueError(f"{argument} needs at least 2 rows and 1 column, got shape {array.shape}")
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{argument} contains NaN or inf")
    return np.ascontiguousarray(array)


def content_hash(values: np.ndarray, **params: Any) -> str:
    """Hash of an array's bytes, shape, dtype and keyword parameters.

    Parameters
    ----------
    values : numpy.ndarray
        The array to hash.
    **params
        JSON-serialisable parameters that change the result (for example ``n_neighbors``).

    Returns
    -------
    str
        A 64-character hexadecimal SHA-256 digest.
    """
    array = np.ascontiguousarray(values)
    digest = hashlib.sha256()
    header = {"shape": list(array.shape), "dtype": array.dtype.str, "v": _CACHE_VERSION, "params": params}
    digest.update(json.dumps(header, sort_keys=True).encode())
    digest.update(array.tobytes())
    return digest.hexdigest()


def subspace(nested: Any, *, prefix: int | None = None, block: str | None = None) -> np.ndarray:
    """Columns of a nested embedding: a prefix ``[:, :k]`` or one level's block.

    Parameters
    ----------
    nested : NestedEmbedding
        Nested embedding with ``prefix(k)`` and ``block(name)``.
    prefix : int, optional
        Number of leading dimensions to keep.
    block : str, optional
        Level name whose block (the dimensions that level adds) to return.

    Returns
    -------
    numpy.ndarray
        ``(n_samples, k)`` or ``(n_samples, block_width)``.
    """
    if (prefix is None) == (block is None):
        raise ValueError(f"pass exactly one of prefix= or block=, got prefix={prefix!r}, block={block!r}")
    if prefix is not None:
        return np.asarray(nested.prefix(int(prefix)))
    return np.asarray(nested.block(block))


def _flip_signs(components: np.ndarray) -> np.ndarray:
    """Make the largest-magnitude loading of each component (row) positive, as the core estimators do."""
    return flip_signs(torch.from_numpy(components.T.copy())).numpy().T


def pca_view(values: Any, n_components: int = 2) -> np.ndarray:
    """Project onto the top principal components, with deterministic signs.

    Parameters
    ----------
    values : array-like, shape (n_samples, n_features)
        Points to project.
    n_components : int, default=2
        Number of output coordinates. When it exceeds ``n_features`` the extra columns are zero.

    Returns
    -------
    numpy.ndarray, shape (n_samples, n_components)
        float64 coordinates; the same input gives the same bytes.
    """
    array = _as_2d_float(values).astype(np.float64, copy=False)
    if n_components < 1:
        raise ValueError(f"n_components={n_components} must be >= 1")
    centred = array - array.mean(axis=0)
    n_features = centred.shape[1]
    kept = min(n_components, n_features)
    if n_features <= 2048:
        _, eigenvectors = symmetric_eigh_descending(torch.from_numpy(centred.T @ centred))
        components = eigenvectors[:, :kept].T.numpy()  # signs already fixed
    else:
        _, _, vt = np.linalg.svd(centred, full_matrices=False)
        components = _flip_signs(vt[:kept])
    coords = centred @ components.T
    if kept < n_components:
        coords = np.hstack([coords, np.zeros((coords.shape[0], n_components - kept))])
    return coords


def umap_fit_rows(n_samples: int, fit_sample: int | None = DEFAULT_FIT_SAMPLE,
                  random_state: int = 0) -> np.ndarray | None:
    """Rows a UMAP of ``n_samples`` points is fitted on: None for all, else a seeded sorted subsample.

    Parameters
    ----------
    n_samples : int
    fit_sample : int or None
        Most points to fit on (None: always all).
    random_state : int
        Seed of the subsample (the UMAP's own seed).
    """
    if fit_sample is None or n_samples <= fit_sample:
        return None
    if fit_sample < 4:
        raise ValueError(f"fit_sample={fit_sample} must be at least 4 points")
    return np.sort(np.random.default_rng(random_state).choice(n_samples, size=int(fit_sample), replace=False))


def umap_note(n_samples: int, fit_sample: int | None = DEFAULT_FIT_SAMPLE, random_state: int = 0) -> str:
    """What a UMAP of ``n_samples`` points shows, when it is not a plain fit of them all (else ``""``)."""
    if umap_fit_rows(n_samples, fit_sample, random_state) is None:
        return ""
    return (f"UMAP fitted on a seeded subsample of {fit_sample:,} of {n_samples:,} points (seed {random_state}); "
            f"the other {n_samples - fit_sample:,} placed by transform")


class _EpochProgress:
    """The file umap-learn's epoch progress bar (``tqdm_kwds``) writes to: each ``"<n>/<total>"`` it writes
    becomes ``progress(fraction, message)``, the fraction mapped onto ``[start, end]``. An exception ``progress``
    raises (a cancelled job) leaves the epoch loop, so a UMAP stops within one epoch."""

    _COUNT = re.compile(r"(\d+)/(\d+)")

    def __init__(self, progress: Callable[[float, str], None], start: float, end: float, label: str) -> None:
        self.progress, self.start, self.end, self.label = progress, start, end, label

    def write(self, text: str) -> None:
        found = self._COUNT.findall(text)
        if found:
            done, total = (int(value) for value in found[-1])
            share = done / total if total else 1.0
            self.progress(self.start + (self.end - self.start) * share, f"{self.label}: epoch {done} of {total}")

    def flush(self) -> None:
        return None


def _fit_umap(array: np.ndarray, n_neighbors: int, min_dist: float, random_state: int,
              fit_rows: np.ndarray | None = None,
              progress: Callable[[float, str], None] | None = None) -> np.ndarray:
    """Fit UMAP on ``array`` (or on its ``fit_rows``, placing the others by ``transform``); 2-D float32.

    ``progress(fraction, message)``, when given, hears of the neighbour graph (0), the layout's epochs (10% to
    90% of a subsample fit, to 100% of a whole fit; at most twice a second) and the placing of the other rows'
    epochs (90% to 100%).
    """
    umap = _import_umap()
    fitted = array if fit_rows is None else array[fit_rows]
    epochs = None if progress is None else _EpochProgress(progress, 0.1, 1.0 if fit_rows is None else 0.9,
                                                          "UMAP layout")
    bar = {} if epochs is None else {"tqdm_kwds": {"disable": False, "file": epochs, "bar_format": "{n}/{total}",
                                                   "mininterval": 0.5}}
    if progress is not None:
        progress(0.0, f"UMAP: neighbour graph of {fitted.shape[0]:,} points")
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=min(n_neighbors, fitted.shape[0] - 1),
        min_dist=min_dist,
        random_state=random_state,
        n_jobs=1,
        low_memory=True,
        **bar,
    )
    embedding = np.asarray(reducer.fit_transform(fitted), dtype=np.float32)
    if fit_rows is None:
        return embedding
    rest = np.setdiff1d(np.arange(array.shape[0]), fit_rows, assume_unique=True)
    if epochs is not None:  # transform runs epochs of its own through the same bar
        epochs.start, epochs.end, epochs.label = 0.9, 1.0, f"UMAP: placing the other {rest.size:,} points"
    coords = np.empty((array.shape[0], 2), dtype=np.float32)
    coords[fit_rows] = embedding
    coords[rest] = np.asarray(reducer.transform(array[rest]), dtype=np.float32)
    return coords


def umap_view(
    values: Any,
    *,
    n_neighbors: int = 15,
    min_dist: float = 0.1,
    random_state: int = 0,
    pca_dims: int | None = 50,
    fit_sample: int | None = DEFAULT_FIT_SAMPLE,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    fit: bool = True,
    progress: Callable[[float, str], None] | None = None,
) -> np.ndarray | None:
    """UMAP coordinates of ``values``, read from or written to an on-disk cache.

    Parameters
    ----------
    values : array-like, shape (n_samples, n_features)
        Points to embed (at least 4 rows).
    n_neighbors : int, default=15
        UMAP neighbourhood size (clipped to ``n_samples - 1``).
    min_dist : float, default=0.1
        UMAP ``min_dist``.
    random_state : int, default=0
        Seed; UMAP is deterministic given it (and runs single-threaded).
    pca_dims : int or None, default=50
        When ``n_features`` exceeds it, reduce to that many principal components first (faster
        neighbour search; the usual practice). ``None`` keeps all features.
    fit_sample : int or None, default=DEFAULT_FIT_SAMPLE
        With more points than this, fit on a seeded subsample of this many (seed ``random_state``) and
        place the rest with ``transform`` (:func:`umap_note` describes it). None fits on all.
    cache_dir : str or Path, optional
        Cache folder; default :func:`default_cache_dir`.
    use_cache : bool, default=True
        Read and write the cache.
    fit : bool, default=True
        Fit when the cache has no result; ``False`` returns None instead (see :func:`cached_umap_view`).
    progress : callable, optional
        ``progress(fraction, message)`` during a fit: the neighbour graph, each layout epoch, the placing of
        the rows outside a subsample; an exception it raises stops the fit (nothing is cached).

    Returns
    -------
    numpy.ndarray, shape (n_samples, 2), or None
        float32 coordinates; None only when ``fit=False`` and nothing is cached.
    """
    array = _as_2d_float(values)
    fit_rows = umap_fit_rows(array.shape[0], fit_sample, random_state)
    subsample = {} if fit_rows is None else {"fit_sample": int(fit_sample)}  # whole fits keep their old keys
    path = _cache_path(array, cache_dir, n_neighbors=n_neighbors, min_dist=min_dist,
                       random_state=random_state, pca_dims=pca_dims, **subsample)
    coords = _read_cache(path, array.shape[0]) if use_cache else None
    if coords is not None or not fit:
        return coords
    if array.shape[0] < 4:
        raise ValueError(f"UMAP needs at least 4 points, got {array.shape[0]}")
    if n_neighbors < 2:
        raise ValueError(f"n_neighbors={n_neighbors} must be >= 2")
    reduced = array
    if pca_dims is not None and array.shape[1] > pca_dims:
        reduced = pca_view(array, n_components=pca_dims)
    start = time.perf_counter()
    coords = _fit_umap(reduced.astype(np.float32), n_neighbors, min_dist, random_state, fit_rows, progress)
    logger.info("UMAP of %d x %d took %.1f s", *array.shape, time.perf_counter() - start)
    if use_cache:
        save_npz(path, {"coords": coords})  # atomic: safe for concurrent kernels
    return coords


def cached_umap_view(values: Any, **settings: Any) -> np.ndarray | None:
    """The cached result :func:`umap_view` would return for ``settings``, or None (never fits).

    Parameters
    ----------
    values : array-like, shape (n_samples, n_features)
    **settings
        ``n_neighbors``, ``min_dist``, ``random_state``, ``pca_dims``, ``fit_sample``, ``cache_dir``, as for
        :func:`umap_view`.

    Returns
    -------
    numpy.ndarray of shape (n_samples, 2), or None
    """
    return umap_view(values, fit=False, **settings)


def _cache_path(array: np.ndarray, cache_dir: str | Path | None, **params: Any) -> Path:
    """Cache file of ``array`` with ``params``."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"umap-{content_hash(array, **params)}.npz"


def _read_cache(path: Path, n_samples: int) -> np.ndarray | None:
    """Coordinates stored at ``path`` when present and of the right shape."""
    if not path.is_file():
        return None
    coords = load_npz(path).get("coords")
    if coords is None or coords.shape != (n_samples, 2):
        logger.warning("ignoring UMAP cache file %s with shape %s", path, getattr(coords, "shape", None))
        return None
    logger.info("UMAP cache hit %s", path.name)
    return coords
