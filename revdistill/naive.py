"""The paper's naive baseline: concatenate the levels and reduce with PCA, step by step.

Level 0 is the raw smallest embedding; level ``k`` is the top ``d_k`` principal components of
``[naive_{k-1}, raw_k]``. Unlike reverse distillation the result is **not** nested: the naive
level ``k`` does not contain level ``k - 1``. Fitted from the same joint moments as the ladder.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import torch

from revdistill._arrays import as_float_tensor, check_finite
from revdistill._linalg import symmetric_eigh_descending
from revdistill.distill import check_is_fitted
from revdistill.ladder import _check_levels, _check_order, level_selector
from revdistill.moments import Moments


class NaiveConcatPCA:
    """Concatenate-then-PCA baseline over a ladder of levels (scikit-learn estimator contract).

    Attributes
    ----------
    level_names_, dims_ : tuple
    means_ : list of ndarray
        ``means_[k - 1]`` is the mean of ``[naive_{k-1}, raw_k]``, shape (d_{k-1} + d_k,).
    components_ : list of ndarray
        ``components_[k - 1]`` has shape (d_k, d_{k-1} + d_k), rows orthonormal, signs fixed.
    explained_variance_ratio_ : list of ndarray
    """

    def fit(self, levels: Mapping[str, Any]) -> "NaiveConcatPCA":
        """Fit on per-residue arrays, one per level, small to large."""
        _check_levels(levels)
        return self.fit_moments(Moments.from_arrays(levels))

    def fit_moments(self, moments: Moments) -> "NaiveConcatPCA":
        """Fit every level from one joint :class:`Moments`."""
        if len(moments.names) < 2:
            raise ValueError(f"need at least 2 levels, the moments hold {list(moments.names)}")
        _check_order(moments.names, moments.dims)
        if moments.count <= max(moments.dims):
            raise ValueError(f"fewer residues ({moments.count}) than features ({max(moments.dims)})")
        cov, mean = moments.covariance(ddof=1), moments.mean
        device, total = mean.device, moments.n_features
        weights = level_selector(total, moments.slice_of(moments.names[0]), device)
        offset = torch.zeros(moments.dims[0], dtype=torch.float64, device=device)
        self.means_, self.components_, self.explained_variance_ratio_ = [], [], []
        for name, dim in zip(moments.names[1:], moments.dims[1:]):
            concat_weights = torch.cat([weights, level_selector(total, moments.slice_of(name), device)], dim=1)
            concat_offset = torch.cat([offset, torch.zeros(dim, dtype=torch.float64, device=device)])
            concat_mean = mean @ concat_weights + concat_offset
            values, vectors = symmetric_eigh_descending(concat_weights.T @ cov @ concat_weights)
            top = vectors[:, :dim]
            self.means_.append(concat_mean.cpu().numpy())
            self.components_.append(top.T.cpu().numpy())
            self.explained_variance_ratio_.append((values[:dim] / values.clamp(min=0).sum()).cpu().numpy())
            weights = concat_weights @ top
            offset = (concat_offset - concat_mean) @ top
        self.level_names_ = tuple(moments.names)
        self.dims_ = tuple(moments.dims)
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
