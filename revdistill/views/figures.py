"""Plotly figures of ProteinGym probe results (plotly is imported inside each function).

Every function takes the tidy table of :func:`revdistill.experiment.probe.evaluate_assay` /
:func:`revdistill.experiment.features.run_benchmark` (one row per assay, scheme, representation, model, dim) and
returns a ``plotly.graph_objects.Figure``; pass ``summary=`` (the output of
:func:`revdistill.experiment.aggregate.aggregate`) to reuse bootstrap intervals already computed. Wrap a figure in
``go.FigureWidget(fig)`` for widgets.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from revdistill.experiment.features import REPRESENTATIONS
from revdistill.experiment.aggregate import AGGREGATIONS, aggregate, zero_shot_reference

__all__ = ["scaling_figure", "prefix_figure", "assay_figure", "COLOURS"]

COLOURS = {"esm2": "#1b6ca8", "rd": "#c2492d", "naive": "#5c9e31", "nested": "#c2492d", "zero_shot": "#767676"}
_METRIC_LABEL = {"spearman": "Spearman ρ", "mse": "MSE (standardized)"}
_SCHEME_LABEL = {"fold_random_5": "random", "fold_modulo_5": "modulo", "fold_contiguous_5": "contiguous",
                 "average": "average of 3 schemes"}


def _summary(results, summary, metric, aggregation, n_bootstrap, seed) -> pd.DataFrame:
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation={aggregation!r}; choose from {list(AGGREGATIONS)}")
    if summary is None:
        if results is None or len(results) == 0:
            raise ValueError("results is empty: run the probe first (revdistill.experiment.features.run_benchmark)")
        summary = aggregate(results, metric=metric, how=(aggregation,), n_bootstrap=n_bootstrap, seed=seed)
    chosen = summary[(summary["aggregation"] == aggregation) & (summary["metric"] == metric) & (summary["scheme"] == "average")]
    if chosen.empty:
        raise ValueError(f"summary holds no rows for aggregation={aggregation!r}, metric={metric!r}, scheme='average'")
    return chosen


def _model_x(models: Sequence[str], x: str) -> tuple[dict[str, float], str]:
    """x coordinate per model: parameter count, or embedding dim when a model has no count (tiny family)."""
    from revdistill.esm.models import get_spec

    specs = {m: get_spec(m) for m in models}
    if x == "auto":
        x = "params" if all(s.params > 0 for s in specs.values()) else "dim"
    if x == "params":
        return {m: float(s.params) for m, s in specs.items()}, "parameters (log scale)"
    if x == "dim":
        return {m: float(s.dim) for m, s in specs.items()}, "embedding dimension of the model (log scale)"
    raise ValueError(f"x={x!r}; choose 'auto', 'params' or 'dim'")


def _error_y(frame: pd.DataFrame) -> dict | None:
    if frame["ci_low"].isna().all():
        return None
    return dict(type="data", symmetric=False, array=(frame["ci_high"] - frame["value"]).to_numpy(),
                arrayminus=(frame["value"] - frame["ci_low"]).to_numpy(), thickness=1.2, width=4)


def scaling_figure(
    results: pd.DataFrame | None = None, *, summary: pd.DataFrame | None = None, aggregation: str = "proteingym",
    metric: str = "spearman", representations: Sequence[str] = ("esm2", "rd", "naive"), x: str = "auto",
    zero_shot: bool = True, data_dir=None, n_bootstrap: int = 1000, seed: int = 0, title: str | None = None,
):
    """Metric against model size (log x), one line per representation, bootstrap error bars.

    Parameters
    ----------
    results : DataFrame
        Tidy probe results.
    summary : DataFrame, optional
        Precomputed :func:`~revdistill.experiment.aggregate.aggregate` output (then ``results`` may be None).
    aggregation : {"proteingym", "mean"}
    x : {"auto", "params", "dim"}
        ``auto`` uses parameter counts, or model widths when a model has none (the tiny family).
    zero_shot : bool
        Add ProteinGym's published **zero-shot** ESM-2 Spearman (dashed, labelled zero-shot); only
        drawn for ``metric="spearman"``.
    """
    import plotly.graph_objects as go

    chosen = _summary(results, summary, metric, aggregation, n_bootstrap, seed)
    figure = go.Figure()
    models = list(dict.fromkeys(chosen["model"]))
    xs, x_label = _model_x(models, x)
    for representation in representations:
        frame = chosen[chosen["representation"] == representation].copy()
        if frame.empty:
            continue
        frame["x"] = frame["model"].map(xs)
        frame = frame.sort_values("x")
        figure.add_trace(go.Scatter(
            x=frame["x"], y=frame["value"], mode="lines+markers", name=REPRESENTATIONS.get(representation, representation),
            error_y=_error_y(frame), line=dict(color=COLOURS.get(representation)), text=frame["model"],
            hovertemplate="%{text}: %{y:.3f}<extra>" + REPRESENTATIONS.get(representation, representation) + "</extra>",
        ))
    if zero_shot and metric == "spearman":
        reference = zero_shot_reference(data_dir)
        ref_x, _ = _model_x(list(reference["model"]), "params" if x_label.startswith("parameters") else "dim")
        figure.add_trace(go.Scatter(
            x=reference["model"].map(ref_x), y=reference["spearman"], mode="lines+markers",
            name="ESM-2 zero-shot (ProteinGym leaderboard, not a probe)", text=reference["model"],
            line=dict(color=COLOURS["zero_shot"], dash="dash"), marker=dict(symbol="diamond"),
            hovertemplate="zero-shot %{text}: %{y:.3f}<extra></extra>",
        ))
    figure.update_layout(
        title=title or (f"ProteinGym supervised probe: {_METRIC_LABEL[metric]} vs model size"
                        f"<br><sup>{AGGREGATIONS[aggregation]}; bars: 95% bootstrap CI</sup>"),
        xaxis=dict(type="log", title=x_label), yaxis=dict(title=_METRIC_LABEL[metric]),
        legend=dict(orientation="h", y=-0.2), template="plotly_white",
    )
    return figure


def prefix_figure(
    results: pd.DataFrame | None = None, *, summary: pd.DataFrame | None = None, aggregation: str = "proteingym",
    metric: str = "spearman", representations: Sequence[str] = ("nested", "esm2", "naive"), log_x: bool = False,
    n_bootstrap: int = 1000, seed: int = 0, title: str | None = None,
):
    """Metric against prefix / embedding dimension, one line per representation: the nested prefixes
    with a CI band, ESM-2 and the naive baseline at each level's width with error bars."""
    import plotly.graph_objects as go

    chosen = _summary(results, summary, metric, aggregation, n_bootstrap, seed)
    figure = go.Figure()
    for representation in representations:
        frame = chosen[chosen["representation"] == representation].sort_values("dim")
        if frame.empty:
            continue
        name = REPRESENTATIONS.get(representation, representation)
        colour = COLOURS.get(representation)
        if representation == "nested" and frame["ci_low"].notna().all():
            band_x = np.concatenate([frame["dim"].to_numpy(), frame["dim"].to_numpy()[::-1]])
            band_y = np.concatenate([frame["ci_high"].to_numpy(), frame["ci_low"].to_numpy()[::-1]])
            figure.add_trace(go.Scatter(x=band_x, y=band_y, mode="lines", fill="toself", fillcolor="rgba(194,73,45,0.15)",
                                        line=dict(width=0), hoverinfo="skip", name=f"{name} 95% CI", showlegend=True))
        figure.add_trace(go.Scatter(
            x=frame["dim"], y=frame["value"], mode="lines+markers",
            name=name, line=dict(color=colour), marker=dict(color=colour, size=8 if representation != "nested" else 6),
            error_y=None if representation == "nested" else _error_y(frame), text=frame["model"],
            hovertemplate="dim %{x} (%{text}): %{y:.3f}<extra>" + name + "</extra>",
        ))
    figure.update_layout(
        title=title or (f"{_METRIC_LABEL[metric]} vs embedding dimension"
                        f"<br><sup>{AGGREGATIONS[aggregation]}; band and bars: 95% bootstrap CI</sup>"),
        xaxis=dict(type="log" if log_x else "linear", title="prefix / embedding dimension"),
        yaxis=dict(title=_METRIC_LABEL[metric]), legend=dict(orientation="h", y=-0.2), template="plotly_white",
    )
    return figure


def assay_figure(results: pd.DataFrame, assay: str, *, metric: str = "spearman",
                 representations: Sequence[str] = tuple(REPRESENTATIONS), title: str | None = None):
    """Per-assay drill-down: metric against dimension, one panel per CV scheme, one line per representation."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if metric not in _METRIC_LABEL:
        raise ValueError(f"metric={metric!r}; choose from {list(_METRIC_LABEL)}")
    frame = results[results["assay"] == assay]
    if frame.empty:
        known = sorted(results["assay"].unique())
        raise ValueError(f"assay={assay!r} is not in the results; they hold {known[:10]}")
    schemes = list(dict.fromkeys(frame["scheme"]))
    sources = frame.groupby("scheme")["fold_source"].first() if "fold_source" in frame else {}
    figure = make_subplots(rows=1, cols=len(schemes), shared_yaxes=True, subplot_titles=[
        f"{_SCHEME_LABEL.get(s, s)} folds" + (f" ({sources[s]})" if s in sources else "") for s in schemes])
    for column, scheme in enumerate(schemes, start=1):
        for representation in representations:
            part = frame[(frame["scheme"] == scheme) & (frame["representation"] == representation)].sort_values("dim")
            if part.empty:
                continue
            name = REPRESENTATIONS.get(representation, representation)
            figure.add_trace(go.Scatter(
                x=part["dim"], y=part[metric], mode="lines+markers", name=name, legendgroup=representation,
                showlegend=column == 1,
                line=dict(color=COLOURS.get(representation), dash="dot" if representation == "nested" else None),
                text=part["model"], hovertemplate="dim %{x} (%{text}): %{y:.3f}<extra>" + name + "</extra>",
            ), row=1, col=column)
        figure.update_xaxes(title_text="dimension", row=1, col=column)
    n_variants = int(frame["n_variants"].iloc[0])
    figure.update_yaxes(title_text=_METRIC_LABEL[metric], row=1, col=1)
    figure.update_layout(title=title or f"{assay} ({n_variants} variants)", template="plotly_white",
                         legend=dict(orientation="h", y=-0.25))
    return figure
