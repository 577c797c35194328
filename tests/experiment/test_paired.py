"""Paired differences RD − ESM-2 / RD − naive / RD prefix − truncated, with paired intervals."""
from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from revdistill.experiment.paired import (PAIRED_COLUMNS, paired_differences, paired_summary, read_summary,
                                         summary_path, write_summary)

SCHEMES = ("fold_random_5", "fold_modulo_5", "fold_contiguous_5")
DIMS = {"a": 32, "b": 48, "c": 64}


def _table(esm2: np.ndarray, rd: np.ndarray, naive: np.ndarray | None = None, fit_on: str = "nested") -> pd.DataFrame:
    """A results table of ``n_assays`` assays: ``esm2[i, s, level]`` and ``rd[i, s, level]`` Spearman values."""
    rows = []
    n_assays = esm2.shape[0]
    for i in range(n_assays):
        for s, scheme in enumerate(SCHEMES):
            for level, (model, dim) in enumerate(DIMS.items()):
                common = {"assay": f"A{i}", "scheme": scheme, "model": model, "dim": dim,
                          "uniprot_id": f"U{i // 2}", "selection_type": ("Activity", "Stability", "Binding")[i % 3],
                          "protocol_id": "p-x"}
                rows.append({**common, "fit_on": "", "representation": "esm2", "spearman": esm2[i, s, level],
                             "ladder_id": ""})
                rows.append({**common, "fit_on": fit_on, "representation": "rd", "spearman": rd[i, s, level],
                             "ladder_id": "rdl-1"})
                if naive is not None:
                    rows.append({**common, "fit_on": fit_on, "representation": "naive",
                                 "spearman": naive[i, s, level], "ladder_id": "rdl-1"})
    return pd.DataFrame(rows)


def test_identical_members_give_zero_and_a_zero_interval():
    esm2 = np.random.default_rng(0).uniform(0.1, 0.6, size=(12, 3, 3))
    summary = paired_summary(_table(esm2, esm2.copy()), n_bootstrap=300)
    assert list(summary.columns) == list(PAIRED_COLUMNS)
    assert set(summary["comparison"]) == {"rd-esm2"} and set(summary["aggregation"]) == {"proteingym", "mean"}
    assert (summary["delta"] == 0).all() and (summary["ci_low"] == 0).all() and (summary["ci_high"] == 0).all()
    assert (summary["wins"] == 0).all() and (summary["losses"] == 0).all() and (summary["ties"] == 12).all()
    assert (summary["n_assays"] == 12).all() and set(summary["dim"]) == set(DIMS.values())


def test_a_known_shift_is_covered_by_the_interval():
    rng = np.random.default_rng(1)
    esm2 = rng.uniform(0.1, 0.6, size=(40, 3, 3))
    noise = rng.normal(0, 0.02, size=esm2.shape)
    rd = esm2 + 0.05 + (noise - noise.mean(axis=(0, 1)))  # exactly +0.05 on average over assays and schemes
    summary = paired_summary(_table(esm2, rd), n_bootstrap=500)
    mean = summary[summary["aggregation"] == "mean"]
    np.testing.assert_allclose(mean["delta"], 0.05, atol=1e-12)
    proteingym = summary[summary["aggregation"] == "proteingym"]
    assert ((proteingym["ci_low"] < 0.05) & (0.05 < proteingym["ci_high"])).all()
    assert ((summary["ci_low"] < summary["delta"]) & (summary["delta"] < summary["ci_high"])).all()
    assert (summary["ci_low"] > 0).all() and (summary["wins"] == 40).all()


def test_the_proteingym_delta_is_the_difference_of_proteingym_averages():
    from revdistill.experiment.aggregate import aggregate

    rng = np.random.default_rng(2)
    esm2 = rng.uniform(0.1, 0.6, size=(9, 3, 3))
    rd = rng.uniform(0.1, 0.6, size=(9, 3, 3))
    table = _table(esm2, rd)
    summary = paired_summary(table, n_bootstrap=0)
    values = aggregate(table, how=("proteingym",), n_bootstrap=0).set_index(["representation", "dim"])["value"]
    got = summary[summary["aggregation"] == "proteingym"].set_index("dim")["delta"]
    for dim in DIMS.values():
        assert got[dim] == pytest.approx(values[("rd", dim)] - values[("esm2", dim)], abs=1e-12)
    assert summary["ci_low"].isna().all()


def test_wins_losses_and_ties_are_counted_per_assay_after_averaging_schemes():
    esm2 = np.full((5, 3, 3), 0.3)
    rd = esm2.copy()
    rd[0] += 0.1                                   # win
    rd[1] += 0.2                                   # win
    rd[2] -= 0.1                                   # loss
    rd[3, :, :] += np.array([0.1, -0.1, 0.0])[:, None]  # schemes cancel: tie
    rd[4, 0] += 0.3                                # one scheme up: win
    summary = paired_summary(_table(esm2, rd), n_bootstrap=50)
    assert (summary["wins"] == 3).all() and (summary["losses"] == 1).all() and (summary["ties"] == 1).all()


def test_naive_and_prefix_comparisons_pair_the_right_rows():
    esm2 = np.full((3, 3, 3), 0.2)
    table = _table(esm2, esm2 + 0.1, naive=esm2 + 0.04, fit_on="raw")
    prefix = table[table["representation"] == "rd"].assign(representation="nested")
    truncated = table[table["representation"] == "esm2"].assign(representation="truncated", model="c",
                                                                spearman=0.25)
    table = pd.concat([table, prefix, truncated], ignore_index=True)
    summary = paired_summary(table, n_bootstrap=0, how=("mean",)).set_index(["comparison", "dim"])
    np.testing.assert_allclose(summary.loc["rd-naive", "delta"], 0.06)
    np.testing.assert_allclose(summary.loc["rd-esm2", "delta"], 0.1)
    np.testing.assert_allclose(summary.loc["prefix-truncated", "delta"], 0.05)
    assert set(summary["fit_on"]) == {"raw"} and set(summary.loc["prefix-truncated", "model"]) == set(DIMS)
    differences = paired_differences(table)
    assert set(differences.loc[differences["comparison"] == "prefix-truncated", "second_model"]) == {"c"}


def _one_assay(n: int = 1500, seed: int = 3):
    """Scores, two predictions (noise 0.6 and 1.2) and the table of their Spearman values per scheme."""
    rng = np.random.default_rng(seed)
    scores = rng.normal(size=n)
    good, bad = scores + 0.6 * rng.normal(size=n), scores + 1.2 * rng.normal(size=n)
    predictions, rows = {}, []
    for scheme in SCHEMES:
        for representation, fit_on, values in (("esm2", "", bad), ("rd", "nested", good)):
            predictions[(scheme, fit_on, representation, "b", 48)] = values
            rows.append({"assay": "one", "scheme": scheme, "fit_on": fit_on, "representation": representation,
                         "model": "b", "dim": 48, "spearman": spearmanr(values, scores)[0]})
    return scores, good, bad, predictions, pd.DataFrame(rows)


def _population_spearman(noise: float) -> float:
    pearson = 1 / np.sqrt(1 + noise ** 2)
    return 6 / np.pi * np.arcsin(pearson / 2)


def test_one_assay_resamples_variants_with_predictions_fixed():
    scores, good, bad, predictions, table = _one_assay()
    summary = paired_summary(table, {"one": (scores, predictions)}, n_bootstrap=400)
    row = summary.iloc[0]
    assert len(summary) == 1 and row["aggregation"] == "single assay" and row["n_assays"] == 1
    assert row["delta"] == pytest.approx(spearmanr(good, scores)[0] - spearmanr(bad, scores)[0], abs=1e-12)
    truth = _population_spearman(0.6) - _population_spearman(1.2)
    assert row["ci_low"] < truth < row["ci_high"] and row["ci_low"] > 0
    assert row["wins"] == 1 and row["losses"] == 0 and "variants" in row["interval"]


def test_one_assay_with_identical_predictions_has_a_zero_interval():
    scores, good, _, predictions, table = _one_assay(n=300)
    same = {key: good for key in predictions}
    table["spearman"] = spearmanr(good, scores)[0]
    row = paired_summary(table, {"one": (scores, same)}, n_bootstrap=200).iloc[0]
    assert (row["delta"], row["ci_low"], row["ci_high"]) == (0.0, 0.0, 0.0)
    assert (row["wins"], row["losses"], row["ties"]) == (0, 0, 1)


def test_one_assay_without_predictions_has_no_interval_and_missing_ones_are_named():
    scores, _, _, predictions, table = _one_assay(n=200)
    row = paired_summary(table).iloc[0]
    assert np.isnan(row["ci_low"]) and "without its predictions" in row["interval"]
    del predictions[("fold_modulo_5", "", "esm2", "b", 48)]
    with pytest.raises(ValueError, match=r"variants\['one'\] has no out-of-fold predictions for \('fold_modulo_5'"):
        paired_summary(table, {"one": (scores, predictions)}, n_bootstrap=10)


def test_same_seed_same_bytes(tmp_path):
    rng = np.random.default_rng(4)
    table = _table(rng.uniform(size=(8, 3, 3)), rng.uniform(size=(8, 3, 3)))
    first = write_summary(tmp_path / "a" / "run.csv", table, n_bootstrap=200)
    assert first == summary_path(tmp_path / "a" / "run.csv") == tmp_path / "a" / "run.summary.csv"
    second = write_summary(tmp_path / "b" / "run.csv", table, n_bootstrap=200)
    digest = [hashlib.sha256(path.read_bytes()).hexdigest() for path in (first, second)]
    assert digest[0] == digest[1]
    pd.testing.assert_frame_equal(read_summary(first), paired_summary(table, n_bootstrap=200), check_dtype=False)
    other = paired_summary(table, n_bootstrap=200, seed=1)
    assert not np.array_equal(other["ci_low"], pd.read_csv(first)["ci_low"])
    scores, _, _, predictions, one = _one_assay(n=300)
    runs = [paired_summary(one, {"one": (scores, predictions)}, n_bootstrap=100).to_csv(index=False)
            for _ in range(2)]
    assert runs[0] == runs[1]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['spearman'\]"):
        paired_summary(pd.DataFrame({"assay": [], "scheme": [], "representation": [], "model": [], "dim": []}))
    with pytest.raises(ValueError, match="n_bootstrap=-1 must be an integer >= 0"):
        paired_summary(pd.DataFrame(), n_bootstrap=-1)
