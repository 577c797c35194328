"""Import the reverse-distillation authors' published scaler files.

The authors publish one ``.npz`` per step, named ``rd-scaler-<in>-<out>-<regressor>-<pca>-<n>.npz``
(e.g. ``rd-scaler-8M-35M-pcr-fbpca-1000000.npz``), with keys ``regressor__coef_``,
``regressor__intercept_`` and, for PCR, ``regressor__input_mean_``, ``regressor__output_mean_``,
``regressor__input_components_`` and ``regressor__n_significant_pcs_``; the residual PCA is
``pca__mean_`` and ``pca__components_``. Their prediction is

* PCR: ``((x - input_mean_) @ input_components_[:, :k]) @ coef_.T + intercept_ + output_mean_``
* linear / ridge: ``x @ coef_.T + intercept_``

and the appended block ``(y - f(x) - pca__mean_) @ pca__components_.T``. We convert each file into
a fitted :class:`~revdistill.distill.ReverseDistiller`, reading with ``allow_pickle=False``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from revdistill._arrays import load_npz
from revdistill.distill import ReverseDistiller
from revdistill.ladder import DistillationLadder, compose_affine

FILENAME = re.compile(
    r"^rd-scaler-(?P<small>[^-]+)-(?P<large>[^-]+)-(?P<regressor>[^-]+)-(?P<pca>[^-]+)-(?P<n>[^-]+)\.npz$"
)
_REGRESSOR_NAMES = {"pcr": "pcr", "linear": "ols", "ridge": "ridge"}


def load_reference_scaler(path: str | Path) -> ReverseDistiller:
    """Read one authors' scaler file into a fitted :class:`ReverseDistiller`."""
    path = Path(path)
    match = FILENAME.match(path.name)
    if match is None:
        raise ValueError(
            f"{path.name!r} is not named like the authors' scaler files "
            f"('rd-scaler-<in>-<out>-<regressor>-<pca>-<n>.npz')"
        )
    if match["regressor"] not in _REGRESSOR_NAMES:
        raise ValueError(f"{path.name}: unknown regressor {match['regressor']!r}; "
                         f"expected one of {sorted(_REGRESSOR_NAMES)}")
    state = load_npz(path)
    needed = ["regressor__coef_", "regressor__intercept_", "pca__mean_", "pca__components_"]
    if match["regressor"] == "pcr":
        needed += ["regressor__input_mean_", "regressor__output_mean_", "regressor__input_components_",
                   "regressor__n_significant_pcs_"]
    missing = [key for key in needed if key not in state]
    if missing:
        raise ValueError(f"{path.name} lacks the keys {missing} (has {sorted(state)})")
    coef = np.atleast_2d(np.asarray(state["regressor__coef_"], dtype=np.float64))
    intercept = np.asarray(state["regressor__intercept_"], dtype=np.float64)
    if match["regressor"] == "pcr":
        n_pcs = int(np.asarray(state["regressor__n_significant_pcs_"]))
        axes = np.asarray(state["regressor__input_components_"], dtype=np.float64)[:, :n_pcs]
        input_mean = np.asarray(state["regressor__input_mean_"], dtype=np.float64)
        output_mean = np.asarray(state["regressor__output_mean_"], dtype=np.float64)
        if coef.shape[1] != n_pcs or axes.shape[1] != n_pcs:
            raise ValueError(f"{path.name}: coef_ has shape {coef.shape} and input_components_ "
                             f"{axes.shape}, inconsistent with n_significant_pcs_={n_pcs}")
        full_coef = coef @ axes.T                                 # (d_large, d_small)
        full_intercept = intercept + output_mean - input_mean @ full_coef.T
    else:
        n_pcs = coef.shape[1]
        full_coef, full_intercept = coef, intercept
    components = np.atleast_2d(np.asarray(state["pca__components_"], dtype=np.float64))
    residual_mean = np.asarray(state["pca__mean_"], dtype=np.float64)
    d_large, d_small = full_coef.shape
    if components.shape[1] != d_large or residual_mean.shape != (d_large,) or full_intercept.shape != (d_large,):
        raise ValueError(f"{path.name}: pca__components_ {components.shape}, pca__mean_ {residual_mean.shape} "
                         f"and intercept {full_intercept.shape} do not fit a {d_small} -> {d_large} step")
    step = ReverseDistiller(regressor=_REGRESSOR_NAMES[match["regressor"]], n_components=components.shape[0])
    step.coef_ = full_coef
    step.intercept_ = full_intercept
    step.residual_mean_ = residual_mean
    step.components_ = components
    variance = np.asarray(state.get("pca__explained_variance_", np.full(components.shape[0], np.nan)),
                          dtype=np.float64)
    step.explained_variance_ = variance
    step.explained_variance_ratio_ = np.asarray(
        state.get("pca__explained_variance_ratio_", np.full(components.shape[0], np.nan)), dtype=np.float64)
    step.n_components_ = components.shape[0]
    step.n_regression_components_ = n_pcs
    step.johnstone_threshold_ = float(state["regressor__johnstone_threshold_"]) \
        if "regressor__johnstone_threshold_" in state else None
    step.r2_ = float("nan")
    step.prefix_correlation_max_ = float("nan")
    step.n_features_in_ = d_small
    step.n_features_large_ = d_large
    step.n_samples_seen_ = 0
    return step


def load_reference_ladder(folder: str | Path, sizes: Sequence[str] = ("8M", "35M", "150M"),
                          regressor: str = "pcr", pca: str | None = None) -> DistillationLadder:
    """Assemble a :class:`DistillationLadder` from the authors' files for consecutive ``sizes``.

    Parameters
    ----------
    folder : path
        Local folder holding ``rd-scaler-<in>-<out>-<regressor>-<pca>-<n>.npz`` files.
    sizes : sequence of str
        ESM-2 size tags small to large, e.g. ``("8M", "35M", "150M")``.
    regressor : str
        The authors' regressor tag: ``"pcr"``, ``"linear"`` or ``"ridge"``.
    pca : str or None
        ``"fbpca"`` or ``"incremental"``; ``None`` accepts either when only one is present.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"no such folder: {folder}")
    if len(sizes) < 2:
        raise ValueError(f"sizes must name at least 2 consecutive ESM-2 sizes, got {list(sizes)}")
    steps = []
    for small, large in zip(sizes[:-1], sizes[1:]):
        candidates = sorted(
            path for path in folder.glob(f"rd-scaler-{small}-{large}-{regressor}-*.npz")
            if pca is None or FILENAME.match(path.name)["pca"] == pca
        )
        if len(candidates) != 1:
            raise FileNotFoundError(
                f"expected exactly one file rd-scaler-{small}-{large}-{regressor}-{pca or '<pca>'}-<n>.npz "
                f"in {folder}, found {[path.name for path in candidates]}"
            )
        steps.append(load_reference_scaler(candidates[0]))
    dims = (steps[0].n_features_in_,) + tuple(step.n_features_in_ + step.n_components_ for step in steps)
    for index, step in enumerate(steps):
        if step.n_features_in_ != dims[index]:
            raise ValueError(f"step {sizes[index]} -> {sizes[index + 1]} expects {step.n_features_in_} input "
                             f"features but the previous level has {dims[index]}")
    ladder = DistillationLadder(regressor=_REGRESSOR_NAMES[regressor])
    ladder.level_names_, ladder.dims_, ladder.steps_ = tuple(sizes), dims, steps
    ladder.affine_weights_, ladder.affine_offset_ = compose_affine(steps, dims)
    return ladder
