"""Supervised probe on ProteinGym: ridge head, 5-fold CV per scheme, Spearman/MSE, aggregation.

The protocol is ProteinGym's supervised one applied to a linear probe on mean-pooled embeddings:
singles only; for each CV scheme the probe is fitted on 4 folds and predicts the 5th; targets are
standardized with the training folds' mean and standard deviation; the ridge penalty is chosen by an
inner K-fold CV on the training folds only (one SVD per inner split serves every penalty); Spearman is
computed once per assay over the pooled out-of-fold predictions; MSE is on the standardized scale.
"""
from __future__ import annotations

import contextlib
import logging
import math
import warnings
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy import linalg

from revdistill.proteingym import SCHEMES, Assay, resolve_data_dir

logger = logging.getLogger(__name__)

__all__ = [
    "RidgeProbe", "CVResult", "spearman", "cross_validate", "evaluate_assay", "RESULT_COLUMNS", "AGGREGATIONS",
    "proteingym_average", "aggregate", "zero_shot_reference", "ZERO_SHOT_FALLBACK",
]

DEFAULT_ALPHAS: tuple[float, ...] = tuple(float(a) for a in np.logspace(-6, 2, 17))
RESULT_COLUMNS = (
    "assay", "scheme", "representation", "model", "dim", "spearman", "mse", "n_variants",
    "fold_source", "alpha", "uniprot_id", "selection_type",
)
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
        self.y_scale_ = float(y.std())
        if not self.y_scale_ > 0:
            raise ValueError("scores are constant on the training folds; a probe cannot be fitted")
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
        if not hasattr(self, "coef_"):
            raise RuntimeError("this RidgeProbe is not fitted yet; call fit first")
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
    """

    def __init__(self, predictions: np.ndarray, spearman: float, mse: float, alphas: np.ndarray):
        self.predictions, self.spearman, self.mse, self.alphas = predictions, spearman, mse, alphas


def cross_validate(
    features: np.ndarray, scores: np.ndarray, folds: np.ndarray, *, alphas: Sequence[float] = DEFAULT_ALPHAS,
    inner_folds: int = 5, random_state: int = 0, blas_threads: int | None = 1,
) -> CVResult:
    """K-fold CV of :class:`RidgeProbe` with the given fold labels, ``(n_variants,)`` each.

    ``blas_threads`` limits BLAS threads while fitting (see :func:`evaluate_assay`); ``None`` leaves
    them alone.
    """
    with _blas_limit(blas_threads):
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
    if np.ptp(predictions) == 0:
        warnings.warn("out-of-fold predictions are constant; Spearman is undefined (NaN)", RuntimeWarning, stacklevel=2)
        rho = math.nan
    else:
        rho = spearman(predictions, y)
    return CVResult(predictions, rho, float(squared.mean()), np.asarray(chosen))


def evaluate_assay(
    features: Mapping[tuple[str, str, int], np.ndarray], assay: Assay, schemes: Sequence[str] = SCHEMES, *,
    alphas: Sequence[float] = DEFAULT_ALPHAS, inner_folds: int = 5, random_state: int = 0,
    blas_threads: int | None = 1,
) -> pd.DataFrame:
    """Run the probe for every representation and scheme on one assay.

    Parameters
    ----------
    features : mapping
        ``{(representation, model, dim): array (n_variants, dim)}``, rows in the order of
        ``assay.variants``. Entries holding the same array object are fitted once.
    assay : Assay
    schemes : sequence of str
        Subset of :data:`~revdistill.proteingym.SCHEMES`.
    blas_threads : int or None
        BLAS threads while fitting (restored afterwards). The default 1 is fastest for these many small
        decompositions, by 20x on a busy 2-core machine; ``None`` leaves the setting alone.

    Returns
    -------
    DataFrame
        Tidy table with :data:`RESULT_COLUMNS`, one row per (scheme, representation, model, dim).
    """
    unknown = [s for s in schemes if s not in SCHEMES]
    if unknown:
        raise ValueError(f"schemes={unknown} are not CV schemes; choose from {SCHEMES}")
    with _blas_limit(blas_threads):
        return _evaluate(features, assay, schemes, alphas, inner_folds, random_state)


def _blas_limit(threads: int | None):
    """Context manager limiting BLAS threads (a no-op for ``None``)."""
    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


def _evaluate(features, assay, schemes, alphas, inner_folds, random_state) -> pd.DataFrame:
    scores = assay.variants["DMS_score"].to_numpy(dtype=np.float64)
    rows, cache = [], {}
    for scheme in schemes:
        folds = assay.folds(scheme)
        for key, array in features.items():
            representation, model, dim = key
            if np.shape(array)[0] != assay.n_variants:
                raise ValueError(f"features {key} have {np.shape(array)[0]} rows; assay {assay.dms_id} has {assay.n_variants}")
            memo = (scheme, id(array))
            if memo not in cache:
                cache[memo] = _cross_validate(array, scores, folds, alphas, inner_folds, random_state)
            result = cache[memo]
            rows.append({
                "assay": assay.dms_id, "scheme": scheme, "representation": representation, "model": model,
                "dim": int(dim), "spearman": result.spearman, "mse": result.mse, "n_variants": assay.n_variants,
                "fold_source": assay.fold_source[scheme], "alpha": float(np.median(result.alphas)),
                "uniprot_id": assay.uniprot_id, "selection_type": assay.selection_type,
            })
    return pd.DataFrame(rows, columns=list(RESULT_COLUMNS))


