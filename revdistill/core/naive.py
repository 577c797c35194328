"""The paper's naive baseline: concatenate the levels and reduce with PCA, step by step.

Level 0 is the raw smallest embedding; level ``k`` is the top ``d_k`` principal components of
``[naive_{k-1}, raw_k]``. Unlike reverse distillation the result is **not** nested: the naive
level ``k`` does not contain level ``k - 1``. Fitted from the same joint moments as the ladder, under
the same two conventions (``fit_on``): ``"nested"`` fits the PCA of step ``k`` on
``[naive_{k-1}, raw_k]``, the input it is applied to; ``"raw"`` (the released method) fits it on
``[raw_{k-1}, raw_k]`` and applies it to ``[naive_{k-1}, raw_k]``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from revdistill.io.files import encode_meta, load_npz, read_meta, save_npz
from revdistill.core.arrays import as_float_tensor, check_finite
from revdistill.core.base import check_is_fitted
from revdistill.core.ladder import check_fit_on, check_levels, check_order, level_selector
from revdistill.core.linalg import symmetric_eigh_descending
from revdistill.core.moments import Moments

__all__ = ["NaiveConcatPCA"]

FORMAT_NAME = "revdistill-naive"
FORMAT_VERSION = 1


class NaiveConcatPCA:
    """Concatenate-then-PCA baseline over a ladder of levels (scikit-learn estimator contract).

    Parameters
    ----------
    fit_on : {"nested", "raw"}, default="nested"
        What each step's PCA is fitted on (see the module docstring).

    Attributes
    ----------
    level_names_, dims_ : tuple
    means_ : list of ndarray
        ``means_[k - 1]`` is the mean the PCA of step ``k`` centres with, shape (d_{k-1} + d_k,).
    components_ : list of ndarray
        ``components_[k - 1]`` has shape (d_k, d_{k-1} + d_k), rows orthonormal, signs fixed.
    explained_variance_ratio_ : list of ndarray
    provenance_ : dict
        What the baseline was fitted on, as given to :meth:`fit_moments`.
    """

    def __init__(self, fit_on: str = "nested") -> None:
        self.fit_on = fit_on

    def fit(self, levels: Mapping[str, Any]) -> "NaiveConcatPCA":
        """Fit on per-residue arrays, one per level, small to large."""
        check_levels(levels)
        return self.fit_moments(Moments.from_arrays(levels))

    def fit_moments(self, moments: Moments, provenance: Mapping[str, Any] | None = None) -> "NaiveConcatPCA":
        """Fit every level from one joint :class:`Moments`."""
        check_fit_on(self.fit_on)
        if len(moments.names) < 2:
            raise ValueError(f"need at least 2 levels, the moments hold {list(moments.names)}")
        check_order(moments.names, moments.dims)
        if moments.count <= max(moments.dims):
            raise ValueError(f"fewer residues ({moments.count}) than features ({max(moments.dims)})")
        cov, mean = moments.covariance(ddof=1), moments.mean
        device, total = mean.device, moments.n_features
        # (weights, offset): the naive level k-1 as an affine map of the raw levels
        weights = level_selector(total, moments.slice_of(moments.names[0]), device)
        offset = torch.zeros(moments.dims[0], dtype=torch.float64, device=device)
        means, components, ratios = [], [], []
        for small_name, name, dim in zip(moments.names[:-1], moments.names[1:], moments.dims[1:]):
            raw_large = level_selector(total, moments.slice_of(name), device)
            applied = torch.cat([weights, raw_large], dim=1)            # [naive k-1, raw k]
            applied_offset = torch.cat([offset, torch.zeros(dim, dtype=torch.float64, device=device)])
            if self.fit_on == "raw":                                    # [raw k-1, raw k]
                fitted = torch.cat([level_selector(total, moments.slice_of(small_name), device), raw_large], dim=1)
                fitted_offset = torch.zeros(fitted.shape[1], dtype=torch.float64, device=device)
            else:
                fitted, fitted_offset = applied, applied_offset
            fitted_mean = mean @ fitted + fitted_offset
            values, vectors = symmetric_eigh_descending(fitted.T @ cov @ fitted)
            top = vectors[:, :dim]
            means.append(fitted_mean.cpu().numpy())
            components.append(top.T.cpu().numpy())
            ratios.append((values[:dim] / values.clamp(min=0).sum()).cpu().numpy())
            weights = applied @ top
            offset = (applied_offset - fitted_mean) @ top
        return self._set_fitted(moments.names, moments.dims, means, components, ratios, provenance)

    def _set_fitted(self, names, dims, means, components, ratios, provenance) -> "NaiveConcatPCA":
        """The one place learned state is set (by fitting or loading), checked for shape and finiteness."""
        names, dims = tuple(str(name) for name in names), tuple(int(dim) for dim in dims)
        check_order(names, dims)
        if not len(means) == len(components) == len(ratios) == len(names) - 1:
            raise ValueError(f"{len(names)} levels need {len(names) - 1} steps; got {len(components)}")
        for index, (step_mean, step_components) in enumerate(zip(means, components)):
            width = dims[index] + dims[index + 1]
            if np.shape(step_mean) != (width,) or np.shape(step_components) != (dims[index + 1], width):
                raise ValueError(f"step {index}: mean {np.shape(step_mean)} and components "
                                 f"{np.shape(step_components)} do not fit {dims[index]} + {dims[index + 1]} dims")
            if not (np.isfinite(step_mean).all() and np.isfinite(step_components).all()):
                raise ValueError(f"step {index}: the fitted PCA holds NaN or infinity (statistics overflowed)")
        self.level_names_, self.dims_ = names, dims
        self.means_ = [np.asarray(m, dtype=np.float64) for m in means]
        self.components_ = [np.asarray(c, dtype=np.float64) for c in components]
        self.explained_variance_ratio_ = [np.asarray(r, dtype=np.float64) for r in ratios]
        self.provenance_ = dict(provenance or {})
        return self

    def transform(self, levels: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """Naive embedding at every given level: ``{name: array (n, d_name)}``.

        ``levels`` must be a prefix of the fitted levels, in order.
        """
        check_is_fitted(self, "components_")
        names = list(levels)
        if not names or names != list(self.level_names_[: len(names)]):
            raise ValueError(
                f"levels must be a prefix of the fitted levels {list(self.level_names_)}; got {names}"
            )
        current = as_float_tensor(levels[names[0]], names[0]).to(torch.float64).cpu().numpy()
        check_finite(current, names[0])
        result = {names[0]: current}
        for index, name in enumerate(names[1:]):
            raw = as_float_tensor(levels[name], name).to(torch.float64).cpu().numpy()
            if raw.shape != (current.shape[0], self.dims_[index + 1]):
                raise ValueError(f"level {name!r} must have shape ({current.shape[0]}, {self.dims_[index + 1]}), "
                                 f"got {raw.shape}")
            check_finite(raw, name)
            concat = np.concatenate([current, raw], axis=1)
            current = (concat - self.means_[index]) @ self.components_[index].T
            result[name] = current
        return result

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> Path:
        """Write the fitted baseline as plain arrays plus JSON metadata (``.npz``, no pickle)."""
        return save_npz(path, self.to_arrays())

    def to_arrays(self, paired_ladder: str | None = None) -> dict[str, np.ndarray]:
        """What :meth:`save` writes; ``paired_ladder`` (the digest of the ladder written with it) goes in the
        metadata, so that a ladder file and its sidecar can be checked to come from one fit."""
        check_is_fitted(self, "components_")
        arrays: dict[str, np.ndarray] = {}
        for index in range(len(self.components_)):
            arrays[f"step{index}__mean"] = self.means_[index]
            arrays[f"step{index}__components"] = self.components_[index]
            arrays[f"step{index}__explained_variance_ratio"] = self.explained_variance_ratio_[index]
        arrays["meta"] = encode_meta({"format": FORMAT_NAME, "version": FORMAT_VERSION, "fit_on": self.fit_on,
                                      "level_names": list(self.level_names_), "dims": list(self.dims_),
                                      "provenance": self.provenance_,
                                      **({"paired_ladder": paired_ladder} if paired_ladder else {})})
        return arrays

    @classmethod
    def load(cls, path: str | Path) -> "NaiveConcatPCA":
        """Read a baseline written by :meth:`save`, checking format, version and every shape."""
        state = load_npz(path)
        meta = read_meta(state, FORMAT_NAME, FORMAT_VERSION)
        try:
            names, dims, fit_on = meta["level_names"], meta["dims"], meta["fit_on"]
        except KeyError as error:
            raise ValueError(f"{path}: naive-baseline metadata lacks {error}; the file is damaged") from None
        keys = [(f"step{i}__mean", f"step{i}__components", f"step{i}__explained_variance_ratio")
                for i in range(len(names) - 1)]
        missing = [key for triple in keys for key in triple if key not in state]
        if missing:
            raise ValueError(f"{path}: missing array(s) {missing}")
        try:
            return cls(fit_on=check_fit_on(fit_on))._set_fitted(
                names, dims, [state[m] for m, _, _ in keys], [state[c] for _, c, _ in keys],
                [state[r] for _, _, r in keys], meta.get("provenance"))
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    def __repr__(self) -> str:
        fitted = f", levels={list(self.level_names_)}" if hasattr(self, "components_") else ""
        return f"NaiveConcatPCA(fit_on={self.fit_on!r}{fitted})"
