"""Import the reverse-distillation authors' published scaler files.

The authors publish one ``.npz`` per step, named ``rd-scaler-<in>-<out>-<regressor>-<pca>-<n>.npz``
(e.g. ``rd-scaler-8M-35M-pcr-fbpca-1000000.npz``), with keys ``regressor__coef_``,
``regressor__intercept_`` and, for PCR, ``regressor__input_mean_``, ``regressor__output_mean_``,
``regressor__input_components_`` and ``regressor__n_significant_pcs_``; the residual PCA is
``pca__mean_`` and ``pca__components_``. Their prediction is

* PCR: ``((x - input_mean_) @ input_components_[:, :k]) @ coef_.T + intercept_ + output_mean_``
* linear / ridge: ``x @ coef_.T + intercept_``

and the appended block ``(y - f(x) - pca__mean_) @ pca__components_.T``. We convert each file into
a fitted :class:`~revdistill.core.distill.ReverseDistiller`, reading with ``allow_pickle=False``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import numpy as np

from revdistill.io.files import load_npz
from revdistill.core.distill import ReverseDistiller
from revdistill.io.files import sha256_of
from revdistill.core.ladder import DistillationLadder

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
    try:
        full_coef, full_intercept, components, residual_mean, n_pcs = _affine_parts(state, match["regressor"], path)
    except (TypeError, IndexError, ValueError) as error:
        message = str(error)
        raise ValueError(message if message.startswith(path.name) else f"{path.name}: {message}") from None
    n_components = components.shape[0]

    def optional(key: str) -> np.ndarray:
        return np.asarray(state.get(key, np.full(n_components, np.nan)), dtype=np.float64)

    step = ReverseDistiller(regressor=_REGRESSOR_NAMES[match["regressor"]], n_components=n_components)
    threshold = state.get("regressor__johnstone_threshold_")
    try:
        return step._set_learned({
            "coef_": full_coef, "intercept_": full_intercept, "residual_mean_": residual_mean,
            "components_": components, "explained_variance_": optional("pca__explained_variance_"),
            "explained_variance_ratio_": optional("pca__explained_variance_ratio_"),
            "n_regression_components_": n_pcs,
            "johnstone_threshold_": None if threshold is None else float(threshold),
            "r2_": float("nan"), "prefix_correlation_max_": float("nan"), "n_samples_seen_": 0,
        })
    except ValueError as error:
        raise ValueError(f"{path.name}: {error}") from None


def _affine_parts(state, regressor: str, path: Path):
    """The step's full coefficients, intercept, residual axes and mean, and the PCR rank, from a scaler's arrays."""
    needed = ["regressor__coef_", "regressor__intercept_", "pca__mean_", "pca__components_"]
    if regressor == "pcr":
        needed += ["regressor__input_mean_", "regressor__output_mean_", "regressor__input_components_",
                   "regressor__n_significant_pcs_"]
    missing = [key for key in needed if key not in state]
    if missing:
        raise ValueError(f"{path.name} lacks the keys {missing} (has {sorted(state)})")
    coef = np.atleast_2d(np.asarray(state["regressor__coef_"], dtype=np.float64))
    intercept = np.asarray(state["regressor__intercept_"], dtype=np.float64)
    if regressor == "pcr":
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
    return full_coef, full_intercept, components, residual_mean, n_pcs


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
    if isinstance(sizes, str):
        raise ValueError(f"sizes={sizes!r} must be a sequence of size tags such as ('8M', '35M'), not one string")
    if regressor not in _REGRESSOR_NAMES:
        raise ValueError(f"regressor={regressor!r}; the authors' files use one of {sorted(_REGRESSOR_NAMES)}")
    sizes = tuple(str(size) for size in sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes must name at least 2 consecutive ESM-2 sizes, got {list(sizes)}")
    steps, used = [], []
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
        used.append(candidates[0])
    dims = (steps[0].n_features_in_,) + tuple(step.n_features_in_ + step.n_components_ for step in steps)
    ladder = DistillationLadder(regressor=_REGRESSOR_NAMES[regressor], fit_on="raw")
    provenance = {"source": "authors' scaler files", "files": [path.name for path in used],
                  "sha256": [sha256_of(path) for path in used]}
    try:
        return ladder._set_fitted(sizes, dims, steps, [float("nan")] * len(steps), provenance)
    except ValueError as error:
        raise ValueError(f"scaler files in {folder} do not chain: {error}") from None
