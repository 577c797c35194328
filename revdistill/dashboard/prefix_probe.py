"""The probe of :func:`revdistill.experiment.probe.cross_validate`, for many prefixes of one matrix at once.

The slicer needs probe Spearman at ~30 prefix sizes. Fitting each prefix from scratch costs an SVD of
the training rows per fold and inner fold. But the centred covariance of ``prefix(k)`` is the top-left
``k x k`` block of the full one, so each (outer, inner) training set needs one ``D x D`` covariance and
then one small ``eigh`` per ``k``. The protocol is the same as :class:`revdistill.experiment.probe.RidgeProbe`:
targets standardized on the training folds, relative penalties scaled by the mean squared singular
value, the penalty chosen by inner K-fold mean squared error (ties go to the larger penalty), Spearman
over pooled out-of-fold predictions. ``tests/test_dashboard.py`` checks it against ``cross_validate``.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy.stats import spearmanr

__all__ = ["prefix_probe_spearman"]


def _moments(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Column means, centred covariance ``(D, D)``, centred cross term ``(D,)``, target mean."""
    mean_x = x.mean(axis=0)
    centred = x - mean_x
    mean_y = float(y.mean())
    return mean_x, centred.T @ centred, centred.T @ (y - mean_y), mean_y


def _penalty_scale(covariance: np.ndarray, n_rows: int, k: int) -> float:
    """Mean squared singular value of the centred ``prefix(k)`` (RidgeProbe's penalty unit)."""
    trace = float(np.trace(covariance[:k, :k]))
    return trace / min(n_rows, k) if trace > 0 else 1.0


def _solve_path(covariance: np.ndarray, cross: np.ndarray, k: int, alphas: np.ndarray,
                scale: float) -> np.ndarray:
    """Ridge coefficients of ``prefix(k)`` for every relative penalty, ``(k, n_alphas)``."""
    values, vectors = np.linalg.eigh(covariance[:k, :k])
    values = np.clip(values, 0.0, None)
    projected = vectors.T @ cross[:k]  # (k,)
    shrink = projected[:, None] / (values[:, None] + alphas[None, :] * scale)
    return vectors @ shrink


def prefix_probe_spearman(
    features: np.ndarray,
    scores: np.ndarray,
    folds: np.ndarray,
    ks: Sequence[int],
    *,
    alphas: Sequence[float] | None = None,
    inner_folds: int = 5,
    random_state: int = 0,
) -> np.ndarray:
    """Out-of-fold probe Spearman of ``features[:, :k]`` for every ``k`` in ``ks``.

    Parameters
    ----------
    features : numpy.ndarray, shape (n_variants, n_features)
    scores : numpy.ndarray, shape (n_variants,)
    folds : numpy.ndarray, shape (n_variants,)
        Outer fold label of each row.
    ks : sequence of int
        Prefix sizes, each in ``1..n_features``.
    alphas : sequence of float, optional
        Relative penalties (default: :data:`revdistill.experiment.probe.DEFAULT_ALPHAS`).
    inner_folds : int
        Folds of the inner CV choosing the penalty.
    random_state : int
        Seed of the inner split.

    Returns
    -------
    numpy.ndarray, shape (len(ks),)
        Spearman per prefix (NaN where the predictions are constant).
    """
    from revdistill.experiment.probe import DEFAULT_ALPHAS  # noqa: PLC0415

    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(scores, dtype=np.float64)
    folds = np.asarray(folds)
    if x.ndim != 2 or y.shape != (x.shape[0],) or folds.shape != y.shape:
        raise ValueError(f"features {x.shape}, scores {y.shape} and folds {folds.shape} must share rows")
    ks = [int(k) for k in ks]
    bad = [k for k in ks if not 1 <= k <= x.shape[1]]
    if bad:
        raise ValueError(f"prefix sizes {bad} must be between 1 and {x.shape[1]}")
    grid = np.asarray(DEFAULT_ALPHAS if alphas is None else alphas, dtype=np.float64)
    predictions = np.zeros((len(ks), len(y)))
    for label in np.unique(folds):
        test = folds == label
        train_x, train_y = x[~test], y[~test]
        y_mean, y_scale = float(train_y.mean()), float(train_y.std())
        if not y_scale > 0:
            raise ValueError("scores are constant on the training folds; a probe cannot be fitted")
        target = (train_y - y_mean) / y_scale
        mean_x, covariance, cross, target_mean = _moments(train_x, target)
        scales = [_penalty_scale(covariance, len(target), k) for k in ks]
        chosen = _choose_alphas(train_x, target, ks, grid, scales, min(inner_folds, len(target)), random_state)
        for index, k in enumerate(ks):
            coef = _solve_path(covariance, cross, k, grid[chosen[index]: chosen[index] + 1], scales[index])[:, 0]
            predictions[index, test] = ((x[test, :k] - mean_x[:k]) @ coef + target_mean) * y_scale + y_mean
    result = np.full(len(ks), math.nan)
    for index in range(len(ks)):
        if np.ptp(predictions[index]) > 0:
            result[index] = float(spearmanr(predictions[index], y).statistic)
    return result


def _choose_alphas(x: np.ndarray, target: np.ndarray, ks: list[int], alphas: np.ndarray,
                   scales: list[float], inner_folds: int, random_state: int) -> list[int]:
    """Index of the penalty with the lowest inner-CV squared error, per prefix size."""
    inner = np.random.default_rng(random_state).permutation(len(target)) % inner_folds
    errors = np.zeros((len(ks), len(alphas)))
    for fold in range(inner_folds):
        train, test = inner != fold, inner == fold
        mean_x, covariance, cross, mean_y = _moments(x[train], target[train])
        centred_test = x[test] - mean_x
        for index, k in enumerate(ks):
            coefs = _solve_path(covariance, cross, k, alphas, scales[index])
            predicted = centred_test[:, :k] @ coefs + mean_y
            errors[index] += ((predicted - target[test][:, None]) ** 2).sum(axis=0)
    chosen = []
    for row in errors:
        chosen.append(int(np.flatnonzero(row <= row.min() * (1 + 1e-12))[-1]))
    return chosen
