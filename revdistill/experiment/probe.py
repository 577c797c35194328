"""The probe: ridge regression on features, penalty chosen by inner CV, evaluated by outer K-fold CV.

For each outer fold the probe is fitted on the other folds and predicts this one; targets are
standardized with the training folds' mean and standard deviation; the ridge penalty is chosen by an
inner K-fold CV on the training folds only (one eigendecomposition per inner split serves every
penalty); Spearman is computed once over the pooled out-of-fold predictions; MSE is on the
standardized scale. This is the one probe implementation; :mod:`revdistill.experiment.pipeline` runs it.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> features = rng.normal(size=(200, 16))
>>> scores = features[:, 0] + 0.5 * rng.normal(size=200)
>>> result = cross_validate(features, scores, folds=np.arange(200) % 5)
>>> bool(result.spearman > 0.8), result.predictions.shape
(True, (200,))
"""
from __future__ import annotations

import contextlib
import logging
import math
import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import linalg

from revdistill.core.base import check_is_fitted
from revdistill.experiment.protocol import DEFAULT_ALPHAS

logger = logging.getLogger(__name__)

__all__ = ["RidgeProbe", "CVResult", "spearman", "cross_validate", "blas_threads", "DEFAULT_ALPHAS"]


class RidgeProbe:
    """Ridge regression whose penalty is chosen by inner K-fold CV; targets standardized in ``fit``.

    Parameters
    ----------
    alphas : sequence of float
        Relative penalties; the absolute penalty is ``alpha * mean(s**2)`` where ``s`` are the singular
        values of the centred training features, so one grid suits features of any scale.
    inner_folds : int
        Folds of the inner CV that picks the penalty (lowest mean squared error; ties → larger penalty).
    random_state : int
        Seed of the inner split.

    Attributes
    ----------
    alpha_ : float
        Chosen relative penalty.
    coef_ : ndarray, ``(n_features,)``
        Coefficients on the standardized-target scale.
    x_mean_ : ndarray, ``(n_features,)``; y_mean_, y_scale_ : float
    inner_mse_ : ndarray, ``(n_alphas,)``
        Mean inner-CV squared error (standardized scale) of each penalty.
    """

    def __init__(self, alphas: Sequence[float] = DEFAULT_ALPHAS, inner_folds: int = 5, random_state: int = 0):
        self.alphas = alphas
        self.inner_folds = inner_folds
        self.random_state = random_state

    def fit(self, features: np.ndarray, scores: np.ndarray) -> "RidgeProbe":
        """Fit on ``features`` ``(n_variants, n_features)`` and ``scores`` ``(n_variants,)``."""
        x, y = _check_xy(features, scores)
        alphas = np.asarray(self.alphas, dtype=np.float64)
        if alphas.ndim != 1 or alphas.size == 0 or (alphas <= 0).any():
            raise ValueError(f"alphas={self.alphas!r} must be a non-empty sequence of positive numbers")
        if self.inner_folds < 2 or self.inner_folds > len(y):
            raise ValueError(f"inner_folds={self.inner_folds} must be between 2 and n_variants={len(y)}")
        self.y_mean_ = float(y.mean())
        self.y_scale_ = _spread(y)
        if not self.y_scale_ > 0:
            raise ValueError(f"scores are constant on the training folds (all {float(y[0])!r}); a probe cannot be "
                             f"fitted")
        target = (y - self.y_mean_) / self.y_scale_
        self.x_mean_ = x.mean(axis=0)
        spectrum = _Spectrum(x - self.x_mean_, target)
        absolute = alphas * spectrum.scale
        self.inner_mse_ = self._inner_cv(x, target, absolute)
        best = np.flatnonzero(self.inner_mse_ <= self.inner_mse_.min() * (1 + 1e-12))[-1]
        self.alpha_ = float(alphas[best])
        self.coef_ = spectrum.coef(absolute[best])
        return self

    def _inner_cv(self, x: np.ndarray, target: np.ndarray, absolute: np.ndarray) -> np.ndarray:
        rng = np.random.default_rng(self.random_state)
        inner = rng.permutation(len(target)) % self.inner_folds
        errors = np.zeros(len(absolute))
        for k in range(self.inner_folds):
            train, test = inner != k, inner == k
            mean_x, mean_y = x[train].mean(axis=0), target[train].mean()
            spectrum = _Spectrum(x[train] - mean_x, target[train] - mean_y)
            predictions = spectrum.predict(x[test] - mean_x, absolute) + mean_y  # (n_test, n_alphas)
            errors += ((predictions - target[test][:, None]) ** 2).sum(axis=0)
        return errors / len(target)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Predicted scores in the original units, ``(n_variants,)``."""
        check_is_fitted(self, "coef_")
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.coef_.shape[0]:
            raise ValueError(f"features have shape {x.shape}; expected (n, {self.coef_.shape[0]})")
        return ((x - self.x_mean_) @ self.coef_) * self.y_scale_ + self.y_mean_


class _Spectrum:
    """One eigendecomposition of the smaller Gram matrix of centred features, reused for every penalty.

    With ``d <= n`` it decomposes ``X^T X`` (primal), else ``X X^T`` (dual); either way the ridge
    predictions for penalty ``a`` are ``P @ (b / (lam + a))``.
    """

    def __init__(self, centred: np.ndarray, target: np.ndarray):
        self.centred = centred
        n, d = centred.shape
        self.primal = d <= n
        gram = centred.T @ centred if self.primal else centred @ centred.T
        lam, vectors = linalg.eigh(gram, check_finite=False, overwrite_a=True)
        self.lam = np.clip(lam, 0.0, None)
        self.vectors = vectors
        self.b = vectors.T @ (centred.T @ target) if self.primal else vectors.T @ target
        self.scale = float(self.lam.sum() / min(n, d)) if self.lam.sum() > 0 else 1.0

    def _project(self, rows: np.ndarray) -> np.ndarray:
        return rows @ self.vectors if self.primal else (rows @ self.centred.T) @ self.vectors

    def predict(self, rows: np.ndarray, absolute: np.ndarray) -> np.ndarray:
        """Predictions ``(n_rows, n_alphas)`` for centred ``rows`` and absolute penalties."""
        weights = self.b[:, None] / (self.lam[:, None] + absolute[None, :])
        return self._project(rows) @ weights

    def coef(self, absolute: float) -> np.ndarray:
        """Coefficients ``(n_features,)`` for one absolute penalty."""
        weights = self.b / (self.lam + absolute)
        return self.vectors @ weights if self.primal else self.centred.T @ (self.vectors @ weights)


def _check_xy(features, scores) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be 2-D (n_variants, n_features); got shape {x.shape}")
    if y.shape != (x.shape[0],):
        raise ValueError(f"scores have shape {y.shape}; expected ({x.shape[0]},) to match features")
    if not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("features and scores must be finite (found NaN or inf)")
    return x, y


def _spread(values: np.ndarray) -> float:
    """Standard deviation, computed relative to the values' magnitude so that tiny scores (1e-300, whose squares
    underflow to 0) keep their spread; 0 only when every value is exactly the same."""
    if np.ptp(values) == 0:
        return 0.0
    magnitude = float(np.max(np.abs(values)))
    return magnitude * float(np.std(values / magnitude))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two ``(n,)`` arrays (average ranks for ties; NaN if one is constant)."""
    ranks_a = pd.Series(np.asarray(a, dtype=np.float64)).rank().to_numpy()
    ranks_b = pd.Series(np.asarray(b, dtype=np.float64)).rank().to_numpy()
    if np.ptp(ranks_a) == 0 or np.ptp(ranks_b) == 0:
        return math.nan
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


class CVResult:
    """Out-of-fold predictions of one CV scheme and their metrics.

    Attributes
    ----------
    predictions : ndarray, ``(n_variants,)``
        Pooled out-of-fold predictions, original units.
    spearman : float
        Spearman correlation of ``predictions`` with the scores (NaN if predictions are constant).
    mse : float
        Mean squared error on the standardized scale (each fold with its training mean and std).
    alphas : ndarray, ``(n_folds,)``
        Relative penalty chosen in each fold.
    note : str
        Why a metric is undefined ("" when both are defined).
    """

    def __init__(self, predictions: np.ndarray, spearman: float, mse: float, alphas: np.ndarray, note: str = ""):
        self.predictions, self.spearman, self.mse, self.alphas = predictions, spearman, mse, alphas
        self.note = note


def cross_validate(
    features: np.ndarray, scores: np.ndarray, folds: np.ndarray, *, alphas: Sequence[float] = DEFAULT_ALPHAS,
    inner_folds: int = 5, random_state: int = 0, threads: int | None = 1,
) -> CVResult:
    """K-fold CV of :class:`RidgeProbe` with the given fold labels, ``(n_variants,)`` each.

    ``threads`` limits BLAS threads while fitting (:func:`blas_threads`); ``None`` leaves them alone.
    """
    with blas_threads(threads):
        return _cross_validate(features, scores, folds, alphas, inner_folds, random_state)


def _cross_validate(features, scores, folds, alphas, inner_folds, random_state) -> CVResult:
    x, y = _check_xy(features, scores)
    folds = np.asarray(folds)
    if folds.shape != y.shape:
        raise ValueError(f"folds have shape {folds.shape}; expected {y.shape}")
    labels = np.unique(folds)
    if len(labels) < 2:
        raise ValueError(f"folds must hold at least 2 distinct labels; got {labels.tolist()}")
    predictions = np.empty_like(y)
    squared = np.empty_like(y)
    chosen = []
    for label in labels:
        test = folds == label
        probe = RidgeProbe(alphas, min(inner_folds, int((~test).sum())), random_state).fit(x[~test], y[~test])
        predictions[test] = probe.predict(x[test])
        squared[test] = ((predictions[test] - y[test]) / probe.y_scale_) ** 2
        chosen.append(probe.alpha_)
    note = ""
    if np.ptp(predictions) == 0:
        note = "out-of-fold predictions are constant (the features carry no signal the probe could use)"
        warnings.warn(f"{note}; Spearman is undefined (NaN)", RuntimeWarning, stacklevel=2)
        rho = math.nan
    else:
        rho = spearman(predictions, y)
    return CVResult(predictions, rho, float(squared.mean()), np.asarray(chosen), note)


def blas_threads(threads: int | None):
    """Context manager limiting BLAS threads (a no-op for ``None``).

    One thread is fastest for the probe's many small decompositions (by 20x on a busy 2-core machine).
    """
    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    return threadpool_limits(limits=threads, user_api="blas")
