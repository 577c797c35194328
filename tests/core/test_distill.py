"""ReverseDistiller: exactness, agreement with an independent implementation, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from revdistill import Moments, NotFittedError, ReverseDistiller
from revdistill.core.linalg import johnstone_rank

from conftest import make_levels


def independent_fit_transform(small, large, regressor, alpha=1.0):
    """Straightforward in-memory reverse distillation from SVDs, written independently of the package."""
    n, d_small = small.shape
    d_large = large.shape[1]
    small_mean, large_mean = small.mean(0), large.mean(0)
    xs, ys = small - small_mean, large - large_mean
    if regressor == "pcr":
        _, singular, vt = np.linalg.svd(xs, full_matrices=False)
        eig = singular**2 / (n - 1)
        edge = (1 + np.sqrt(d_small / n)) ** 2
        noise = eig[eig / eig.mean() < edge]
        sigma2 = np.median(noise) if noise.size else np.median(eig[-max(1, d_small // 4):])
        k = int(np.sum(eig > sigma2 * edge))
        scores = xs @ vt[:k].T
        beta, *_ = np.linalg.lstsq(scores, ys, rcond=None)
        prediction = scores @ beta
    elif regressor == "ridge":
        beta = np.linalg.solve(xs.T @ xs + alpha * np.eye(d_small), xs.T @ ys)
        prediction = xs @ beta
    else:
        beta, *_ = np.linalg.lstsq(xs, ys, rcond=None)
        prediction = xs @ beta
    residual = ys - prediction
    residual = residual - residual.mean(0)
    _, _, rvt = np.linalg.svd(residual, full_matrices=False)
    axes = rvt[: d_large - d_small]
    signs = np.sign(axes[np.arange(axes.shape[0]), np.argmax(np.abs(axes), axis=1)])
    return np.concatenate([small, residual @ (axes * signs[:, None]).T], axis=1)


@pytest.mark.parametrize("regressor", ["pcr", "ridge", "ols"])
def test_matches_independent_implementation(levels, regressor):
    small, large = levels["L0"], levels["L1"]
    ours = ReverseDistiller(regressor=regressor, alpha=3.0).fit(small, large).transform(small, large)
    theirs = independent_fit_transform(small, large, regressor, alpha=3.0)
    assert_allclose(ours, theirs, atol=1e-6, rtol=0)


@pytest.mark.parametrize("regressor", ["pcr", "ridge", "ols"])
def test_prefix_is_exactly_small(levels, regressor):
    small = levels["L0"].astype(np.float32)
    large = levels["L1"].astype(np.float32)
    nested = ReverseDistiller(regressor=regressor).fit(small, large).transform(small, large)
    assert nested.dtype == np.float32 and nested.shape == (small.shape[0], large.shape[1])
    assert np.array_equal(nested[:, : small.shape[1]], small)


def test_ols_block_uncorrelated_with_prefix(levels):
    small, large = levels["L0"], levels["L1"]
    step = ReverseDistiller(regressor="ols").fit(small, large)
    nested = step.transform(small, large)
    block = nested[:, small.shape[1]:]
    cross = np.corrcoef(small.T, block.T)[: small.shape[1], small.shape[1]:]
    assert np.abs(cross).max() < 1e-10
    assert step.prefix_correlation_max_ < 1e-10


def test_pcr_block_uncorrelated_with_retained_components(levels):
    small, large = levels["L0"], levels["L1"]
    step = ReverseDistiller(regressor="pcr").fit(small, large)
    block = step.transform(small, large)[:, small.shape[1]:]
    _, _, vt = np.linalg.svd(small - small.mean(0), full_matrices=False)
    scores = (small - small.mean(0)) @ vt[: step.n_regression_components_].T
    cross = (scores - scores.mean(0)).T @ (block - block.mean(0))
    assert np.abs(cross).max() / (np.linalg.norm(scores) * np.linalg.norm(block)) < 1e-10
    # the reported correlation is the real one on the fitting data
    full = np.corrcoef(small.T, block.T)[: small.shape[1], small.shape[1]:]
    assert step.prefix_correlation_max_ == pytest.approx(np.abs(full).max(), abs=1e-8)


def test_block_columns_are_decorrelated_and_sorted(levels):
    small, large = levels["L0"], levels["L1"]
    step = ReverseDistiller().fit(small, large)
    block = step.transform(small, large)[:, small.shape[1]:]
    cov = np.cov(block.T)
    assert_allclose(cov - np.diag(np.diag(cov)), 0, atol=1e-8 * np.abs(cov).max())
    assert np.all(np.diff(np.diag(cov)) <= 1e-9)
    assert_allclose(step.components_ @ step.components_.T, np.eye(step.n_components_), atol=1e-12)
    assert_allclose(np.diag(cov), step.explained_variance_, rtol=1e-8)


def test_johnstone_rule_on_known_spectrum():
    eigenvalues = torch.tensor([50.0, 20.0, 10.0] + [1.0] * 17, dtype=torch.float64)
    rank, threshold, sigma2 = johnstone_rank(eigenvalues, n_samples=1000)
    assert sigma2 == 1.0
    assert threshold == pytest.approx((1 + np.sqrt(20 / 1000)) ** 2)
    assert rank == 3


def test_pcr_number_of_components_follows_signal():
    rng = np.random.default_rng(1)
    latent = rng.normal(size=(4000, 5)) * 5
    small = latent @ rng.normal(size=(5, 30)) + rng.normal(size=(4000, 30))
    large = latent @ rng.normal(size=(5, 40)) + rng.normal(size=(4000, 40))
    step = ReverseDistiller(regressor="pcr").fit(small, large)
    assert step.n_regression_components_ == 5
    assert step.n_components_ == 10


def test_fit_moments_matches_fit_on_arrays(levels):
    small, large = levels["L0"], levels["L1"]
    direct = ReverseDistiller().fit(small, large)
    moments = Moments(("s", "l"), (small.shape[1], large.shape[1]), chunk_size=257)
    for start in range(0, len(small), 1000):
        moments.update({"s": small[start:start + 1000], "l": large[start:start + 1000]})
    streamed = ReverseDistiller().fit_moments(moments, small="s", large="l")
    assert_allclose(streamed.transform(small, large), direct.transform(small, large), atol=1e-9)


def test_merged_halves_give_same_fit(levels):
    small, large = levels["L0"], levels["L1"]
    half = len(small) // 3
    first = Moments.from_arrays({"s": small[:half], "l": large[:half]})
    second = Moments.from_arrays({"s": small[half:], "l": large[half:]})
    merged = ReverseDistiller().fit_moments(first + second, "s", "l")
    direct = ReverseDistiller().fit(small, large)
    assert_allclose(merged.transform(small, large), direct.transform(small, large), atol=1e-9)


def test_mean_pooling_commutes_with_transform(levels):
    small, large = levels["L0"], levels["L1"]
    step = ReverseDistiller().fit(small, large)
    lengths = [37, 120, 5, 838]
    bounds = np.cumsum([0] + lengths)
    per_residue = step.transform(small[: bounds[-1]], large[: bounds[-1]])
    pooled_after = np.stack([per_residue[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])])
    pooled_small = np.stack([small[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])])
    pooled_large = np.stack([large[a:b].mean(0) for a, b in zip(bounds[:-1], bounds[1:])])
    assert_allclose(step.transform(pooled_small, pooled_large), pooled_after, atol=1e-10)


def test_deterministic_bytes(levels):
    small, large = levels["L0"], levels["L1"]
    first = ReverseDistiller().fit(small, large).transform(small, large)
    second = ReverseDistiller().fit(small.copy(), large.copy()).transform(small, large)
    assert first.tobytes() == second.tobytes()


def test_torch_input_gives_torch_output(levels):
    small, large = torch.from_numpy(levels["L0"]).float(), torch.from_numpy(levels["L1"]).float()
    step = ReverseDistiller().fit(small, large)
    nested = step.transform(small, large)
    assert isinstance(nested, torch.Tensor) and nested.dtype == torch.float32
    assert torch.equal(nested[:, : small.shape[1]], small)
    assert_allclose(nested.numpy(), step.transform(levels["L0"], levels["L1"]), atol=1e-3)


def test_ridge_agrees_with_sklearn(levels):
    sklearn = pytest.importorskip("sklearn.linear_model")
    small, large = levels["L0"], levels["L1"]
    step = ReverseDistiller(regressor="ridge", alpha=50.0).fit(small, large)
    reference = sklearn.Ridge(alpha=50.0).fit(small, large)
    assert_allclose(step.coef_, reference.coef_, rtol=1e-8, atol=1e-10)
    assert_allclose(step.predict(small), reference.predict(small), atol=1e-8)


def test_r2_matches_definition(levels):
    small, large = levels["L0"], levels["L1"]
    step = ReverseDistiller(regressor="ols").fit(small, large)
    prediction = step.predict(small)
    r2 = 1 - ((large - prediction) ** 2).sum(0) / ((large - large.mean(0)) ** 2).sum(0)
    assert step.r2_ == pytest.approx(r2.mean(), abs=1e-10)


# ---------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "small_shape, large_shape, match",
    [
        ((100, 4), (99, 8), "same number of rows"),
        ((100, 8), (100, 8), "large must be wider than small"),
        ((100, 8), (100, 5), "large must be wider than small"),
        ((6, 4), (6, 8), "fewer residues"),
        ((100,), (100, 8), "2-D"),
    ],
)
def test_bad_shapes(small_shape, large_shape, match):
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match=match):
        ReverseDistiller().fit(rng.normal(size=small_shape), rng.normal(size=large_shape))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_input(levels, bad):
    small = levels["L0"].copy()
    small[17, 3] = bad
    with pytest.raises(ValueError, match=r"small contains NaN or infinity \(first bad row: 17\)"):
        ReverseDistiller().fit(small, levels["L1"])


def test_unknown_regressor(levels):
    with pytest.raises(ValueError,
                       match=r"regressor='lasso' is not supported; choose one of \('pcr', 'ridge', 'ols'\)"):
        ReverseDistiller(regressor="lasso").fit(levels["L0"], levels["L1"])


def test_n_components_out_of_range(levels):
    with pytest.raises(ValueError, match="n_components=900 must be between 1 and 36"):
        ReverseDistiller(n_components=900).fit(levels["L0"], levels["L1"])


def test_transform_before_fit(levels):
    with pytest.raises(NotFittedError, match="not fitted yet"):
        ReverseDistiller().transform(levels["L0"], levels["L1"])


def test_transform_with_wrong_widths(levels):
    step = ReverseDistiller().fit(levels["L0"], levels["L1"])
    with pytest.raises(ValueError, match="fitted on d_small=24, d_large=36"):
        step.transform(levels["L1"], levels["L2"])


def test_init_only_stores_arguments():
    step = ReverseDistiller(regressor="nonsense", alpha=-1)
    assert step.regressor == "nonsense" and step.alpha == -1
    assert not hasattr(step, "coef_")


def test_pcr_rank_matches_an_independent_johnstone_rule():
    """On a spectrum with a clear bulk edge, the number of PCR components equals the authors'
    rule computed here from numpy's SVD."""
    levels = make_levels(n_rows=800, dims=(10, 20), latent=6, seed=3)
    small = levels["L0"]
    step = ReverseDistiller(regressor="pcr").fit(small, levels["L1"])
    singular = np.linalg.svd(small - small.mean(0), compute_uv=False)
    eig = singular**2 / (len(small) - 1)
    edge = (1 + np.sqrt(small.shape[1] / len(small))) ** 2
    noise = eig[eig / eig.mean() < edge]
    sigma2 = np.median(noise) if noise.size else np.median(eig[-max(1, small.shape[1] // 4):])
    assert step.n_regression_components_ == int(np.sum(eig > sigma2 * edge))
    assert step.johnstone_threshold_ == pytest.approx(sigma2 * edge, rel=1e-10)
