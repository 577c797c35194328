"""Plotly figures from experiment summaries: one palette, captions, both fit conventions."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from revdistill.experiment.aggregate import aggregate
from revdistill.experiment.protocol import Protocol
from revdistill.proteingym import SCHEMES
from revdistill.views import figures
from revdistill.views.style import COLOURS

MODELS = {"8M": 320, "35M": 480, "150M": 640}


def fake_results(models=MODELS, n_assays: int = 6, seed: int = 0, conventions=("nested",)) -> pd.DataFrame:
    """A results table shaped like run_experiment's (values are random)."""
    rng = np.random.default_rng(seed)
    names, dims = list(models), list(models.values())
    prefix = Protocol().prefix_dims(dims)
    keys = [("", "esm2", m, d) for m, d in models.items()] + [("", "truncated", names[-1], d) for d in prefix]
    for fit_on in conventions:
        keys += [(fit_on, r, m, d) for r in ("rd", "naive") for m, d in models.items()]
        keys += [(fit_on, "nested", names[next(i for i, b in enumerate(dims) if d <= b)], d) for d in prefix]
    rows = []
    for a in range(n_assays):
        for scheme in SCHEMES:
            for fit_on, representation, model, dim in keys:
                rows.append({"assay": f"A{a}", "scheme": scheme, "fit_on": fit_on, "representation": representation,
                             "model": model, "dim": dim, "spearman": 0.2 + dim / 2000 + 0.05 * rng.normal(),
                             "mse": 1 - dim / 2000, "n_variants": 100 + a, "fold_source": "generated",
                             "uniprot_id": f"P{a // 2}", "selection_type": ["Activity", "Stability"][a % 2]})
    return pd.DataFrame(rows)


def test_scaling_figure_with_zero_shot_reference_and_caption(proteingym_dir):
    summary = aggregate(fake_results(), n_bootstrap=100)
    figure = figures.scaling_figure(summary, data_dir=proteingym_dir, caption="protocol p-1\nladder rdl-2")
    names = [trace.name for trace in figure.data]
    assert names == ["ESM-2", "reverse-distilled", "naive concat+PCA",
                     "ESM-2 zero-shot (ProteinGym leaderboard, not a probe)"]
    assert figure.layout.xaxis.type == "log" and figure.layout.xaxis.title.text.startswith("parameters")
    np.testing.assert_allclose(figure.data[0].x, [7.5e6, 34e6, 148e6])
    np.testing.assert_allclose(figure.data[-1].y, [0.226, 0.321, 0.387, 0.414, 0.406, 0.400])
    assert figure.data[-1].line.dash == "dash" and figure.data[0].line.color == COLOURS["esm2"]
    assert figure.data[0].error_y.array is not None and (np.asarray(figure.data[0].error_y.array) >= 0).all()
    assert "ProteinGym average" in figure.layout.title.text and "95%" in figure.layout.title.text
    assert figure.layout.annotations[-1].text == "protocol p-1<br>ladder rdl-2"


def test_both_conventions_are_two_lines_with_their_names():
    summary = aggregate(fake_results(conventions=("nested", "raw")), how=("mean",), n_bootstrap=0)
    figure = figures.scaling_figure(summary, zero_shot=False)
    names = [trace.name for trace in figure.data]
    assert names == ["ESM-2", "reverse-distilled (our fit)", "reverse-distilled (released fit)",
                     "naive concat+PCA (our fit)", "naive concat+PCA (released fit)"]
    assert [trace.line.dash for trace in figure.data[1:3]] == ["solid", "dash"]


def test_scaling_figure_tiny_models_use_dimension():
    summary = aggregate(fake_results({"tiny-32": 32, "tiny-48": 48, "tiny-64": 64}), how=("mean",), n_bootstrap=50)
    figure = figures.scaling_figure(summary, zero_shot=False)
    assert figure.layout.xaxis.title.text.startswith("embedding dimension")
    np.testing.assert_allclose(figure.data[0].x, [32, 48, 64])
    assert "plain mean over assays" in figure.layout.title.text and len(figure.data) == 3


def test_prefix_figure_has_bands_and_points():
    summary = aggregate(fake_results(), how=("proteingym",), n_bootstrap=100)
    figure = figures.prefix_figure(summary)
    names = [trace.name for trace in figure.data]
    assert names == ["reverse-distilled prefix interval", "reverse-distilled prefix",
                     "largest ESM-2 truncated interval", "largest ESM-2 truncated", "ESM-2", "naive concat+PCA"]
    assert list(figure.data[1].x) == Protocol().prefix_dims(list(MODELS.values()))
    assert figure.data[0].fill == "toself" and figure.data[3].line.dash == "dot"


def test_assay_figure_one_panel_per_scheme():
    figure = figures.assay_figure(fake_results(), "A1")
    assert len(figure.layout.annotations) == 3 and "random folds (generated)" in figure.layout.annotations[0].text
    assert len(figure.data) == 3 * 5 and "A1 (101 variants)" in figure.layout.title.text


def test_figure_errors():
    results = fake_results(n_assays=2)
    summary = aggregate(results, how=("mean",), n_bootstrap=0)
    with pytest.raises(ValueError, match="not in the results"):
        figures.assay_figure(results, "nope")
    with pytest.raises(ValueError, match="aggregation='median'"):
        figures.scaling_figure(summary, aggregation="median")
    with pytest.raises(ValueError, match="summary is empty"):
        figures.prefix_figure(summary.iloc[:0])
    with pytest.raises(ValueError, match="x='flops'"):
        figures.scaling_figure(summary, x="flops", zero_shot=False)


def test_lower_panel_shows_the_paired_differences_with_bands_and_zero_line():
    from revdistill.experiment.paired import paired_summary

    results = fake_results()
    summary = aggregate(results, n_bootstrap=100)
    paired = paired_summary(results, n_bootstrap=100)
    figure = figures.scaling_figure(summary, zero_shot=False, paired=paired, caption="protocol p-1")
    upper = [trace for trace in figure.data if trace.yaxis == "y"]
    lower = [trace for trace in figure.data if trace.yaxis == "y2"]
    assert [trace.name for trace in upper] == ["ESM-2", "reverse-distilled", "naive concat+PCA"]
    assert [trace.name for trace in lower] == ["RD − ESM-2 interval", "RD − ESM-2", "RD − naive interval",
                                               "RD − naive"]
    expected = paired[(paired["aggregation"] == "proteingym") & (paired["comparison"] == "rd-esm2")].sort_values("dim")
    np.testing.assert_allclose(lower[1].y, expected["delta"])
    np.testing.assert_allclose(lower[1].x, [7.5e6, 34e6, 148e6])
    np.testing.assert_allclose(lower[0].y, np.concatenate([expected["ci_high"], expected["ci_low"][::-1]]))
    assert lower[0].fill == "toself" and lower[1].line.color == COLOURS["esm2"]
    assert figure.layout.xaxis2.type == "log" and figure.layout.yaxis2.title.text == "paired Δ ρ"
    assert [shape.y0 for shape in figure.layout.shapes] == [0] and figure.layout.annotations[-1].text == "protocol p-1"
    prefix = figures.prefix_figure(summary, paired=paired)
    lower = [trace for trace in prefix.data if trace.yaxis == "y2"]
    truncated = paired[(paired["aggregation"] == "proteingym") & (paired["comparison"] == "prefix-truncated")]
    assert [trace.name for trace in lower] == ["RD prefix − largest ESM-2 truncated interval",
                                               "RD prefix − largest ESM-2 truncated"]
    np.testing.assert_allclose(lower[1].x, truncated.sort_values("dim")["dim"])
    np.testing.assert_allclose(lower[1].y, truncated.sort_values("dim")["delta"])


def test_load_results_through_the_compute_service_draws_the_same_figures_bit_for_bit():
    """The dashboard's "Load results" asks the service (DashboardCompute.results): its figures, sent as plotly
    JSON with base64 typed arrays, decode to exactly the arrays drawn in this process."""
    import io

    import plotly.graph_objects as go

    from revdistill.service.client import LocalCompute
    from revdistill.service.results import DashboardCompute
    from revdistill.views.report import load_results, results_figures

    content = fake_results().to_csv(index=False).encode()
    here = results_figures(load_results(content, name="run.csv"))
    run = DashboardCompute(LocalCompute()).results(content=content, name="run.csv")
    assert (run.name, run.n_assays, run.rows) == ("run.csv", 6, len(fake_results()))
    assert run.sources["paired"].startswith("recomputed")
    compared = 0
    for drawn, sent in zip(here, run.figures, strict=True):
        served = go.Figure(sent)
        assert [trace.name for trace in served.data] == [trace.name for trace in drawn.data]
        for ours, theirs in zip(drawn.data, served.data):
            for key in ("x", "y", "customdata"):
                if ours[key] is None:
                    assert theirs[key] is None
                    continue
                expected, got = np.asarray(ours[key]), np.asarray(theirs[key])
                assert got.shape == expected.shape and np.array_equal(got, expected), (ours.name, key)
                # floats keep their dtype; plotly stores integers in the smallest type that holds them
                assert got.dtype == expected.dtype or got.dtype.kind == expected.dtype.kind == "i", (ours.name, key)
                compared += 1
        assert served.layout.title.text == drawn.layout.title.text
    assert compared > 20
    paired = pd.read_csv(io.StringIO(run.csv["paired"]))
    assert {"comparison", "dim", "delta", "ci_low", "ci_high"} <= set(paired.columns) and len(paired) > 0
