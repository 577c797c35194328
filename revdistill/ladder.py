"""The reverse-distillation ladder: every step fitted and applied along the same nested path.

Step ``k`` regresses the raw embedding of level ``k`` on the **nested** embedding produced by
steps ``1..k-1`` (not on the raw level ``k-1``), exactly the input it is later applied to. (The
authors' training script fits each step on the raw smaller embedding and applies it to the
nested one; we keep fit and use consistent.)

Each step is affine in the raw embeddings, so the nested embedding at every level is
``u @ W + c`` for the concatenated raw levels ``u``. The ladder tracks ``(W, c)`` while it fits,
which lets one joint :class:`~revdistill.moments.Moments` pass fit the whole chain exactly.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from revdistill._arrays import as_float_tensor, encode_meta, load_npz, read_meta, save_npz
from revdistill.distill import PairStatistics, ReverseDistiller, check_is_fitted
from revdistill.moments import Moments
from revdistill.nested import NestedEmbedding

logger = logging.getLogger(__name__)

FORMAT_NAME = "revdistill-ladder"
FORMAT_VERSION = 1
_STEP_ARRAYS = ("coef_", "intercept_", "residual_mean_", "components_", "explained_variance_",
                "explained_variance_ratio_")
_STEP_SCALARS = ("n_components_", "n_regression_components_", "johnstone_threshold_", "r2_",
                 "prefix_correlation_max_", "n_features_in_", "n_features_large_", "n_samples_seen_")


class DistillationLadder:
    """A chain of :class:`ReverseDistiller` steps over model levels ordered small to large.

    Parameters
    ----------
    regressor : {"pcr", "ridge", "ols"}, default="pcr"
    alpha : float, default=1.0
        Ridge penalty (``regressor="ridge"`` only).
    min_variance_explained : float, default=0.95
        PCR fallback when no component passes the Johnstone threshold.

    Attributes
    ----------
    level_names_ : tuple of str
    dims_ : tuple of int
        Embedding dimension of each level; the nested embedding at level ``k`` has ``dims_[k]`` columns.
    steps_ : list of ReverseDistiller
        ``steps_[k - 1]`` maps the nested level ``k - 1`` and raw level ``k`` to nested level ``k``.
    """

    def __init__(self, regressor: str = "pcr", alpha: float = 1.0,
                 min_variance_explained: float = 0.95) -> None:
        self.regressor = regressor
        self.alpha = alpha
        self.min_variance_explained = min_variance_explained

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
        _check_levels(levels)
        first = as_float_tensor(next(iter(levels.values())), "levels")
        moments = Moments.from_arrays(levels, device=first.device)
        return self.fit_moments(moments)

    def fit_moments(self, moments: Moments) -> "DistillationLadder":
        """Fit the whole chain from one joint :class:`Moments` over all levels."""
        if len(moments.names) < 2:
            raise ValueError(f"a ladder needs at least 2 levels, the moments hold {list(moments.names)}")
        _check_order(moments.names, moments.dims)
        if moments.count < 2:
            raise ValueError(f"need at least 2 residues to fit, the moments hold {moments.count}")
        self._new_step()._validate_params(1, 2, 3)  # checks regressor/alpha before any work
        cov = moments.covariance(ddof=1)
        mean = moments.mean
        # nested level 0 is raw level 0: W selects its columns, c = 0
        weights = level_selector(moments.n_features, moments.slice_of(moments.names[0]), mean.device)
        offset = torch.zeros(moments.dims[0], dtype=torch.float64, device=mean.device)
        steps = []
        for name in moments.names[1:]:
            large = moments.slice_of(name)
            cov_w = cov @ weights
            stats = PairStatistics(
                count=moments.count,
                mean_small=mean @ weights + offset,
                mean_large=mean[large],
                cov_small=weights.T @ cov_w,
                cov_cross=cov_w[large, :].T,
                cov_large=cov[large, large],
            )
            step = self._new_step()
            try:
                step._fit_statistics(stats)
            except ValueError as error:
                raise ValueError(f"step to level {name!r}: {error}") from error
            steps.append(step)
            weights, offset = append_step(weights, offset, level_selector(moments.n_features, large, mean.device),
                                          step)
        self.level_names_ = tuple(moments.names)
        self.dims_ = tuple(moments.dims)
        self.steps_ = steps
        self.affine_weights_ = weights.cpu().numpy()
        self.affine_offset_ = offset.cpu().numpy()
        return self

    # ------------------------------------------------------------------ transforming
    def transform(self, levels: Mapping[str, Any]) -> NestedEmbedding:
        """Nested embedding of the given levels.

        ``levels`` must hold the first ``j`` levels of the ladder (``j >= 1``); the result then has
        ``dims_[j - 1]`` columns, and its prefix of ``dims_[i]`` columns is the nested embedding at
        level ``i``. Rows can be residues or mean-pooled sequences (the map is affine).
        """
        check_is_fitted(self, "steps_")
        _check_levels(levels, allow_single=True)
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
                "r2": step.r2_,
                "n_regression_components": step.n_regression_components_,
                "n_residual_components": step.n_components_,
                "residual_explained_variance_ratio": float(np.sum(step.explained_variance_ratio_)),
                "max_abs_corr_prefix": step.prefix_correlation_max_,
            })
        return rows

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted ladder as plain arrays plus JSON metadata (``.npz``, no pickle)."""
        check_is_fitted(self, "steps_")
        steps_meta = []
        arrays: dict[str, np.ndarray] = {}
        for index, step in enumerate(self.steps_):
            steps_meta.append({name: _plain(getattr(step, name)) for name in _STEP_SCALARS})
            for name in _STEP_ARRAYS:
                arrays[f"step{index}__{name}"] = np.asarray(getattr(step, name), dtype=np.float64)
        meta = {
            "format": FORMAT_NAME, "version": FORMAT_VERSION,
            "params": {"regressor": self.regressor, "alpha": float(self.alpha),
                       "min_variance_explained": float(self.min_variance_explained)},
            "level_names": list(self.level_names_), "dims": list(self.dims_), "steps": steps_meta,
        }
        arrays["meta"] = encode_meta(meta)
        arrays["affine_weights"] = self.affine_weights_
        arrays["affine_offset"] = self.affine_offset_
        return save_npz(path, arrays)

    @classmethod
    def load(cls, path: str | Path) -> "DistillationLadder":
        """Read a ladder written by :meth:`save`, checking format, version and every shape."""
        state = load_npz(path)
        meta = read_meta(state, FORMAT_NAME, FORMAT_VERSION)
        ladder = cls(**meta["params"])
        names, dims = tuple(meta["level_names"]), tuple(int(d) for d in meta["dims"])
        if len(meta["steps"]) != len(names) - 1:
            raise ValueError(f"{path}: {len(names)} levels but {len(meta['steps'])} steps")
        steps = []
        for index, step_meta in enumerate(meta["steps"]):
            step = ladder._new_step()
            for name, value in step_meta.items():
                setattr(step, name, value)
            d_small, d_large = dims[index], dims[index + 1]
            expected = {"coef_": (d_large, d_small), "intercept_": (d_large,), "residual_mean_": (d_large,),
                        "components_": (d_large - d_small, d_large),
                        "explained_variance_": (d_large - d_small,),
                        "explained_variance_ratio_": (d_large - d_small,)}
            for name in _STEP_ARRAYS:
                key = f"step{index}__{name}"
                if key not in state:
                    raise ValueError(f"{path}: missing array {key!r}")
                if state[key].shape != expected[name]:
                    raise ValueError(
                        f"{path}: array {key!r} has shape {state[key].shape}, expected {expected[name]} "
                        f"for {names[index]} ({d_small}) -> {names[index + 1]} ({d_large})"
                    )
                setattr(step, name, state[key])
            steps.append(step)
        total = sum(dims)
        if state.get("affine_weights") is None or state["affine_weights"].shape != (total, dims[-1]):
            raise ValueError(f"{path}: affine map missing or of the wrong shape (expected ({total}, {dims[-1]}))")
        ladder.level_names_, ladder.dims_, ladder.steps_ = names, dims, steps
        ladder.affine_weights_ = state["affine_weights"]
        ladder.affine_offset_ = state["affine_offset"]
        return ladder

    def __repr__(self) -> str:
        fitted = f", levels={list(self.level_names_)}" if hasattr(self, "steps_") else ""
        return f"DistillationLadder(regressor={self.regressor!r}, alpha={self.alpha}{fitted})"


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


def _plain(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, (np.integer, int)):
        return int(value)
    return float(value)


def _check_levels(levels: Mapping[str, Any], allow_single: bool = False) -> None:
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
        _check_order(tuple(levels), tuple(dims))


def _check_order(names: tuple[str, ...], dims: tuple[int, ...]) -> None:
    for index in range(1, len(dims)):
        if dims[index] <= dims[index - 1]:
            raise ValueError(
                f"levels must be ordered small to large with strictly increasing dims; got "
                f"{dict(zip(names, dims))} ({names[index]!r} is not wider than {names[index - 1]!r})"
            )
