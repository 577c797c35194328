"""Feature matrices per representation, from mean-pooled raw embeddings and one reference ladder.

For a ladder of models (small to large) and the mean-pooled embedding of every record:

- ``esm2``: ESM-2 as is, the pooled embedding of each model (dim = that model's width);
- ``rd``: the reverse-distilled ladder at each level (level 1 is ESM-2 itself);
- ``naive``: the paper's naive baseline (concatenate, then PCA) at each level;
- ``nested``: prefixes of the full nested embedding at the protocol's prefix sizes;
- ``truncated``: the largest model's embedding cut to the same prefix sizes (what Matryoshka nesting
  is compared with).

Every step of the ladder is affine, so the pooled reverse-distilled embedding is
``ladder.transform(pooled raw)`` (no per-residue pass).

>>> import numpy as np
>>> from revdistill import DistillationLadder
>>> rng = np.random.default_rng(0)
>>> pooled = {"a": rng.normal(size=(50, 4)), "b": rng.normal(size=(50, 6))}
>>> ladder = DistillationLadder(regressor="ols").fit(pooled)
>>> sorted(k.representation for k in build_features(pooled, ladder, None, [2, 4, 6], ("esm2", "rd")))
['esm2', 'esm2', 'rd', 'rd']
"""
from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from revdistill.experiment.protocol import REPRESENTATIONS

__all__ = ["FeatureKey", "build_features"]


class FeatureKey(NamedTuple):
    """Identifies one feature matrix: representation, model (level) name and dimension."""

    representation: str
    model: str
    dim: int


def build_features(pooled: Mapping[str, np.ndarray], ladder: Any, naive: Any | None, prefix_dims: Sequence[int],
                   representations: Sequence[str]) -> dict[FeatureKey, np.ndarray]:
    """Feature matrices of every representation.

    Parameters
    ----------
    pooled : mapping
        ``{model: (n_records, dim_model)}``, mean-pooled raw ESM-2 embeddings, the ladder's levels in
        order (small to large).
    ladder : DistillationLadder
        Fitted on those levels.
    naive : NaiveConcatPCA or None
        Fitted on those levels; needed for ``"naive"`` (skipped when None).
    prefix_dims : sequence of int
        Prefix sizes of ``"nested"`` and ``"truncated"`` (e.g. :meth:`Protocol.prefix_dims`).
    representations : sequence of str
        Keys of :data:`~revdistill.experiment.protocol.REPRESENTATIONS`.

    Returns
    -------
    dict
        ``{FeatureKey: array (n_records, dim)}``, float64. Keys that denote the same matrix (the first
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
    bad = [d for d in prefix_dims if not 1 <= int(d) <= boundaries[-1]]
    if bad:
        raise ValueError(f"prefix dims {bad} must be between 1 and {boundaries[-1]}")
    rd = {name: raw[name] if i == 0 else np.ascontiguousarray(nested[:, :dim])
          for i, (name, dim) in enumerate(zip(names, boundaries))}
    largest = raw[names[-1]]
    features: dict[FeatureKey, np.ndarray] = {}
    for representation in representations:
        if representation == "esm2":
            features.update({FeatureKey("esm2", name, dim): raw[name] for name, dim in zip(names, boundaries)})
        elif representation == "rd":
            features.update({FeatureKey("rd", name, dim): rd[name] for name, dim in zip(names, boundaries)})
        elif representation == "naive":
            if naive is None:
                continue
            levels = naive.transform(raw)
            for i, (name, dim) in enumerate(zip(names, boundaries)):
                features[FeatureKey("naive", name, dim)] = raw[name] if i == 0 else np.asarray(levels[name])
        elif representation == "nested":
            for dim in sorted({int(d) for d in prefix_dims}):
                level = next(i for i, b in enumerate(boundaries) if dim <= b)
                array = rd[names[level]] if dim == boundaries[level] else np.ascontiguousarray(nested[:, :dim])
                features[FeatureKey("nested", names[level], dim)] = array
        elif representation == "truncated":
            for dim in sorted({int(d) for d in prefix_dims}):
                array = largest if dim == boundaries[-1] else np.ascontiguousarray(largest[:, :dim])
                features[FeatureKey("truncated", names[-1], dim)] = array
        else:  # pragma: no cover - checked above
            raise ValueError(f"representation {representation!r} is unknown")
    return features
