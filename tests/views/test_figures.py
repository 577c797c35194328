"""Plotly figures from the tidy probe table."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from revdistill.views import figures as plots
from revdistill.experiment.features import prefix_dims
from revdistill.experiment.aggregate import aggregate
from revdistill.proteingym import SCHEMES

MODELS = {"8M": 320, "35M": 480, "150M": 640}


def fake_results(models=MODELS, n_assays: int = 6, seed: int = 0) -> pd.DataFrame:
    """A tidy table shaped like run_benchmark's output (values are random)."""
    rng = np.random.default_rng(seed)
    rows = []
    names, dims = list(models), list(models.values())
    keys = [(r, m, d) for r in ("esm2", "rd", "naive") for m, d in models.items()]
    keys += [("nested", names[next(i for i, b in enumerate(dims) if d <= b)], d) for d in prefix_dims(dims)]
    for a in range(n_assays):
        for scheme in SCHEMES:
            for representation, model, dim in keys:
                rows.append({"assay": f"A{a}", "scheme": scheme, "representation": representation, "model": model,
                             "dim": dim, "spearman": 0.2 + dim / 2000 + 0.05 * rng.normal(), "mse": 1 - dim / 2000,
                             "n_variants": 100 + a, "fold_source": "generated", "alpha": 1.0,
                             "uniprot_id": f"P{a // 2}", "selection_type": ["Activity", "Stability"][a % 2]})
    return pd.DataFrame(rows)


def test_scaling_figure_with_zero_shot_reference(proteingym_dir):
    figure = plots.scaling_figure(fake_results(), data_dir=proteingym_dir, n_bootstrap=100)
    names = [trace.name for trace in figure.data]
    assert names == ["ESM-2", "reverse-distilled", "naive concat+PCA", "ESM-2 zero-shot (ProteinGym leaderboard, not a probe)"]
    assert figure.layout.xaxis.type == "log" and figure.layout.xaxis.title.text.startswith("parameters")
    np.testing.assert_allclose(figure.data[0].x, [7.5e6, 34e6, 148e6])
    np.testing.assert_allclose(figure.data[-1].y, [0.226, 0.321, 0.387, 0.414, 0.406, 0.400])
    assert figure.data[-1].line.dash == "dash"
    assert figure.data[0].error_y.array is not None and (np.asarray(figure.data[0].error_y.array) >= 0).all()
    assert "ProteinGym average" in figure.layout.title.text


def test_scaling_figure_tiny_models_use_dimension(proteingym_dir):
    results = fake_results({"tiny-32": 32, "tiny-48": 48, "tiny-64": 64})
    summary = aggregate(results, how=("mean",), n_bootstrap=50)
    figure = plots.scaling_figure(summary=summary, aggregation="mean", zero_shot=False)
    assert figure.layout.xaxis.title.text.startswith("embedding dimension")
    np.testing.assert_allclose(figure.data[0].x, [32, 48, 64])
    assert "plain mean over assays" in figure.layout.title.text and len(figure.data) == 3


def test_prefix_figure_has_band_and_points():
    figure = plots.prefix_figure(fake_results(), n_bootstrap=100)
    names = [trace.name for trace in figure.data]
    assert names == ["reverse-distilled prefix 95% CI", "reverse-distilled prefix", "ESM-2", "naive concat+PCA"]
    assert list(figure.data[1].x) == prefix_dims(list(MODELS.values()))
    assert figure.data[0].fill == "toself"


def test_assay_figure_one_panel_per_scheme():
    figure = plots.assay_figure(fake_results(), "A1")
    assert len(figure.layout.annotations) == 3 and "random folds (generated)" in figure.layout.annotations[0].text
    assert len(figure.data) == 3 * 4 and "A1 (101 variants)" in figure.layout.title.text


def test_plot_errors():
    results = fake_results(n_assays=2)
    with pytest.raises(ValueError, match="not in the results"):
        plots.assay_figure(results, "nope")
    with pytest.raises(ValueError, match="aggregation="):
        plots.scaling_figure(results, aggregation="median")
    with pytest.raises(ValueError, match="results is empty"):
        plots.prefix_figure(results.iloc[:0])
    with pytest.raises(ValueError, match="x="):
        plots.scaling_figure(results, x="flops", zero_shot=False, n_bootstrap=0)
