"""The mutational landscape: grids of measured and predicted scores, per-position Spearman, the figure."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from revdistill.experiment.probe import spearman
from revdistill.views.landscape import AMINO_ACIDS, decode_array, landscape, landscape_figure, prediction_label

WILD = "MKVLAGHW"


def dms_table(seed: int = 0, drop: int = 20) -> tuple[pd.DataFrame, np.ndarray]:
    """Single mutants of WILD (some left out), with a double mutant and a stop codon to be ignored."""
    rng = np.random.default_rng(seed)
    rows = [(f"{w}{p}{a}", p, w, a, 1) for p, w in enumerate(WILD, start=2) for a in AMINO_ACIDS if a != w]
    keep = np.sort(rng.choice(len(rows), len(rows) - drop, replace=False))
    rows = [rows[i] for i in keep] + [("M2A:K3C", 2, "M", "A", 2), ("K3*", 3, "K", "*", 1)]
    table = pd.DataFrame(rows, columns=["mutant", "position", "wild_type", "mutated_aa", "n_mutations"])
    table["score"] = rng.normal(size=len(table))
    prediction = table["score"].to_numpy() * 0.5 + rng.normal(scale=0.5, size=len(table))
    return table, prediction


def test_grid_holds_every_single_once():
    table, prediction = dms_table()
    scape = landscape(table, prediction)
    singles = table[(table.n_mutations == 1) & table.mutated_aa.isin(list(AMINO_ACIDS))]
    assert scape.n_cells == len(singles) == singles.groupby(["position", "mutated_aa"]).ngroups
    assert scape.positions.tolist() == list(range(2, 2 + len(WILD)))
    assert scape.wild_type == list(WILD)
    for row in singles.itertuples():
        cell = (AMINO_ACIDS.index(row.mutated_aa), row.position - 2)
        assert scape.score[cell] == row.score and scape.mutant[cell] == row.mutant
        assert scape.prediction[cell] == prediction[row.Index]
    assert_allclose(scape.difference, scape.prediction - scape.score, equal_nan=True)
    for position, wild in zip(scape.positions, scape.wild_type):  # the wild type is never a measured cell
        assert np.isnan(scape.score[AMINO_ACIDS.index(wild), position - 2])


def test_per_position_spearman_is_the_probes_spearman_within_each_position():
    table, prediction = dms_table()
    scape = landscape(table, prediction, min_variants=5)
    singles = table.assign(prediction=prediction)
    singles = singles[(singles.n_mutations == 1) & singles.mutated_aa.isin(list(AMINO_ACIDS))]
    for row in scape.per_position.itertuples():
        group = singles[singles.position == row.position]
        assert row.n_variants == len(group)
        assert row.spearman == pytest.approx(spearman(group.prediction.to_numpy(), group.score.to_numpy()))
    few = landscape(table, prediction, min_variants=100).per_position
    assert few["spearman"].isna().all()


def test_figure_has_three_heatmaps_wild_type_marks_and_the_comparison():
    table, prediction = dms_table()
    scape = landscape(table, prediction)
    other = landscape(table, np.zeros(len(table)) + np.arange(len(table)) * 1e-3)
    figure = landscape_figure(scape, prediction_name="rd 150M", compare=other, compare_name="prefix 480",
                              note="random 5-fold CV", title="demo")
    heatmaps = [trace for trace in figure.data if trace.type == "heatmap"]
    assert [trace.name for trace in heatmaps] == ["measured", "predicted", "difference"]
    for trace in heatmaps:
        assert decode_array(trace.z).shape == (20, len(WILD))
    assert int(np.isfinite(decode_array(heatmaps[0].z)).sum()) == scape.n_cells
    assert_allclose(decode_array(heatmaps[2].z), scape.difference, equal_nan=True)
    assert list(heatmaps[0].x) == [f"{w}{p}" for w, p in zip(WILD, range(2, 2 + len(WILD)))]
    assert "%{x}%{y}" in heatmaps[0].hovertemplate and "prediction" in heatmaps[0].hovertemplate  # "M2A"
    assert_allclose(decode_array(heatmaps[1].customdata), scape.score, equal_nan=True)
    assert_allclose(decode_array(heatmaps[2].text), scape.prediction, equal_nan=True)
    marks = [trace for trace in figure.data if trace.name == "wild type"]
    assert len(marks) == 3 and list(marks[0].y) == list(WILD) and list(marks[0].x) == list(heatmaps[0].x)
    names = [trace.name for trace in figure.data if trace.type in ("scatter", "bar")]
    assert {"rd 150M", "prefix 480", "gain over prefix 480"} <= set(names)
    assert any(a.text == "random 5-fold CV" for a in figure.layout.annotations)


def test_labels_and_errors():
    assert prediction_label(("fold_random_5", "nested", "rd", "150M", 640)) == "reverse-distilled 150M (640 dims)"
    prefix = prediction_label(("fold_random_5", "nested", "nested", "35M", 400))
    assert prefix.startswith("reverse-distilled prefix, k = 400")
    table, prediction = dms_table()
    with pytest.raises(ValueError, match="prediction has shape"):
        landscape(table, prediction[:3])
    with pytest.raises(ValueError, match="needs a DMS assay"):
        landscape(pd.DataFrame({"id": ["a"], "score": [1.0]}), np.zeros(1))
