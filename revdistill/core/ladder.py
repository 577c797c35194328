"""The reverse-distillation ladder, under either fit convention.

Every step is applied to the **nested** embedding of the previous level: step ``k`` maps
``[nested_{k-1}, raw_k]`` to ``nested_k``. What a step is *fitted* on is the ``fit_on`` parameter:

- ``"nested"`` (ours, the default): step ``k`` regresses raw level ``k`` on the nested output of
  steps ``1..k-1`` — exactly the input it is later applied to;
- ``"raw"`` (the released method, Catrina et al.'s code): step ``k`` regresses raw level ``k`` on raw
  level ``k-1``, then is applied to the nested level ``k-1``.

Each step is affine in the raw embeddings, so the nested embedding at every level is ``u @ W + c``
for the concatenated raw levels ``u``. The ladder tracks ``(W, c)`` while it fits, which lets one
joint :class:`~revdistill.core.moments.Moments` pass fit the whole chain exactly, under both
conventions.

>>> from revdistill.core.moments import Moments
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> latent = rng.normal(size=(2000, 6))
>>> levels = {"a": latent @ rng.normal(size=(6, 4)), "b": latent @ rng.normal(size=(6, 8)) + rng.normal(size=(2000, 8))}
>>> ours = DistillationLadder(regressor="ols").fit(levels)
>>> released = DistillationLadder(regressor="ols", fit_on="raw").fit(levels)
>>> ours.transform(levels).shape, bool(np.array_equal(ours.transform(levels).prefix(4), levels["a"]))
((2000, 8), True)
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from revdistill.io.files import encode_meta, load_npz, read_meta, save_npz
from revdistill.core.arrays import as_float_tensor
from revdistill.core.base import check_is_fitted
from revdistill.core.distill import LEARNED_ARRAYS, LEARNED_SCALARS, PairStatistics, ReverseDistiller
from revdistill.core.moments import Moments
from revdistill.core.nested import NestedEmbedding

logger = logging.getLogger(__name__)

__all__ = ["DistillationLadder", "FIT_CONVENTIONS", "compose_affine", "level_selector", "append_step"]

FORMAT_NAME = "revdistill-ladder"
FORMAT_VERSION = 2
_READABLE_VERSIONS = (1, 2)
#: What each fit convention means (``fit_on`` of :class:`DistillationLadder` and the naive baseline).
FIT_CONVENTIONS: dict[str, str] = {
    "nested": "each step fitted on the nested output of the previous one (the input it is applied to)",
    "raw": "each step fitted on the raw smaller embedding, applied to the nested one (the released method)",
}
_SAVED_SCALARS = tuple(name for name in LEARNED_SCALARS
                       if name not in ("n_components_", "n_features_in_", "n_features_large_"))


def check_fit_on(fit_on: str) -> str:
    """Return ``fit_on`` if it names a convention of :data:`FIT_CONVENTIONS`, else raise ValueError."""
    if fit_on not in FIT_CONVENTIONS:
        raise ValueError(f"fit_on={fit_on!r} is not a fit convention; choose one of {tuple(FIT_CONVENTIONS)}")
    return fit_on


class DistillationLadder:
    """A chain of :class:`ReverseDistiller` steps over model levels ordered small to large.

    Parameters
    ----------
    regressor : {"pcr", "ridge", "ols"}, default="pcr"
    alpha : float, default=1.0
        Ridge penalty (``regressor="ridge"`` only).
    min_variance_explained : float, default=0.95
        PCR fallback when no component passes the Johnstone threshold.
    fit_on : {"nested", "raw"}, default="nested"
        What each step is fitted on (see the module docstring); both apply steps to nested inputs.

    Attributes
    ----------
    level_names_ : tuple of str
    dims_ : tuple of int
        Embedding dimension of each level; the nested embedding at level ``k`` has ``dims_[k]`` columns.
    steps_ : list of ReverseDistiller
        ``steps_[k - 1]`` maps the nested level ``k - 1`` and raw level ``k`` to nested level ``k``.
    affine_weights_, affine_offset_ : ndarray of shape (sum(dims_), dims_[-1]) and (dims_[-1],)
        The whole nested embedding as ``u @ affine_weights_ + affine_offset_`` of the raw levels.
    block_correlation_max_ : list of float
        Per step, the largest absolute correlation between the appended block and the prefix
        before it **in the nested output** on the fitting residues (NaN when unknown, e.g. for
        imported scaler files). Zero for OLS with ``fit_on="nested"``.
    provenance_ : dict
        What the ladder was fitted on (corpus, models, ...), as given to :meth:`fit_moments`;
        saved with the ladder.
    """

    def __init__(self, regressor: str = "pcr", alpha: float = 1.0,
                 min_variance_explained: float = 0.95, fit_on: str = "nested") -> None:
        self.regressor = regressor
        self.alpha = alpha
        self.min_variance_explained = min_variance_explained
        self.fit_on = fit_on

    def _new_step(self) -> ReverseDistiller:
        return ReverseDistiller(regressor=self.regressor, alpha=self.alpha,
                                min_variance_explained=self.min_variance_explained)

    # ------------------------------------------------------------------ fitting
    def fit(self, levels: Mapping[str, Any]) -> "DistillationLadder":
        """Fit on per-residue arrays, one per level, in ladder order (small to large).

        Parameters
        ----------
        levels : mapping of str to array of shape (n_residues, dim)
            The same residues embedded by every model, e.g. ``{"8M": x8, "35M": x35}``.
        """
        check_levels(levels)
        first = as_float_tensor(next(iter(levels.values())), "levels")
        moments = Moments.from_arrays(levels, device=first.device)
        return self.fit_moments(moments)

    def fit_moments(self, moments: Moments, provenance: Mapping[str, Any] | None = None) -> "DistillationLadder":
        """Fit the whole chain from one joint :class:`Moments` over all levels.

        Parameters
        ----------
        moments : Moments
            Joint per-residue moments of the levels, small to large.
        provenance : mapping, optional
            JSON-serialisable description of what the moments were computed from (kept in
            ``provenance_`` and saved with the ladder).
        """
        check_fit_on(self.fit_on)
        if len(moments.names) < 2:
            raise ValueError(f"a ladder needs at least 2 levels, the moments hold {list(moments.names)}")
        check_order(moments.names, moments.dims)
        if moments.count < 2:
            raise ValueError(f"need at least 2 residues to fit, the moments hold {moments.count}")
        self._new_step()._validate_params(1, 2, 3)  # checks regressor/alpha before any work
        cov = moments.covariance(ddof=1)
        mean = moments.mean
        # nested level 0 is raw level 0: W selects its columns, c = 0
        weights = level_selector(moments.n_features, moments.slice_of(moments.names[0]), mean.device)
        offset = torch.zeros(moments.dims[0], dtype=torch.float64, device=mean.device)
        steps = []
        for small_name, name in zip(moments.names[:-1], moments.names[1:]):
            large = moments.slice_of(name)
            if self.fit_on == "raw":
                stats = PairStatistics.from_moments(moments, small_name, name)
            else:
                cov_w = cov @ weights
                stats = PairStatistics(count=moments.count, mean_small=mean @ weights + offset,
                                       mean_large=mean[large], cov_small=weights.T @ cov_w,
                                       cov_cross=cov_w[large, :].T, cov_large=cov[large, large])
            step = self._new_step()
            try:
                step._fit_statistics(stats)
            except ValueError as error:
                raise ValueError(f"step {small_name!r} -> {name!r}: {error}") from error
            steps.append(step)
            weights, offset = append_step(weights, offset, level_selector(moments.n_features, large, mean.device),
                                          step)
        correlations = _block_correlations(weights.T @ cov @ weights, moments.dims)
        return self._set_fitted(moments.names, moments.dims, steps, correlations, provenance)

    def _set_fitted(self, names, dims, steps, correlations, provenance) -> "DistillationLadder":
        """The one place a ladder's learned state is set (by fitting, loading or importing)."""
        names, dims = tuple(str(name) for name in names), tuple(int(dim) for dim in dims)
        if len(steps) != len(names) - 1 or len(correlations) != len(steps):
            raise ValueError(f"{len(names)} levels need {len(names) - 1} steps and correlations; got "
                             f"{len(steps)} and {len(correlations)}")
        check_order(names, dims)
        for index, step in enumerate(steps):
            if (step.n_features_in_, step.n_features_in_ + step.n_components_) != dims[index:index + 2]:
                raise ValueError(f"step {names[index]!r} -> {names[index + 1]!r} maps {step.n_features_in_} "
                                 f"-> {step.n_features_in_ + step.n_components_} dims; the levels need "
                                 f"{dims[index]} -> {dims[index + 1]}")
        self.level_names_, self.dims_, self.steps_ = names, dims, list(steps)
        self.affine_weights_, self.affine_offset_ = compose_affine(self.steps_, dims)
        self.block_correlation_max_ = [float(value) for value in correlations]
        self.provenance_ = dict(provenance or {})
        return self

    # ------------------------------------------------------------------ transforming
    def transform(self, levels: Mapping[str, Any]) -> NestedEmbedding:
        """Nested embedding of the given levels.

        ``levels`` must hold the first ``j`` levels of the ladder (``j >= 1``); the result then has
        ``dims_[j - 1]`` columns, and its prefix of ``dims_[i]`` columns is the nested embedding at
        level ``i``. Rows can be residues or mean-pooled sequences (the map is affine).
        """
        check_is_fitted(self, "steps_")
        check_levels(levels, allow_single=True)
        names = list(levels)
        expected = list(self.level_names_[: len(names)])
        if names != expected:
            raise ValueError(
                f"levels must be a prefix of the ladder's levels in order {list(self.level_names_)}; "
                f"got {names}"
            )
        nested = levels[names[0]]
        shape = getattr(nested, "shape", None)
        if shape is None or len(shape) != 2 or shape[1] != self.dims_[0]:
            raise ValueError(f"level {names[0]!r} must have shape (n, {self.dims_[0]}), got {shape}")
        for step, name in zip(self.steps_, names[1:]):
            try:
                nested = step.transform(nested, levels[name])
            except ValueError as error:
                raise ValueError(f"level {name!r}: {error}") from error
        if not isinstance(nested, torch.Tensor):
            nested = np.asarray(nested)
        return NestedEmbedding(nested, names=tuple(names), boundaries=self.dims_[: len(names)])

    def fit_transform(self, levels: Mapping[str, Any]) -> NestedEmbedding:
        """Fit, then transform the same data."""
        return self.fit(levels).transform(levels)

    def diagnostics(self) -> list[dict[str, Any]]:
        """One row per step: R², PCR components, residual variance kept, prefix correlation."""
        check_is_fitted(self, "steps_")
        rows = []
        for index, step in enumerate(self.steps_):
            rows.append({
                "small": self.level_names_[index],
                "large": self.level_names_[index + 1],
                "d_small": self.dims_[index],
                "d_large": self.dims_[index + 1],
                "regressor": self.regressor,
                "fit_on": self.fit_on,
                "r2": step.r2_,
                "n_regression_components": step.n_regression_components_,
                "n_residual_components": step.n_components_,
                "residual_explained_variance_ratio": float(np.sum(step.explained_variance_ratio_)),
                "max_abs_corr_prefix": self.block_correlation_max_[index],
            })
        return rows

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted ladder as plain arrays plus JSON metadata (``.npz``, no pickle)."""
        return save_npz(path, self.to_arrays())

    def to_arrays(self) -> dict[str, np.ndarray]:
        """What :meth:`save` writes: the learned arrays (float64) and a ``meta`` entry (JSON as uint8)."""
        check_is_fitted(self, "steps_")
        arrays: dict[str, np.ndarray] = {}
        for index, step in enumerate(self.steps_):
            for name in LEARNED_ARRAYS:
                arrays[f"step{index}__{name}"] = np.asarray(getattr(step, name), dtype=np.float64)
        meta = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION, "params": self._params(),
            "level_names": list(self.level_names_), "dims": list(self.dims_),
            "steps": [{name: _plain(getattr(step, name)) for name in _SAVED_SCALARS} for step in self.steps_],
            "block_correlation_max": [_plain(value) for value in self.block_correlation_max_],
            "provenance": self.provenance_,
        }
        arrays["meta"] = encode_meta(meta)
        return arrays

    def _params(self) -> dict[str, Any]:
        return {"regressor": self.regressor, "alpha": float(self.alpha),
                "min_variance_explained": float(self.min_variance_explained), "fit_on": self.fit_on}

    @classmethod
    def load(cls, path: str | Path) -> "DistillationLadder":
        """Read a ladder written by :meth:`save`, checking format, version, metadata types and every shape.

        Raises
        ------
        ValueError
            Naming ``path``: not a ladder file, another version, damaged metadata or arrays.
        """
        state = load_npz(path)
        meta = read_meta(state, FORMAT_NAME, _READABLE_VERSIONS)
        try:
            params, names, dims, steps_meta = _checked_metadata(meta)
            ladder = cls(**params)
            ladder._new_step()._validate_params(1, 2, 3)
            check_fit_on(ladder.fit_on)
            steps = []
            for index, step_meta in enumerate(steps_meta):
                missing = [f"step{index}__{name}" for name in LEARNED_ARRAYS if f"step{index}__{name}" not in state]
                if missing:
                    raise ValueError(f"missing array(s) {missing}")
                learned = {name: state[f"step{index}__{name}"] for name in LEARNED_ARRAYS}
                learned.update({name: _from_plain(name, step_meta.get(name)) for name in _SAVED_SCALARS})
                try:
                    steps.append(ladder._new_step()._set_learned(learned))
                except ValueError as error:
                    raise ValueError(f"step {names[index]!r} -> {names[index + 1]!r}: {error}") from None
            correlations = meta.get("block_correlation_max") or [step.prefix_correlation_max_ for step in steps]
            return ladder._set_fitted(names, dims, steps, [np.nan if c is None else float(c) for c in correlations],
                                      meta.get("provenance"))
        except (ValueError, TypeError, IndexError, AttributeError, KeyError) as error:
            raise ValueError(f"{path}: {error}; the file is damaged or was edited") from None

    def __repr__(self) -> str:
        fitted = f", levels={list(self.level_names_)}" if hasattr(self, "steps_") else ""
        return f"DistillationLadder(regressor={self.regressor!r}, fit_on={self.fit_on!r}{fitted})"


def level_selector(n_features: int, columns: slice, device: Any = "cpu") -> torch.Tensor:
    """The (n_features, width) float64 matrix that picks ``columns`` out of concatenated raw levels."""
    width = columns.stop - columns.start
    selector = torch.zeros(n_features, width, dtype=torch.float64, device=device)
    selector[columns, :] = torch.eye(width, dtype=torch.float64, device=device)
    return selector


def append_step(weights: torch.Tensor, offset: torch.Tensor, selector: torch.Tensor,
                step: ReverseDistiller) -> tuple[torch.Tensor, torch.Tensor]:
    """Extend the affine map ``u @ weights + offset`` of a nested level by one fitted step.

    With ``x = u @ W + c`` the nested input and ``y = u @ selector`` the raw larger level, the
    appended block ``(y - x @ coef.T - intercept - residual_mean) @ components.T`` is affine in ``u``.
    """
    device = weights.device
    coef_t = torch.as_tensor(step.coef_.T, dtype=torch.float64, device=device)
    components_t = torch.as_tensor(step.components_.T, dtype=torch.float64, device=device)
    bias = torch.as_tensor(step.intercept_ + step.residual_mean_, dtype=torch.float64, device=device)
    block_weights = (selector - weights @ coef_t) @ components_t
    block_offset = (-(offset @ coef_t) - bias) @ components_t
    return torch.cat([weights, block_weights], dim=1), torch.cat([offset, block_offset])


def compose_affine(steps: list[ReverseDistiller], dims: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The nested output of fitted ``steps`` as ``u @ W + c`` of the concatenated raw levels ``u``."""
    total = sum(dims)
    starts = np.cumsum((0,) + tuple(dims))
    weights = level_selector(total, slice(0, dims[0]))
    offset = torch.zeros(dims[0], dtype=torch.float64)
    for index, step in enumerate(steps, start=1):
        selector = level_selector(total, slice(int(starts[index]), int(starts[index + 1])))
        weights, offset = append_step(weights, offset, selector, step)
    return weights.numpy(), offset.numpy()


def _block_correlations(covariance: torch.Tensor, dims: tuple[int, ...]) -> list[float]:
    """Largest |correlation| between each level's block and the prefix before it, from a covariance."""
    scale = torch.sqrt(torch.diagonal(covariance).clamp(min=0)).clamp(min=1e-300)
    correlation = covariance / scale[:, None] / scale[None, :]
    result = []
    for start, end in zip(dims[:-1], dims[1:]):
        block = correlation[:start, start:end]
        result.append(float(block.abs().max()) if block.numel() else 0.0)
    return result


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (np.integer, int)) and not isinstance(value, bool):
        return int(value)
    value = float(value)
    return None if not np.isfinite(value) else value


def _checked_metadata(meta: dict[str, Any]) -> tuple[dict[str, Any], list[str], list[int], list[dict]]:
    """The parameters, level names, dims and step records of ladder metadata, checked for type."""
    known = {"regressor", "alpha", "min_variance_explained", "fit_on"}
    missing = [key for key in ("params", "level_names", "dims", "steps") if key not in meta]
    if missing:
        raise ValueError(f"ladder metadata lacks {', '.join(repr(key) for key in missing)}")
    params, names, dims, steps = (meta[key] for key in ("params", "level_names", "dims", "steps"))
    if not isinstance(params, dict) or set(params) - known:
        raise ValueError(f"ladder metadata 'params' must be an object with keys among {sorted(known)}, got {params!r}")
    if not (isinstance(names, list) and all(isinstance(name, str) for name in names) and len(names) >= 2):
        raise ValueError(f"ladder metadata 'level_names' must list at least 2 names, got {names!r}")
    if not (isinstance(dims, list) and len(dims) == len(names)
            and all(isinstance(dim, int) and not isinstance(dim, bool) for dim in dims)):
        raise ValueError(f"ladder metadata 'dims' must list one integer per level ({len(names)}), got {dims!r}")
    if not (isinstance(steps, list) and len(steps) == len(names) - 1 and all(isinstance(step, dict) for step in steps)):
        raise ValueError(f"ladder metadata 'steps' must list {len(names) - 1} objects, got {steps!r:.80}")
    return params, names, dims, steps


def _from_plain(name: str, value: Any) -> Any:
    """Undo :func:`_plain` for a saved step scalar (None stands for NaN, except a missing threshold)."""
    if value is None and name in ("r2_", "prefix_correlation_max_"):
        return float("nan")
    return value


def check_levels(levels: Mapping[str, Any], allow_single: bool = False) -> None:
    """Check ``levels`` is a mapping of level name to 2-D array, widths increasing (at least 2 levels
    unless ``allow_single``)."""
    if not isinstance(levels, Mapping):
        raise ValueError(f"levels must be a mapping of level name to array, got {type(levels).__name__}")
    minimum = 1 if allow_single else 2
    if len(levels) < minimum:
        raise ValueError(f"need at least {minimum} levels, got {list(levels)}")
    if not allow_single:
        dims = []
        for name, values in levels.items():
            shape = getattr(values, "shape", None)
            if shape is None or len(shape) != 2:
                raise ValueError(f"level {name!r} must be a 2-D array (n_residues, dim), got shape {shape}")
            dims.append(int(shape[1]))
        check_order(tuple(levels), tuple(dims))


def check_order(names: tuple[str, ...], dims: tuple[int, ...]) -> None:
    """Raise unless ``dims`` strictly increase along ``names``."""
    for index in range(1, len(dims)):
        if dims[index] <= dims[index - 1]:
            raise ValueError(
                f"levels must be ordered small to large with strictly increasing dims; got "
                f"{dict(zip(names, dims))} ({names[index]!r} is not wider than {names[index - 1]!r})"
            )
