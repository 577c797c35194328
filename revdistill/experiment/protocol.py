"""The probe protocol: every choice that turns embeddings into a number, in one frozen object.

A :class:`Protocol` is named by a short id (a digest of its fields), travels with every results
table (``protocol_id``) and describes itself in one line for figure captions. The CLI, the dashboard
and the notebooks all run :func:`revdistill.experiment.pipeline.run_experiment` with one.

>>> protocol = Protocol()
>>> protocol.id == Protocol().id, protocol.id == Protocol(inner_folds=3).id
(True, False)
>>> protocol.prefix_dims((320, 480, 640))
[20, 50, 127, 320, 373, 427, 480, 533, 587, 640]
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Mapping, Sequence

import numpy as np

from revdistill.proteingym.folds import SCHEMES

__all__ = ["Protocol", "REPRESENTATIONS", "DEFAULT_ALPHAS", "SCHEME_LABELS", "PROTOCOL_VERSION"]

PROTOCOL_VERSION = 1
#: Relative ridge penalties searched by the inner CV (scaled by the mean squared singular value).
DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-6, 2, 17))
#: The feature sets a probe is run on, and how figures name them.
REPRESENTATIONS: dict[str, str] = {
    "esm2": "ESM-2",
    "rd": "reverse-distilled",
    "naive": "naive concat+PCA",
    "nested": "reverse-distilled prefix",
    "truncated": "largest ESM-2 truncated",
}
#: Representations that do not depend on a ladder (computed once per task).
LADDER_FREE = ("esm2", "truncated")
SCHEME_LABELS = {"fold_random_5": "random", "fold_modulo_5": "modulo", "fold_contiguous_5": "contiguous"}


@dataclass(frozen=True)
class Protocol:
    """How probe numbers are made (ProteinGym's supervised protocol with a ridge probe by default).

    Attributes
    ----------
    singles_only : bool
        Keep single substitutions only (ProteinGym's supervised setting).
    schemes : tuple of str
        CV schemes, a subset of ``fold_random_5, fold_modulo_5, fold_contiguous_5``. Data without
        mutated positions (a set of proteins) can only run the random scheme; the results say which ran.
    fold_seed : int
        Seed of generated random folds (ProteinGym's script uses 42); official folds win when present.
    inner_folds : int
        Folds of the inner CV choosing the ridge penalty on the training folds only.
    inner_seed : int
        Seed of the inner split.
    alphas : tuple of float
        Relative ridge penalties searched.
    representations : tuple of str
        Keys of :data:`REPRESENTATIONS` to probe.
    n_between : int
        Nested prefix dimensions between consecutive level boundaries (the prefix curve).
    n_below : int
        Prefix dimensions below the first level boundary (geometric).
    n_bootstrap : int
        Bootstrap replicates of the intervals (0: none).
    ci : float
        Interval coverage.
    bootstrap_seed : int
        Seed of the bootstrap.
    """

    singles_only: bool = True
    schemes: tuple[str, ...] = SCHEMES
    fold_seed: int = 42
    inner_folds: int = 5
    inner_seed: int = 0
    alphas: tuple[float, ...] = DEFAULT_ALPHAS
    representations: tuple[str, ...] = tuple(REPRESENTATIONS)
    n_between: int = 2
    n_below: int = 3
    n_bootstrap: int = 1000
    ci: float = 0.95
    bootstrap_seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "schemes", _as_tuple(self.schemes, "schemes"))
        object.__setattr__(self, "representations", _as_tuple(self.representations, "representations"))
        object.__setattr__(self, "alphas", tuple(float(a) for a in _as_tuple(self.alphas, "alphas")))
        _check_subset(self.schemes, SCHEMES, "schemes")
        _check_subset(self.representations, tuple(REPRESENTATIONS), "representations")
        if not all(np.isfinite(a) and a > 0 for a in self.alphas):
            raise ValueError(f"alphas={self.alphas} must be positive finite numbers")
        for name, low in (("inner_folds", 2), ("n_between", 0), ("n_below", 0), ("n_bootstrap", 0),
                          ("fold_seed", 0), ("inner_seed", 0), ("bootstrap_seed", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                raise ValueError(f"{name}={value!r} must be an integer >= {low}")
        if not 0 < float(self.ci) < 1:
            raise ValueError(f"ci={self.ci!r} must be between 0 and 1")
        if not isinstance(self.singles_only, bool):
            raise ValueError(f"singles_only={self.singles_only!r} must be True or False")

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable fields."""
        values = asdict(self)
        values["schemes"], values["representations"] = list(self.schemes), list(self.representations)
        values["alphas"] = list(self.alphas)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Protocol":
        """Inverse of :meth:`to_dict` (unknown keys are an error naming them)."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown protocol field(s) {unknown}; known: {sorted(known)}")
        return cls(**{key: tuple(value) if isinstance(value, list) else value for key, value in values.items()})

    @property
    def id(self) -> str:
        """``p-`` and 10 hex digits of the SHA-256 of the fields (stable across processes)."""
        text = json.dumps({"version": PROTOCOL_VERSION, **self.to_dict()}, sort_keys=True)
        return "p-" + hashlib.sha256(text.encode()).hexdigest()[:10]

    def describe(self, schemes: Sequence[str] | None = None) -> str:
        """One line for captions: the protocol as it ran (``schemes`` that actually ran, if fewer)."""
        ran = tuple(schemes) if schemes is not None else self.schemes
        scheme_text = "/".join(SCHEME_LABELS[s] for s in ran)
        variants = "single substitutions" if self.singles_only else "all variants"
        return (f"ridge probe on mean-pooled embeddings; {variants}; 5-fold CV ({scheme_text}"
                f"{', averaged' if len(ran) > 1 else ''}); penalty by inner {self.inner_folds}-fold CV on "
                f"training folds; Spearman of pooled out-of-fold predictions; protocol {self.id}")

    # ------------------------------------------------------------------ prefix curve
    def prefix_dims(self, boundaries: Sequence[int]) -> list[int]:
        """Prefix sizes probed for the ``nested`` and ``truncated`` curves.

        The level boundaries, ``n_between`` evenly spaced sizes between consecutive boundaries, and
        ``n_below`` geometric sizes below the first boundary.
        """
        bounds = [int(b) for b in boundaries]
        if not bounds or bounds[0] < 1 or any(b <= a for a, b in zip(bounds, bounds[1:])):
            raise ValueError(f"boundaries={list(boundaries)} must be positive and strictly increasing")
        dims = set(bounds)
        for low, high in zip(bounds[:-1], bounds[1:]):
            dims.update(int(round(v)) for v in np.linspace(low, high, self.n_between + 2)[1:-1])
        if self.n_below:
            below = np.geomspace(max(1, bounds[0] // 16), bounds[0], self.n_below + 1)[:-1]
            dims.update(int(round(v)) for v in below)
        return sorted(d for d in dims if 1 <= d <= bounds[-1])


def _as_tuple(value: Any, name: str) -> tuple:
    if isinstance(value, str):
        raise ValueError(f"{name}={value!r} must be a sequence of values, not one string (split it on commas)")
    try:
        items = tuple(value)
    except TypeError:
        raise ValueError(f"{name}={value!r} must be a sequence") from None
    if not items:
        raise ValueError(f"{name} is empty; give at least one value")
    return items


def _check_subset(values: tuple, allowed: tuple, name: str) -> None:
    unknown = [value for value in values if value not in allowed]
    repeated = sorted({value for value in values if values.count(value) > 1})
    if unknown:
        raise ValueError(f"{name}={list(values)}: {unknown} unknown; choose from {list(allowed)}")
    if repeated:
        raise ValueError(f"{name}={list(values)} repeats {repeated}")
