"""Both fit conventions against step-by-step implementations written here, from the raw arrays.

``fit_on="nested"`` (ours) fits step k on the nested output of step k-1; ``fit_on="raw"`` (the released
method) fits step k on raw level k-1 -> raw level k and applies it to the nested level k-1. The naive
baseline likewise fits its PCA on ``[naive k-1, raw k]`` or on ``[raw k-1, raw k]``.
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from conftest import make_levels
from revdistill import DistillationLadder, Moments, NaiveConcatPCA, ReverseDistiller


def _fix_signs(vt: np.ndarray) -> np.ndarray:
    """The documented sign convention: each axis' largest-magnitude entry is positive. It matters: with
    the released convention, signs of step k's axes change what step k+1 (fitted on raw inputs) does."""
    rows = np.argmax(np.abs(vt), axis=1)
    return vt * np.sign(vt[np.arange(len(vt)), rows])[:, None]


def _ols_step(x_fit: np.ndarray, y_fit: np.ndarray):
    """Least squares of y on x, then the residual's principal axes: independent of revdistill's code."""
    x_mean, y_mean = x_fit.mean(0), y_fit.mean(0)
    coef, *_ = np.linalg.lstsq(x_fit - x_mean, y_fit - y_mean, rcond=None)
    residual = (y_fit - y_mean) - (x_fit - x_mean) @ coef
    _, _, vt = np.linalg.svd(residual - residual.mean(0), full_matrices=False)
    vt = _fix_signs(vt)
    m = y_fit.shape[1] - x_fit.shape[1]

    def apply(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.hstack([x, ((y - y_mean) - (x - x_mean) @ coef - residual.mean(0)) @ vt[:m].T])

    return apply, vt[:m]


def _by_hand(levels: dict[str, np.ndarray], fit_on: str) -> tuple[np.ndarray, list[np.ndarray]]:
    names = list(levels)
    nested, axes = levels[names[0]], []
    for small, large in zip(names[:-1], names[1:]):
        x_fit = levels[small] if fit_on == "raw" else nested
        apply, step_axes = _ols_step(x_fit, levels[large])
        nested = apply(nested, levels[large])
        axes.append(step_axes)
    return nested, axes


def _same(ours: np.ndarray, theirs: np.ndarray, start: int) -> None:
    """The prefix is bit-identical, the appended blocks agree to 1e-10 (relative to their scale)."""
    assert np.array_equal(ours[:, :start], theirs[:, :start])
    scale = np.abs(theirs[:, start:]).max()
    assert np.abs(ours[:, start:] - theirs[:, start:]).max() <= 1e-10 * scale


@pytest.mark.parametrize("fit_on", ["nested", "raw"])
def test_ladder_conventions_equal_step_by_step_implementations(fit_on):
    levels = make_levels(n_rows=2500, dims=(6, 10, 15), latent=8, seed=3)
    ladder = DistillationLadder(regressor="ols", fit_on=fit_on).fit(levels)
    ours = np.asarray(ladder.transform(levels))
    theirs, _ = _by_hand(levels, fit_on)
    _same(ours, theirs, start=6)
    # the affine map used for pooled rows is the same ladder
    concatenated = np.hstack(list(levels.values()))
    assert_allclose(concatenated @ ladder.affine_weights_ + ladder.affine_offset_, ours, rtol=1e-9, atol=1e-9)


def test_the_conventions_differ_after_the_first_step_and_only_ours_is_orthogonal():
    levels = make_levels(n_rows=2500, dims=(6, 10, 15), latent=8, seed=4)
    nested = DistillationLadder(regressor="ols", fit_on="nested").fit(levels)
    raw = DistillationLadder(regressor="ols", fit_on="raw").fit(levels)
    first_nested, first_raw = nested.steps_[0], raw.steps_[0]
    assert_allclose(first_nested.coef_, first_raw.coef_, rtol=1e-12, atol=1e-12)  # step 1: nested 0 == raw 0
    assert not np.allclose(nested.steps_[1].coef_, raw.steps_[1].coef_)
    # on the fitting residues our block is uncorrelated with the prefix; the released one is not
    assert nested.block_correlation_max_[1] < 1e-8
    assert raw.block_correlation_max_[1] > 1e-3
    out = np.asarray(raw.transform(levels))
    corr = np.corrcoef(out, rowvar=False)[:10, 10:]
    assert_allclose(np.abs(corr).max(), raw.block_correlation_max_[1], rtol=1e-6)


@pytest.mark.parametrize("fit_on", ["nested", "raw"])
def test_naive_conventions_equal_step_by_step_pca(fit_on):
    levels = make_levels(n_rows=2000, dims=(5, 9, 14), latent=7, seed=5)
    naive = NaiveConcatPCA(fit_on=fit_on).fit(levels)
    out = naive.transform(levels)
    names = list(levels)
    current = levels[names[0]]
    for small, large in zip(names[:-1], names[1:]):
        fitted = np.hstack([levels[small] if fit_on == "raw" else current, levels[large]])
        mean = fitted.mean(0)
        _, _, vt = np.linalg.svd(fitted - mean, full_matrices=False)
        applied = np.hstack([current, levels[large]])
        current = (applied - mean) @ _fix_signs(vt[: levels[large].shape[1]]).T
        assert np.abs(out[large] - current).max() <= 1e-10 * np.abs(current).max()


def test_both_conventions_fit_from_the_same_joint_moments_and_round_trip(tmp_path):
    levels = make_levels(n_rows=1500, dims=(6, 10, 15), latent=8, seed=6)
    moments = Moments.from_arrays(levels)
    for fit_on in ("nested", "raw"):
        ladder = DistillationLadder(fit_on=fit_on).fit_moments(moments, provenance={"corpus": "synthetic"})
        loaded = DistillationLadder.load(ladder.save(tmp_path / f"{fit_on}.npz"))
        assert loaded.fit_on == fit_on and loaded.provenance_ == {"corpus": "synthetic"}
        assert loaded.transform(levels).values.tobytes() == ladder.transform(levels).values.tobytes()
        naive = NaiveConcatPCA(fit_on=fit_on).fit_moments(moments)
        again = NaiveConcatPCA.load(naive.save(tmp_path / f"naive-{fit_on}.npz"))
        assert all(np.array_equal(a, b)
                   for a, b in zip(again.transform(levels).values(), naive.transform(levels).values()))


def test_unknown_convention_is_refused_before_work():
    levels = make_levels(n_rows=200, dims=(3, 5), latent=2)
    with pytest.raises(ValueError,
                       match=r"fit_on='released' is not a fit convention; choose one of \('nested', 'raw'\)"):
        DistillationLadder(fit_on="released").fit(levels)
    with pytest.raises(ValueError, match="fit_on='x'"):
        NaiveConcatPCA(fit_on="x").fit(levels)


def test_non_finite_coefficients_are_never_saved():
    """Inputs scaled into overflow must fail loudly, not fit NaN coefficients that save and reload."""
    levels = make_levels(n_rows=300, dims=(3, 5), latent=2)
    huge = {name: values * 1e160 for name, values in levels.items()}
    with pytest.raises(ValueError, match="NaN or infinit"):
        DistillationLadder(regressor="ols").fit(huge)
    with pytest.raises(ValueError, match="NaN or infinit"):
        ReverseDistiller(regressor="ols").fit(huge["L0"], huge["L1"])
