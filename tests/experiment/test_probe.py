"""The ridge probe and its CV protocol, checked against scikit-learn and planted signals."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Ridge

from revdistill import NotFittedError
from revdistill.experiment import probe
from revdistill.proteingym import SCHEMES, load_reference, read_assay

KENNOUCHE = "A0A1I9GEU1_NEIME_Kennouche_2019"


@pytest.fixture(scope="module")
def reference(proteingym_dir):
    return load_reference(proteingym_dir)


@pytest.fixture(scope="module")
def assay(proteingym_dir, reference):
    return read_assay(KENNOUCHE, data_dir=proteingym_dir, reference=reference)


@pytest.mark.parametrize("shape", [(120, 15), (30, 80)], ids=["primal", "dual"])
def test_ridge_matches_sklearn_at_the_chosen_penalty(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape) * rng.uniform(0.1, 5, size=shape[1]) + 3
    y = x[:, 0] - 2 * x[:, 1] + rng.normal(size=shape[0])
    fitted = probe.RidgeProbe().fit(x, y)
    centred = x - x.mean(axis=0)
    penalty = fitted.alpha_ * np.mean(np.linalg.svd(centred, compute_uv=False) ** 2)
    reference = Ridge(alpha=penalty).fit(x, (y - y.mean()) / y.std())
    np.testing.assert_allclose(fitted.coef_, reference.coef_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fitted.predict(x), reference.predict(x) * y.std() + y.mean(), rtol=1e-8)
    assert fitted.alpha_ in probe.DEFAULT_ALPHAS and fitted.inner_mse_.shape == (len(probe.DEFAULT_ALPHAS),)


def test_planted_signal_is_recovered_and_shuffled_scores_give_zero(assay):
    rng = np.random.default_rng(1)
    scores = assay.variants["DMS_score"].to_numpy()
    noise = rng.normal(size=(assay.n_variants, 24))
    planted = noise.copy()
    planted[:, 3] = scores + 0.2 * scores.std() * rng.normal(size=assay.n_variants)
    for scheme in SCHEMES:
        signal = probe.cross_validate(planted, scores, assay.folds(scheme))
        assert signal.spearman > 0.9 and signal.mse < 0.1 and signal.note == ""
        assert abs(probe.cross_validate(noise, scores, assay.folds(scheme)).spearman) < 0.1
    shuffled = rng.permutation(scores)
    for scheme in SCHEMES:
        result = probe.cross_validate(planted, shuffled, assay.folds(scheme))
        assert abs(result.spearman) < 0.1
        assert result.mse > 0.95


def test_no_leakage_from_the_test_fold():
    """Targets are standardized and the penalty chosen on training folds only: test labels cannot move
    test predictions."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(200, 10))
    y = x @ rng.normal(size=10) + rng.normal(size=200)
    folds = np.arange(200) % 5
    before = probe.cross_validate(x, y, folds)
    changed = y.copy()
    changed[folds == 0] = 1000 * rng.normal(size=(folds == 0).sum())
    after = probe.cross_validate(x, changed, folds)
    np.testing.assert_allclose(before.predictions[folds == 0], after.predictions[folds == 0])


def test_metrics_are_invariant_to_affine_score_changes():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(150, 8))
    y = x[:, 0] + rng.normal(size=150)
    folds = rng.integers(0, 5, size=150)
    a = probe.cross_validate(x, y, folds)
    b = probe.cross_validate(x, 3 * y + 7, folds)
    assert a.spearman == pytest.approx(b.spearman) and a.mse == pytest.approx(b.mse)
    np.testing.assert_allclose(b.predictions, 3 * a.predictions + 7)


def test_probe_errors():
    x, y = np.zeros((20, 3)), np.arange(20.0)
    with pytest.raises(ValueError, match="constant on the training folds"):
        probe.RidgeProbe().fit(np.ones((20, 3)), np.ones(20))
    with pytest.raises(ValueError, match=r"expected \(20,\)"):
        probe.RidgeProbe().fit(x, y[:5])
    with pytest.raises(ValueError, match="alphas="):
        probe.RidgeProbe(alphas=[0.0]).fit(x, y)
    with pytest.raises(ValueError, match="finite"):
        probe.RidgeProbe().fit(np.full((20, 3), np.nan), y)
    with pytest.raises(NotFittedError, match="not fitted"):
        probe.RidgeProbe().predict(x)
    with pytest.raises(ValueError, match="at least 2 distinct"):
        probe.cross_validate(x, y, np.zeros(20))


def test_constant_features_give_a_noted_nan_not_a_silent_one():
    scores = (np.arange(50) // 5).astype(float)  # every fold holds 0..9: every training mean is the same
    with pytest.warns(RuntimeWarning, match="constant"):
        result = probe.cross_validate(np.ones((50, 3)), scores, np.arange(50) % 5)
    assert np.isnan(result.spearman) and "constant" in result.note


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(4)
    a, b = rng.normal(size=300), rng.integers(0, 20, size=300).astype(float)  # ties in b
    assert probe.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(probe.spearman(a, np.ones(300)))
