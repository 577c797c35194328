"""Ridge probe, CV protocol, metrics and ProteinGym aggregation (checked against the published tables)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import Ridge

from revdistill.experiment import aggregate, probe
from revdistill.proteingym import SCHEMES, load_reference, read_assay

KENNOUCHE = "A0A1I9GEU1_NEIME_Kennouche_2019"
SUPERVISED = "benchmarks/DMS_supervised/substitutions/{metric}"
ZERO_SHOT = "benchmarks/DMS_zero_shot/substitutions/Spearman"


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
    table = probe.evaluate_assay({("planted", "m", 24): planted, ("noise", "m", 24): noise}, assay)
    assert len(table) == 2 * len(SCHEMES) and list(table.columns) == list(probe.RESULT_COLUMNS)
    assert (table.loc[table.representation == "planted", "spearman"] > 0.9).all()
    assert (table.loc[table.representation == "noise", "spearman"].abs() < 0.1).all()
    assert (table.loc[table.representation == "planted", "mse"] < 0.1).all()
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
    with pytest.raises(RuntimeError, match="not fitted"):
        probe.RidgeProbe().predict(x)
    with pytest.raises(ValueError, match="at least 2 distinct"):
        probe.cross_validate(x, y, np.zeros(20))


def test_evaluate_assay_errors(assay):
    with pytest.raises(ValueError, match="have 5 rows"):
        probe.evaluate_assay({("r", "m", 3): np.zeros((5, 3))}, assay)
    with pytest.raises(ValueError, match="not CV schemes"):
        probe.evaluate_assay({}, assay, schemes=["fold_weird"])


def _published_dms_level(proteingym_dir, scheme: str, metric: str = "Spearman") -> pd.DataFrame:
    return pd.read_csv(proteingym_dir / SUPERVISED.format(metric=metric) / f"DMS_substitutions_{metric}_DMS_level_{scheme}.csv").set_index("DMS_id")


@pytest.mark.parametrize("metric", ["Spearman", "MSE"])
def test_proteingym_average_reproduces_the_supervised_leaderboard(proteingym_dir, reference, metric):
    summary = pd.read_csv(proteingym_dir / SUPERVISED.format(metric=metric) / f"Summary_performance_DMS_substitutions_{metric}.csv").set_index("Model_name")
    per_scheme = {s: aggregate.proteingym_average(_published_dms_level(proteingym_dir, s, metric), reference["UniProt_ID"], reference["coarse_selection_type"]) for s in SCHEMES}
    models = summary.index
    for scheme, table in per_scheme.items():
        np.testing.assert_allclose(table.loc[models, "Average"], summary[f"Average_{metric}_{scheme}"], atol=1.5e-3)
    overall = sum(per_scheme.values()) / len(SCHEMES)
    np.testing.assert_allclose(overall.loc[models, "Average"], summary[f"Average_{metric}"], atol=1.5e-3)
    functions = [c for c in summary.columns if c.startswith("Function_")]
    assert len(functions) == 5
    np.testing.assert_allclose(overall.loc[models, functions], summary[functions], atol=1.5e-3)


def test_proteingym_average_reproduces_the_zero_shot_leaderboard(proteingym_dir, reference):
    per_assay = pd.read_csv(proteingym_dir / ZERO_SHOT / "DMS_substitutions_Spearman_DMS_level.csv").set_index("DMS ID")
    summary = pd.read_csv(proteingym_dir / ZERO_SHOT / "Summary_performance_DMS_substitutions_Spearman.csv").set_index("Model_name")
    models = [c for c in summary.index if c in per_assay.columns]
    assert len(models) == len(summary) == 97
    ours = aggregate.proteingym_average(per_assay[models], reference["UniProt_ID"], reference["coarse_selection_type"])
    np.testing.assert_allclose(ours.loc[models, "Average"].round(3), summary.loc[models, "Average_Spearman"], atol=1.01e-3)
    esm2 = ours.loc[[f"ESM2 ({s})" for s in ("8M", "35M", "150M", "650M", "3B", "15B")], "Average"].round(3)
    np.testing.assert_allclose(esm2, [0.226, 0.321, 0.387, 0.414, 0.406, 0.400])


def _tidy_from_published(proteingym_dir, reference, models=("Kermut", "One-Hot Encodings")) -> pd.DataFrame:
    rows = []
    for scheme in SCHEMES:
        table = _published_dms_level(proteingym_dir, scheme)
        for model in models:
            for dms_id, value in table[model].items():
                rows.append({"assay": dms_id, "scheme": scheme, "representation": model, "model": "m", "dim": 1,
                             "spearman": value, "uniprot_id": reference.loc[dms_id, "UniProt_ID"],
                             "selection_type": reference.loc[dms_id, "coarse_selection_type"]})
    return pd.DataFrame(rows)


def test_aggregate_on_a_tidy_table_matches_the_leaderboard(proteingym_dir, reference):
    summary = pd.read_csv(proteingym_dir / SUPERVISED.format(metric="Spearman") / "Summary_performance_DMS_substitutions_Spearman.csv").set_index("Model_name")
    tidy = _tidy_from_published(proteingym_dir, reference)
    result = aggregate.aggregate(tidy, n_bootstrap=200).set_index(["representation", "aggregation"])
    for model in ("Kermut", "One-Hot Encodings"):
        row = result.loc[(model, "proteingym")]
        assert row["value"] == pytest.approx(summary.loc[model, "Average_Spearman"], abs=1.5e-3)
        assert row["ci_low"] < row["value"] < row["ci_high"] and row["n_assays"] == 217
        assert row["aggregation_label"].startswith("ProteinGym average")
        plain = tidy[tidy.representation == model].groupby("assay")["spearman"].mean().mean()
        assert result.loc[(model, "mean"), "value"] == pytest.approx(plain)
    by_scheme = aggregate.aggregate(tidy, how=("proteingym",), by_scheme=True, n_bootstrap=0).set_index(["representation", "scheme"])
    for scheme in SCHEMES:
        assert by_scheme.loc[("Kermut", scheme), "value"] == pytest.approx(summary.loc["Kermut", f"Average_Spearman_{scheme}"], abs=1.5e-3)
    again = aggregate.aggregate(tidy, n_bootstrap=200).set_index(["representation", "aggregation"])
    pd.testing.assert_frame_equal(result, again)  # seeded bootstrap: same bytes


def test_aggregate_errors(proteingym_dir, reference):
    tidy = _tidy_from_published(proteingym_dir, reference, models=("Kermut",))
    with pytest.raises(ValueError, match="metric="):
        aggregate.aggregate(tidy, metric="auc")
    with pytest.raises(ValueError, match="how="):
        aggregate.aggregate(tidy, how=("median",))
    mixed = tidy[~((tidy.assay == tidy.assay.iloc[0]) & (tidy.scheme == "fold_modulo_5"))]
    with pytest.raises(ValueError, match="different CV schemes"):
        aggregate.aggregate(mixed)


def test_zero_shot_reference(proteingym_dir, tmp_path):
    table = aggregate.zero_shot_reference(proteingym_dir)
    assert table["model"].tolist() == ["8M", "35M", "150M", "650M", "3B", "15B"]
    np.testing.assert_allclose(table["spearman"], [0.226, 0.321, 0.387, 0.414, 0.406, 0.400])
    assert "DMS_zero_shot" in table["source"].iloc[0] and (table["label"].str.contains("zero-shot")).all()
    fallback = aggregate.zero_shot_reference(tmp_path)
    assert fallback["source"].iloc[0].startswith("built-in constants")
    np.testing.assert_allclose(fallback["spearman"], table["spearman"])
    assert (np.diff(table["params"]) > 0).all()


def test_spearman_matches_scipy():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(4)
    a, b = rng.normal(size=300), rng.integers(0, 20, size=300).astype(float)  # ties in b
    assert probe.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic, abs=1e-12)
    assert np.isnan(probe.spearman(a, np.ones(300)))
