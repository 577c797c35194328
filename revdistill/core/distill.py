"""One reverse-distillation step: small embedding -> nested large embedding.

Given per-residue embeddings ``small`` (n, d_s) and ``large`` (n, d_l) of the same residues, the
step regresses ``large`` on ``small`` (principal-component regression with the Johnstone threshold,
ridge, or ordinary least squares), takes the residual ``large - f(small)``, keeps its top
``d_l - d_s`` principal components ``P`` and outputs ``[small, (residual - mean) @ P.T]``.
The first ``d_s`` columns of the output are ``small`` itself, bit for bit.

Everything is fitted from sufficient statistics (means and covariances in float64), so the same
code fits from in-memory arrays, from a streamed :class:`~revdistill.core.moments.Moments`, or from a
whole ladder's joint moments.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from revdistill.core.arrays import as_float_tensor, check_finite
from revdistill.core.base import NotFittedError, check_is_fitted  # noqa: F401 - re-exported
from revdistill.core.linalg import johnstone_rank, pseudo_inverse_psd, symmetric_eigh_descending
from revdistill.core.moments import Moments

logger = logging.getLogger(__name__)

REGRESSORS = ("pcr", "ridge", "ols")
#: Learned arrays of a fitted step (saved in ladder files).
LEARNED_ARRAYS = ("coef_", "intercept_", "residual_mean_", "components_", "explained_variance_",
                  "explained_variance_ratio_")
#: Learned scalars of a fitted step; the last three follow from the arrays' shapes.
LEARNED_SCALARS = ("n_regression_components_", "johnstone_threshold_", "r2_", "prefix_correlation_max_",
                   "n_samples_seen_", "n_components_", "n_features_in_", "n_features_large_")
_DERIVED = {"n_components_", "n_features_in_", "n_features_large_"}


@dataclass(frozen=True)
class PairStatistics:
    """Means and covariances (ddof=1, float64) of a (small, large) pair of embeddings."""

    count: int
    mean_small: torch.Tensor
    mean_large: torch.Tensor
    cov_small: torch.Tensor
    cov_cross: torch.Tensor
    cov_large: torch.Tensor

    @classmethod
    def from_moments(cls, moments: Moments, small: str, large: str) -> "PairStatistics":
        small_cols, large_cols = moments.slice_of(small), moments.slice_of(large)
        if moments.count < 2:
            raise ValueError(f"need at least 2 residues to fit, the moments hold {moments.count}")
        cov = moments.covariance(ddof=1)
        return cls(
            count=moments.count,
            mean_small=moments.mean[small_cols],
            mean_large=moments.mean[large_cols],
            cov_small=cov[small_cols, small_cols],
            cov_cross=cov[small_cols, large_cols],
            cov_large=cov[large_cols, large_cols],
        )


class ReverseDistiller:
    """One step of reverse distillation (scikit-learn estimator contract).

    Parameters
    ----------
    regressor : {"pcr", "ridge", "ols"}, default="pcr"
        How ``large`` is predicted from ``small``: principal-component regression keeping the
        components above the Johnstone threshold, ridge regression with penalty ``alpha`` (on the
        centred sums of squares, as :class:`sklearn.linear_model.Ridge`), or least squares.
    alpha : float, default=1.0
        Ridge penalty; used only when ``regressor="ridge"``.
    n_components : int or None, default=None
        Residual principal components appended; ``None`` means ``d_l - d_s``.
    min_variance_explained : float, default=0.95
        PCR fallback when no input component passes the threshold.

    Attributes
    ----------
    coef_ : ndarray of shape (d_l, d_s)
        ``f(small) = small @ coef_.T + intercept_``.
    intercept_ : ndarray of shape (d_l,)
    residual_mean_ : ndarray of shape (d_l,)
        Mean of the residual on the fitting data (zero up to rounding).
    components_ : ndarray of shape (n_components_, d_l)
        Residual principal axes, rows orthonormal, descending variance, signs fixed.
    explained_variance_, explained_variance_ratio_ : ndarray of shape (n_components_,)
        Residual variance along each axis and its share of the total residual variance.
    n_components_ : int
    n_regression_components_ : int
        Input principal components used by PCR (``d_s`` for ridge and OLS).
    r2_ : float
        Training R^2 of the regression, averaged uniformly over the ``d_l`` outputs.
    prefix_correlation_max_ : float
        Largest absolute correlation, on the fitting data, between a prefix column and an
        appended column. Zero for OLS; for PCR the residual is uncorrelated with the retained
        input components but not with the discarded noise components.
    """

    def __init__(self, regressor: str = "pcr", alpha: float = 1.0, n_components: int | None = None,
                 min_variance_explained: float = 0.95) -> None:
        self.regressor = regressor
        self.alpha = alpha
        self.n_components = n_components
        self.min_variance_explained = min_variance_explained

    # ------------------------------------------------------------------ fitting
    def fit(self, small: Any, large: Any) -> "ReverseDistiller":
        """Fit on per-residue arrays ``small`` (n, d_s) and ``large`` (n, d_l), numpy or torch."""
        small_t = as_float_tensor(small, "small")
        large_t = as_float_tensor(large, "large")
        _check_pair(small_t, large_t)
        moments = Moments(("small", "large"), (small_t.shape[1], large_t.shape[1]), device=small_t.device)
        moments.update({"small": small_t, "large": large_t.to(small_t.device)})
        return self.fit_moments(moments, small="small", large="large")

    def fit_moments(self, moments: Moments, small: str, large: str) -> "ReverseDistiller":
        """Fit from streamed moments holding levels ``small`` and ``large``."""
        return self._fit_statistics(PairStatistics.from_moments(moments, small, large))

    def _validate_params(self, d_small: int, d_large: int, count: int) -> int:
        if self.regressor not in REGRESSORS:
            raise ValueError(f"regressor={self.regressor!r} is not supported; choose one of {REGRESSORS}")
        if self.regressor == "ridge" and not (np.isfinite(self.alpha) and self.alpha >= 0):
            raise ValueError(f"alpha={self.alpha} must be a finite number >= 0")
        if not 0 < self.min_variance_explained <= 1:
            raise ValueError(f"min_variance_explained={self.min_variance_explained} must be in (0, 1]")
        if self.n_components is None:
            if d_large <= d_small:
                raise ValueError(
                    f"large must be wider than small to append residual components: "
                    f"got d_small={d_small}, d_large={d_large}"
                )
            n_components = d_large - d_small
        else:
            n_components = int(self.n_components)
            if not 1 <= n_components <= d_large:
                raise ValueError(f"n_components={self.n_components} must be between 1 and {d_large}")
        if count <= max(d_small, d_large):
            raise ValueError(
                f"fewer residues ({count}) than features (d_small={d_small}, d_large={d_large}); "
                f"need more than {max(d_small, d_large)} rows to fit"
            )
        return n_components

    def _fit_statistics(self, stats: PairStatistics) -> "ReverseDistiller":
        d_small, d_large = stats.cov_small.shape[0], stats.cov_large.shape[0]
        n_components = self._validate_params(d_small, d_large, stats.count)
        coef_t, details = _regression_coefficients(self, stats)          # (d_s, d_l)
        cov_small_coef = stats.cov_small @ coef_t
        residual_cov = (stats.cov_large - stats.cov_cross.T @ coef_t - coef_t.T @ stats.cov_cross
                        + coef_t.T @ cov_small_coef)
        values, vectors = symmetric_eigh_descending(residual_cov)
        values = values.clamp(min=0)
        components = vectors[:, :n_components].T                          # (m, d_l)
        intercept = stats.mean_large - stats.mean_small @ coef_t
        residual_mean = stats.mean_large - (stats.mean_small @ coef_t + intercept)
        total_residual = float(values.sum())
        large_var = torch.diagonal(stats.cov_large)
        residual_var = torch.diagonal(residual_cov).clamp(min=0)
        r2 = 1.0 - residual_var / large_var
        r2 = torch.where(large_var > 0, r2, torch.ones_like(r2))
        # correlation between prefix columns and appended columns on the fitting data
        cross = (stats.cov_cross - cov_small_coef) @ components.T          # (d_s, m)
        scale = torch.sqrt(torch.diagonal(stats.cov_small)).clamp(min=1e-300)[:, None] * \
            torch.sqrt(values[:n_components]).clamp(min=1e-300)[None, :]
        to_numpy = lambda tensor: tensor.detach().cpu().numpy().astype(np.float64)  # noqa: E731
        self._set_learned({
            "coef_": to_numpy(coef_t.T),
            "intercept_": to_numpy(intercept),
            "residual_mean_": to_numpy(residual_mean),
            "components_": to_numpy(components),
            "explained_variance_": to_numpy(values[:n_components]),
            "explained_variance_ratio_": to_numpy(values[:n_components] / total_residual)
            if total_residual > 0 else np.zeros(n_components),
            "n_regression_components_": details["rank"],
            "johnstone_threshold_": details.get("threshold"),
            "r2_": float(r2.mean()),
            "prefix_correlation_max_": float((cross.abs() / scale).max()) if cross.numel() else 0.0,
            "n_samples_seen_": int(stats.count),
        })
        logger.info("fitted %s step %d -> %d: R2=%.4f, %d regression components, %d residual components",
                    self.regressor, d_small, d_large, self.r2_, self.n_regression_components_, n_components)
        return self

    def _set_learned(self, learned: dict[str, Any]) -> "ReverseDistiller":
        """The one place learned state is set (by fitting, loading or importing), checked for shape.

        ``learned`` holds every name of :data:`LEARNED_ARRAYS` and :data:`LEARNED_SCALARS` except the
        ones derived from the arrays (``n_components_``, ``n_features_in_``, ``n_features_large_``).
        """
        expected = set(LEARNED_ARRAYS) | set(LEARNED_SCALARS) - _DERIVED
        missing, extra = expected - set(learned), set(learned) - expected
        if missing or extra:
            raise ValueError(f"learned state needs exactly {sorted(expected)}; missing {sorted(missing)}, "
                             f"unexpected {sorted(extra)}")
        arrays = {name: np.asarray(learned[name], dtype=np.float64) for name in LEARNED_ARRAYS}
        d_large, d_small = np.atleast_2d(arrays["coef_"]).shape
        n_components = arrays["components_"].shape[0] if arrays["components_"].ndim == 2 else -1
        shapes = {"coef_": (d_large, d_small), "intercept_": (d_large,), "residual_mean_": (d_large,),
                  "components_": (n_components, d_large), "explained_variance_": (n_components,),
                  "explained_variance_ratio_": (n_components,)}
        for name, shape in shapes.items():
            if arrays[name].shape != shape:
                raise ValueError(f"{name} has shape {arrays[name].shape}; expected {shape} for a "
                                 f"{d_small} -> {d_large} step with {n_components} residual components")
        for name in ("coef_", "intercept_", "residual_mean_", "components_"):
            if not np.isfinite(arrays[name]).all():
                raise ValueError(f"{name} holds NaN or infinity; the statistics it was fitted from overflowed "
                                 f"or were not finite (rescale the inputs)")
        for name, value in arrays.items():
            setattr(self, name, value)
        for name in set(LEARNED_SCALARS) - _DERIVED:
            setattr(self, name, learned[name])
        self.n_components_ = n_components
        self.n_features_in_ = d_small
        self.n_features_large_ = d_large
        return self

    # ------------------------------------------------------------------ transforming
    def transform(self, small: Any, large: Any, chunk_size: int = 65536) -> Any:
        """Nested embedding ``[small, (large - f(small) - residual_mean_) @ components_.T]``.

        Parameters
        ----------
        small : array of shape (n, d_s)
        large : array of shape (n, d_l)
            numpy arrays give a numpy array, computed in float64 then cast to the inputs' dtype;
            torch tensors give a tensor on their device, computed in their dtype.

        Returns
        -------
        array of shape (n, d_s + n_components_)
            Its first ``d_s`` columns equal ``small`` exactly.
        """
        check_is_fitted(self, "components_")
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size={chunk_size} must be a positive integer")
        is_torch = isinstance(small, torch.Tensor) or isinstance(large, torch.Tensor)
        small_t = as_float_tensor(small, "small")
        large_t = as_float_tensor(large, "large").to(small_t.device)
        _check_pair(small_t, large_t)
        if small_t.shape[1] != self.n_features_in_ or large_t.shape[1] != self.n_features_large_:
            raise ValueError(
                f"this step was fitted on d_small={self.n_features_in_}, d_large={self.n_features_large_}; "
                f"got d_small={small_t.shape[1]}, d_large={large_t.shape[1]}"
            )
        out_dtype = torch.promote_types(small_t.dtype, large_t.dtype)
        work_dtype = torch.float64 if not is_torch else out_dtype
        device = small_t.device
        params = {name: torch.as_tensor(getattr(self, name), dtype=work_dtype, device=device)
                  for name in ("coef_", "intercept_", "residual_mean_", "components_")}
        n_rows, d_small = small_t.shape
        out = torch.empty(n_rows, d_small + self.n_components_, dtype=out_dtype, device=device)
        out[:, :d_small] = small_t
        for start in range(0, n_rows, int(chunk_size)):
            rows = slice(start, start + int(chunk_size))
            small_c, large_c = small_t[rows].to(work_dtype), large_t[rows].to(work_dtype)
            residual = large_c - (small_c @ params["coef_"].T + params["intercept_"]) - params["residual_mean_"]
            out[rows, d_small:] = (residual @ params["components_"].T).to(out_dtype)
        return out if is_torch else out.numpy()

    def fit_transform(self, small: Any, large: Any) -> Any:
        """Fit, then transform the same data."""
        return self.fit(small, large).transform(small, large)

    def predict(self, small: Any) -> Any:
        """The regression's prediction ``f(small)`` of the large embedding, shape (n, d_l)."""
        check_is_fitted(self, "coef_")
        is_torch = isinstance(small, torch.Tensor)
        small_t = as_float_tensor(small, "small")
        dtype = small_t.dtype if is_torch else torch.float64
        coef = torch.as_tensor(self.coef_, dtype=dtype, device=small_t.device)
        intercept = torch.as_tensor(self.intercept_, dtype=dtype, device=small_t.device)
        result = small_t.to(dtype) @ coef.T + intercept
        return result if is_torch else result.numpy()

    def __repr__(self) -> str:
        return (f"ReverseDistiller(regressor={self.regressor!r}, alpha={self.alpha}, "
                f"n_components={self.n_components})")


def _check_pair(small: torch.Tensor, large: torch.Tensor) -> None:
    if small.ndim != 2 or large.ndim != 2:
        raise ValueError(
            f"small and large must be 2-D (n_residues, dim), got shapes {tuple(small.shape)} and "
            f"{tuple(large.shape)}"
        )
    if small.shape[0] != large.shape[0]:
        raise ValueError(
            f"small and large must have the same number of rows (residues): got {small.shape[0]} and "
            f"{large.shape[0]}"
        )
    check_finite(small, "small")
    check_finite(large, "large")


def _regression_coefficients(step: ReverseDistiller, stats: PairStatistics) -> tuple[torch.Tensor, dict]:
    """Coefficients ``B`` (d_s, d_l) of ``large - mean = (small - mean) @ B`` for the chosen regressor."""
    d_small = stats.cov_small.shape[0]
    if step.regressor == "pcr":
        values, vectors = symmetric_eigh_descending(stats.cov_small)
        rank, threshold, _ = johnstone_rank(values, stats.count, step.min_variance_explained)
        kept_values = values[:rank].clamp(min=torch.finfo(values.dtype).tiny)
        kept = vectors[:, :rank]
        coef = (kept / kept_values) @ (kept.T @ stats.cov_cross)
        return coef, {"rank": rank, "threshold": threshold}
    elif step.regressor == "ridge":
        # Ridge on centred sums of squares, as sklearn.linear_model.Ridge(alpha) with an intercept.
        scatter_small = stats.cov_small * (stats.count - 1)
        scatter_cross = stats.cov_cross * (stats.count - 1)
        eye = torch.eye(d_small, dtype=scatter_small.dtype, device=scatter_small.device)
        coef = torch.linalg.solve(scatter_small + float(step.alpha) * eye, scatter_cross)
        return coef, {"rank": d_small}
    elif step.regressor == "ols":
        return pseudo_inverse_psd(stats.cov_small) @ stats.cov_cross, {"rank": d_small}
    else:
        raise ValueError(f"regressor={step.regressor!r} is not supported; choose one of {REGRESSORS}")
