"""ProteinGym aggregation, checked against the published leaderboard tables."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from revdistill.experiment import aggregate
from revdistill.proteingym import SCHEMES, load_reference

SUPERVISED = "benchmarks/DMS_supervised/substitutions/{metric}"
ZERO_SHOT = "benchmarks/DMS_zero_shot/substitutions/Spearman"


@pytest.fixture(scope="module")
def reference(proteingym_dir):
    return load_reference(proteingym_dir)


def _published_dms_level(proteingym_dir, scheme: str, metric: str = "Spearman") -> pd.DataFrame:
    path = proteingym_dir / SUPERVISED.format(metric=metric) / f"DMS_substitutions_{metric}_DMS_level_{scheme}.csv"
    return pd.read_csv(path).set_index("DMS_id")


@pytest.mark.parametrize("metric", ["Spearman", "MSE"])
def test_proteingym_average_reproduces_the_supervised_leaderboard(proteingym_dir, reference, metric):
    summary = pd.read_csv(proteingym_dir / SUPERVISED.format(metric=metric)
                          / f"Summary_performance_DMS_substitutions_{metric}.csv").set_index("Model_name")
    per_scheme = {s: aggregate.proteingym_average(_published_dms_level(proteingym_dir, s, metric),
                                                  reference["UniProt_ID"], reference["coarse_selection_type"])
                  for s in SCHEMES}
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
    summary = pd.read_csv(proteingym_dir / ZERO_SHOT / "Summary_performance_DMS_substitutions_Spearman.csv"
                          ).set_index("Model_name")
    models = [c for c in summary.index if c in per_assay.columns]
    assert len(models) == len(summary) == 97
    ours = aggregate.proteingym_average(per_assay[models], reference["UniProt_ID"], reference["coarse_selection_type"])
    np.testing.assert_allclose(ours.loc[models, "Average"].round(3), summary.loc[models, "Average_Spearman"],
                               atol=1.01e-3)
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
    summary = pd.read_csv(proteingym_dir / SUPERVISED.format(metric="Spearman")
                          / "Summary_performance_DMS_substitutions_Spearman.csv").set_index("Model_name")
    tidy = _tidy_from_published(proteingym_dir, reference)
    result = aggregate.aggregate(tidy, n_bootstrap=200).set_index(["representation", "aggregation"])
    for model in ("Kermut", "One-Hot Encodings"):
        row = result.loc[(model, "proteingym")]
        assert row["value"] == pytest.approx(summary.loc[model, "Average_Spearman"], abs=1.5e-3)
        assert row["ci_low"] < row["value"] < row["ci_high"] and row["n_assays"] == 217
        assert row["aggregation_label"].startswith("ProteinGym average")
        plain = tidy[tidy.representation == model].groupby("assay")["spearman"].mean().mean()
        assert result.loc[(model, "mean"), "value"] == pytest.approx(plain)
    by_scheme = aggregate.aggregate(tidy, how=("proteingym",), by_scheme=True, n_bootstrap=0
                                    ).set_index(["representation", "scheme"])
    for scheme in SCHEMES:
        assert by_scheme.loc[("Kermut", scheme), "value"] == pytest.approx(
            summary.loc["Kermut", f"Average_Spearman_{scheme}"], abs=1.5e-3)
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


def test_undefined_metrics_are_counted_not_hidden(proteingym_dir, reference):
    tidy = _tidy_from_published(proteingym_dir, reference, models=("Kermut",))
    tidy.loc[tidy.index[:3], "spearman"] = np.nan  # one scheme of three assays
    row = aggregate.aggregate(tidy, how=("mean",), n_bootstrap=0).iloc[0]
    assert row["n_missing"] == 3 and row["n_assays"] == 214
