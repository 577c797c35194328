"""What "orthogonal" means for a fitted ladder, measured on residues: the block each step appends against its prefix.

A step appends principal components of the residual ``y - f(x)``. How far that block is uncorrelated with the
prefix ``x`` depends on the regressor and the fit convention:

- least squares (``regressor="ols"``) with ``fit_on="nested"``: the block is uncorrelated with the **whole
  prefix** on the fitting residues (the normal equations make the residual orthogonal to every input column);
- PCR (the default): the regression uses only the prefix's leading principal components (Johnstone rule), so
  the block is uncorrelated with **those kept components**, not with the discarded noise components: its
  largest correlation with the prefix columns can be large;
- ``fit_on="raw"`` (the released method): each step is fitted on the raw smaller level and applied to the nested
  one, so beyond the first step neither holds.

:func:`block_correlations` measures both numbers from the joint moments of the raw levels (the ones the ladder
was fitted from, or any others), so each statement can be seen rather than taken on trust.

>>> import numpy as np
>>> from revdistill import DistillationLadder, Moments
>>> rng = np.random.default_rng(0)
>>> latent = rng.normal(size=(2000, 8))
>>> levels = {f"m{d}": latent @ rng.normal(size=(8, d)) + rng.normal(size=(2000, d)) for d in (6, 10, 14)}
>>> moments = Moments.from_arrays(levels)
>>> rows = block_correlations(DistillationLadder(regressor="ols").fit_moments(moments), moments)
>>> max(row["max_abs_corr_prefix"] for row in rows) < 1e-10
True
"""
from __future__ import annotations

from typing import Any

import numpy as np

from revdistill.core.base import check_is_fitted
from revdistill.core.moments import Moments

__all__ = ["block_correlations"]


def _correlation_with(scores_cov: np.ndarray, scores_var: np.ndarray, block_var: np.ndarray) -> float:
    """Largest |corr| from a (p, m) cross-covariance and the two sides' variances (zero-variance columns skipped)."""
    if scores_cov.size == 0:
        return 0.0
    scale = np.sqrt(np.clip(scores_var, 0, None))[:, None] * np.sqrt(np.clip(block_var, 0, None))[None, :]
    valid = scale > 0
    return float(np.max(np.abs(scores_cov[valid] / scale[valid]), initial=0.0))


def block_correlations(ladder: Any, moments: Moments) -> list[dict[str, Any]]:
    """Per step, how uncorrelated the appended block is with its prefix, on the residues of ``moments``.

    Parameters
    ----------
    ladder : DistillationLadder
        Fitted; its levels must be the levels of ``moments``, in the same order.
    moments : Moments
        Joint per-residue moments of the raw levels (e.g. the ones the ladder was fitted from).

    Returns
    -------
    list of dict
        One row per step: ``small``, ``large``, ``regressor``, ``fit_on``, ``n_kept`` (the prefix's principal
        components the regression used: all of them for OLS and ridge, less numerically zero ones),
        ``max_abs_corr_prefix`` (largest |correlation| between a block column and a prefix column; the same number as
        ``ladder.diagnostics()`` on the fitting moments) and ``max_abs_corr_kept`` (largest |correlation|
        between a block column and one of the ``n_kept`` leading principal components of the prefix).

    Raises
    ------
    ValueError
        The moments do not hold the ladder's levels with the ladder's dimensions.
    """
    check_is_fitted(ladder, "steps_")
    names, dims = tuple(ladder.level_names_), tuple(ladder.dims_)
    if tuple(moments.names) != names or tuple(moments.dims) != dims:
        raise ValueError(f"moments hold levels {list(moments.names)} with dims {list(moments.dims)}; the ladder "
                         f"needs {list(names)} with dims {list(dims)}")
    weights = np.asarray(ladder.affine_weights_, dtype=np.float64)  # (sum(dims), dims[-1])
    covariance = weights.T @ moments.covariance(ddof=1).detach().cpu().numpy().astype(np.float64) @ weights
    variance = np.diagonal(covariance)
    rows = []
    for index, step in enumerate(ladder.steps_):
        start, end = dims[index], dims[index + 1]
        prefix_cov, cross = covariance[:start, :start], covariance[:start, start:end]
        values, vectors = np.linalg.eigh(prefix_cov)
        order = np.argsort(values)[::-1]
        # the regression's components, less those numerically zero (the pseudo-inverse's rule drops them too)
        cutoff = max(float(values[order[0]]), 0.0) * start * np.finfo(np.float64).eps
        chosen = [i for i in order[:int(step.n_regression_components_)] if values[i] > cutoff]
        n_kept, kept = len(chosen), vectors[:, chosen]                      # (start, n_kept)
        rows.append({
            "small": names[index], "large": names[index + 1], "regressor": ladder.regressor,
            "fit_on": ladder.fit_on, "n_kept": n_kept,
            "max_abs_corr_prefix": _correlation_with(cross, variance[:start], variance[start:end]),
            "max_abs_corr_kept": _correlation_with(kept.T @ cross, values[chosen], variance[start:end]),
        })
    return rows
