"""Features per representation for ProteinGym variants, and the end-to-end benchmark run.

For a ladder of models (small to large) and the mean-pooled embedding of every mutated sequence:

- ``esm2``: ESM-2 as is, the pooled embedding of each model (dim = that model's width);
- ``rd``: the reverse-distilled ladder at each level (dim = that level's width; level 1 is ESM-2 itself);
- ``naive``: the paper's naive baseline (concatenate, then PCA) at each level;
- ``nested``: prefixes of the full nested embedding at chosen dimensions (level boundaries and a few in
  between), to draw Spearman against prefix dimension.

Every step of the ladder is affine, so the pooled reverse-distilled embedding is
``ladder.transform(pooled raw)``, which is what is computed (no per-residue pass).
Embeddings come from an :class:`~revdistill.esm.store.EmbeddingStore`, so a second run computes nothing;
the ladder and the naive baseline are fitted from the store's per-residue moments (all sequences in
the store) unless a fitted ladder is given.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import pandas as pd

from revdistill.proteingym import SCHEMES, Assay, load_reference, read_assay

logger = logging.getLogger(__name__)

__all__ = [
    "FeatureKey", "REPRESENTATIONS", "prefix_dims", "build_features", "assay_records", "embed_assays",
    "pooled_for_assay", "fit_transforms", "run_benchmark",
]

REPRESENTATIONS: dict[str, str] = {
    "esm2": "ESM-2",
    "rd": "reverse-distilled",
    "naive": "naive concat+PCA",
    "nested": "reverse-distilled prefix",
}


class FeatureKey(NamedTuple):
    """Identifies one feature matrix: representation, model (level) name and dimension."""

    representation: str
    model: str
    dim: int


def prefix_dims(boundaries: Sequence[int], n_between: int = 2) -> list[int]:
    """Level boundaries plus ``n_between`` evenly spaced dimensions between consecutive boundaries.

    >>> prefix_dims((320, 480, 640), n_between=1)
    [320, 400, 480, 560, 640]
    """
    if n_between < 0:
        raise ValueError(f"n_between={n_between} must be >= 0")
    bounds = [int(b) for b in boundaries]
    if not bounds or any(b <= 0 for b in bounds) or sorted(set(bounds)) != bounds:
        raise ValueError(f"boundaries={list(boundaries)} must be positive and strictly increasing")
    dims = {bounds[0]}
    for low, high in zip(bounds[:-1], bounds[1:]):
        dims.update(int(round(v)) for v in np.linspace(low, high, n_between + 2)[1:])
    return sorted(dims)


def build_features(
    pooled: Mapping[str, np.ndarray], ladder: Any, naive: Any | None = None, dims: Sequence[int] | None = None,
    representations: Sequence[str] = tuple(REPRESENTATIONS),
) -> dict[FeatureKey, np.ndarray]:
    """Feature matrices of every representation from pooled raw embeddings.

    Parameters
    ----------
    pooled : mapping
        ``{model: (n_sequences, dim_model)}``, mean-pooled raw ESM-2 embeddings, the ladder's levels in
        order (small to large).
    ladder : DistillationLadder
        Fitted on those levels.
    naive : NaiveConcatPCA, optional
        Fitted on those levels; required for ``"naive"``.
    dims : sequence of int, optional
        Prefix dimensions for ``"nested"``; default :func:`prefix_dims` of the level boundaries.
    representations : sequence of str
        Subset of :data:`REPRESENTATIONS`.

    Returns
    -------
    dict
        ``{FeatureKey: array (n_sequences, dim)}``, float64. Keys that denote the same matrix (the first
        level of every representation, nested prefixes at boundaries) share one array object, which the
        probe fits once.
    """
    unknown = [r for r in representations if r not in REPRESENTATIONS]
    if unknown:
        raise ValueError(f"representations={unknown} are unknown; choose from {list(REPRESENTATIONS)}")
    names = list(pooled)
    if names != list(ladder.level_names_):
        raise ValueError(f"pooled models {names} must be the ladder's levels in order {list(ladder.level_names_)}")
    raw = {name: np.asarray(pooled[name], dtype=np.float64) for name in names}
    nested = np.asarray(ladder.transform(raw), dtype=np.float64)
    boundaries = [int(b) for b in ladder.dims_]
    rd = {name: raw[name] if i == 0 else np.ascontiguousarray(nested[:, :dim])
          for i, (name, dim) in enumerate(zip(names, boundaries))}
    features: dict[FeatureKey, np.ndarray] = {}
    if "esm2" in representations:
        for name, dim in zip(names, boundaries):
            features[FeatureKey("esm2", name, dim)] = raw[name]
    if "rd" in representations:
        for name, dim in zip(names, boundaries):
            features[FeatureKey("rd", name, dim)] = rd[name]
    if "naive" in representations:
        if naive is None:
            raise ValueError("representation 'naive' needs a fitted NaiveConcatPCA (naive=...)")
        levels = naive.transform(raw)
        for i, (name, dim) in enumerate(zip(names, boundaries)):
            features[FeatureKey("naive", name, dim)] = raw[name] if i == 0 else np.asarray(levels[name], dtype=np.float64)
    if "nested" in representations:
        chosen = prefix_dims(boundaries) if dims is None else sorted({int(d) for d in dims})
        for dim in chosen:
            if not 1 <= dim <= boundaries[-1]:
                raise ValueError(f"prefix dim={dim} must be between 1 and {boundaries[-1]}")
            level = next(i for i, b in enumerate(boundaries) if dim <= b)
            array = rd[names[level]] if dim == boundaries[level] else np.ascontiguousarray(nested[:, :dim])
            features[FeatureKey("nested", names[level], dim)] = array
    return features


def assay_records(assay: Assay) -> list[tuple[str, str]]:
    """``(id, mutated_sequence)`` per variant; ids are ``"<DMS_id>:<mutant>"`` (unique across assays)."""
    return [(f"{assay.dms_id}:{m}", s) for m, s in zip(assay.variants["mutant"], assay.variants["mutated_sequence"])]


def embed_assays(assays: Sequence[Assay], store: Any, models: Sequence[str], **embed_kwargs: Any) -> int:
    """Embed every variant not yet in ``store`` (an EmbeddingStore); returns the number newly embedded."""
    records = [record for assay in assays for record in assay_records(assay)]
    from revdistill.esm.runner import EmbedOptions, LocalEmbedder

    return LocalEmbedder(EmbedOptions(**embed_kwargs)).embed(store, records, models)


def pooled_for_assay(store: Any, assay: Assay, models: Sequence[str], _cache: dict | None = None) -> dict[str, np.ndarray]:
    """``{model: (n_variants, dim)}`` pooled embeddings of the assay's variants, in variant order."""
    cache = {} if _cache is None else _cache
    wanted = [record_id for record_id, _ in assay_records(assay)]
    pooled = {}
    for model in models:
        if model not in cache:
            ids, values = store.pooled(model)
            cache[model] = ({record_id: i for i, record_id in enumerate(ids)}, values)
        index, values = cache[model]
        missing = [w for w in wanted if w not in index]
        if missing:
            raise ValueError(f"{len(missing)} variant(s) of {assay.dms_id} are not in the store for {model} "
                             f"(e.g. {missing[:3]}); embed them first")
        pooled[model] = values[[index[w] for w in wanted]]
    return pooled


def fit_transforms(store: Any, regressor: str = "pcr") -> tuple[Any, Any]:
    """Fit the :class:`~revdistill.DistillationLadder` and :class:`~revdistill.NaiveConcatPCA` from the
    store's joint per-residue moments."""
    from revdistill import DistillationLadder, NaiveConcatPCA

    moments = store.moments()
    return DistillationLadder(regressor=regressor).fit_moments(moments), NaiveConcatPCA().fit_moments(moments)


def run_benchmark(
    assays: Sequence[str | Path | Assay], models: Sequence[str] = ("tiny-32", "tiny-48", "tiny-64"), *,
    store: str | Path | Any, data_dir: str | Path | None = None, ladder: str | Path | Any | None = None,
    schemes: Sequence[str] = SCHEMES, representations: Sequence[str] = tuple(REPRESENTATIONS),
    n_between: int = 2, regressor: str = "pcr", device: str = "cpu", dtype: str = "fp32",
    weights_dir: str | Path | None = None, long_sequences: str = "window", progress: bool = False,
    probe_kwargs: Mapping[str, Any] | None = None, callback: Callable[[int, int, str], None] | None = None,
) -> pd.DataFrame:
    """Embed (what is missing), fit the ladder, build features and run the probe on every assay.

    Parameters
    ----------
    assays : sequence
        ProteinGym ids, CSV paths or :class:`~revdistill.proteingym.Assay` objects.
    models : sequence of str
        Ladder levels, small to large (``("8M", "35M", "150M")`` or the tiny family).
    store : str, Path or EmbeddingStore
        HDF5 embedding store; reused across runs (created with these models).
    ladder : str, Path or DistillationLadder, optional
        A fitted ladder (e.g. from ``revdistill fit``); default: fitted from the store's moments. The
        naive baseline is always fitted from the store's moments.
    representations, n_between, schemes
        See :func:`build_features` and :func:`~revdistill.experiment.probe.evaluate_assay`.
    device, dtype, weights_dir, long_sequences, progress
        Passed to :meth:`~revdistill.esm.store.EmbeddingStore.embed` (sequences over 1022 residues are
        embedded in overlapping windows by default, as the embedding engine does).
    probe_kwargs : mapping, optional
        Passed to :func:`~revdistill.experiment.probe.evaluate_assay` (``alphas``, ``inner_folds``, ...).
    callback : callable, optional
        Called as ``callback(done, total, dms_id)`` after each assay's probe (progress in a dashboard).

    Returns
    -------
    DataFrame
        The tidy table of :func:`~revdistill.experiment.probe.evaluate_assay`, all assays concatenated.
    """
    from revdistill import DistillationLadder
    from revdistill.experiment.probe import evaluate_assay
    from revdistill.esm.store import EmbeddingStore

    from revdistill.esm.models import get_spec

    models = list(models)
    if len(models) < 2:
        raise ValueError(f"models={models}: a ladder needs at least 2 models, small to large")
    widths = [get_spec(m).dim for m in models]
    if any(a >= b for a, b in zip(widths[:-1], widths[1:])):
        raise ValueError(f"models={models} must go from small to large (widths {widths})")
    given = None
    if ladder is not None:
        given = ladder if hasattr(ladder, "transform") else DistillationLadder.load(ladder)
        if list(given.level_names_) != models:
            raise ValueError(f"ladder levels {list(given.level_names_)} differ from models={models}")
    reference = None
    loaded = []
    for item in assays:
        if isinstance(item, Assay):
            loaded.append(item)
            continue
        if reference is None and not str(item).endswith(".csv"):
            reference = load_reference(data_dir)
        loaded.append(read_assay(item, data_dir=data_dir, reference=reference))
    store = store if hasattr(store, "pooled") else EmbeddingStore(store)
    added = embed_assays(loaded, store, models, device=device, dtype=dtype, weights_dir=weights_dir,
                         long_sequences=long_sequences, progress=progress)
    logger.info("embedded %d new sequence(s); store %s", added, getattr(store, "path", store))
    fitted_ladder, naive = fit_transforms(store, regressor=regressor)
    if given is not None:
        fitted_ladder = given
    dims = prefix_dims(fitted_ladder.dims_, n_between)
    frames, cache = [], {}
    for done, assay in enumerate(loaded, start=1):
        pooled = pooled_for_assay(store, assay, models, cache)
        features = build_features(pooled, fitted_ladder, naive, dims=dims, representations=representations)
        frames.append(evaluate_assay(features, assay, schemes, **dict(probe_kwargs or {})))
        logger.info("%s: %d variants, %d feature sets", assay.dms_id, assay.n_variants, len(features))
        if callback is not None:
            callback(done, len(loaded), assay.dms_id)
    return pd.concat(frames, ignore_index=True)
