"""Plotly figures of experiment results (plotly is imported inside each function).

Every figure is drawn from a summary (:meth:`revdistill.experiment.pipeline.ExperimentResult.summary`
or :func:`revdistill.experiment.aggregate.aggregate` of a results table) and carries a caption: the
protocol and the ladders that produced the numbers. The dashboard wraps the same figures in
``FigureWidget``; the CLI and notebooks show or export them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from revdistill.views.style import COLOURS, DASH, FIT_ON_LABELS, METRIC_LABELS, SCHEME_LABELS, TEMPLATE, series_name

__all__ = ["scaling_figure", "prefix_figure", "assay_figure", "model_axis", "caption_annotation", "paired_panel"]

#: Height of a figure with the paired-difference panel under it (the dashboard and the report use it).
PAIRED_HEIGHT = 640


def _chosen(summary: pd.DataFrame, aggregation: str | None, metric: str) -> pd.DataFrame:
    if summary is None or len(summary) == 0:
        raise ValueError("summary is empty: run the experiment first (revdistill.experiment.pipeline.run_experiment)")
    chosen = summary[(summary["metric"] == metric) & (summary["scheme"] == "average")]
    if aggregation is not None:
        chosen = chosen[chosen["aggregation"] == aggregation]
    elif chosen["aggregation"].nunique() > 1:
        chosen = chosen[chosen["aggregation"] == chosen["aggregation"].iloc[0]]
    if chosen.empty:
        raise ValueError(f"summary holds no rows for aggregation={aggregation!r}, metric={metric!r}, "
                         f"scheme='average' (it has {sorted(summary['aggregation'].unique())})")
    if "fit_on" not in chosen.columns:
        chosen = chosen.assign(fit_on="")
    return chosen.assign(fit_on=chosen["fit_on"].fillna(""))


def model_axis(models: Sequence[str], x: str = "auto") -> tuple[dict[str, float], str]:
    """x coordinate per model: parameter count, or embedding dim when a model has none (tiny family)."""
    from revdistill.esm.models.registry import get_spec  # noqa: PLC0415

    specs = {m: get_spec(m) for m in models}
    if x == "auto":
        x = "params" if all(s.params > 0 for s in specs.values()) else "dim"
    if x == "params":
        return {m: float(s.params) for m, s in specs.items()}, "parameters (log scale)"
    elif x == "dim":
        return {m: float(s.dim) for m, s in specs.items()}, "embedding dimension of the model (log scale)"
    else:
        raise ValueError(f"x={x!r}; choose 'auto', 'params' or 'dim'")


def _error_y(frame: pd.DataFrame) -> dict | None:
    if frame["ci_low"].isna().all():
        return None
    return dict(type="data", symmetric=False, array=np.nan_to_num(frame["ci_high"] - frame["value"]).tolist(),
                arrayminus=np.nan_to_num(frame["value"] - frame["ci_low"]).tolist(), thickness=1.2, width=4)


def caption_annotation(figure, caption: str) -> None:
    """Put ``caption`` (the protocol and ladders) under the plot, small, wrapped at ``<br>``."""
    if caption:
        figure.add_annotation(text=caption.replace("\n", "<br>"), xref="paper", yref="paper", x=0, y=-0.32,
                              xanchor="left", yanchor="top", showarrow=False, align="left",
                              font=dict(size=9, color="#555"))
        figure.update_layout(margin=dict(b=150))


def scaling_figure(summary: pd.DataFrame, *, caption: str = "", aggregation: str | None = None,
                   metric: str = "spearman", representations: Sequence[str] = ("esm2", "rd", "naive"),
                   x: str = "auto", zero_shot: bool = True, data_dir=None, title: str | None = None,
                   paired: pd.DataFrame | None = None):
    """Metric against model size (log x), one line per representation and fit convention, with intervals;
    with ``paired``, a lower panel of the paired differences RD − ESM-2 and RD − naive and their bands.

    Parameters
    ----------
    summary : DataFrame
        ``ExperimentResult.summary()`` or :func:`~revdistill.experiment.aggregate.aggregate`.
    caption : str
        ``ExperimentResult.caption()``: shown under the plot.
    aggregation : str, optional
        Which aggregation of ``summary`` (default: its first).
    x : {"auto", "params", "dim"}
        ``auto`` uses parameter counts, or model widths when a model has none (the tiny family).
    zero_shot : bool
        Add ProteinGym's published **zero-shot** ESM-2 Spearman (dashed grey, labelled zero-shot;
        ``metric="spearman"`` only).
    paired : DataFrame, optional
        :func:`~revdistill.experiment.paired.paired_summary` (or ``ExperimentResult.paired()``) of the
        same results: the lower panel (``metric="spearman"`` only).
    """
    import plotly.graph_objects as go  # noqa: PLC0415

    from revdistill.experiment.aggregate import zero_shot_reference  # noqa: PLC0415

    chosen = _chosen(summary, aggregation, metric)
    both = chosen.loc[chosen["fit_on"] != "", "fit_on"].nunique() > 1
    figure = go.Figure()
    xs, x_label = model_axis(list(dict.fromkeys(chosen["model"])), x)
    for representation in representations:
        for fit_on, frame in chosen[chosen["representation"] == representation].groupby("fit_on", sort=False):
            if representation == "esm2" and fit_on:
                continue
            frame = frame.assign(x=frame["model"].map(xs)).sort_values("x")
            name = series_name(representation, fit_on, both)
            figure.add_trace(go.Scatter(
                x=frame["x"], y=frame["value"], mode="lines+markers", name=name, error_y=_error_y(frame),
                line=dict(color=COLOURS.get(representation), dash=DASH.get(fit_on, "solid")), text=frame["model"],
                hovertemplate="%{text}: %{y:.3f}<extra>" + name + "</extra>"))
    if zero_shot and metric == "spearman":
        reference = zero_shot_reference(data_dir)
        ref_x, _ = model_axis(list(reference["model"]), "params" if x_label.startswith("parameters") else "dim")
        figure.add_trace(go.Scatter(
            x=reference["model"].map(ref_x), y=reference["spearman"], mode="lines+markers",
            name="ESM-2 zero-shot (ProteinGym leaderboard, not a probe)", text=reference["model"],
            line=dict(color=COLOURS["zero_shot"], dash="dash"), marker=dict(symbol="diamond"),
            hovertemplate="zero-shot %{text}: %{y:.3f}<extra></extra>"))
    interval = chosen["interval"].iloc[0] if "interval" in chosen else "bootstrap"
    figure.update_layout(
        title=title or (f"{METRIC_LABELS[metric]} vs model size<br><sup>{chosen['aggregation_label'].iloc[0]}; "
                        f"bars: {int(round(100 * chosen['coverage'].iloc[0]))}% {interval}</sup>"),
        xaxis=dict(type="log", title=x_label), yaxis=dict(title=METRIC_LABELS[metric]),
        legend=dict(orientation="h", y=-0.18), template=TEMPLATE)
    if paired is not None and metric == "spearman":
        figure = paired_panel(figure, paired, ("rd-esm2", "rd-naive"), lambda frame: frame["model"].map(xs),
                              chosen["aggregation"].iloc[0])
    caption_annotation(figure, caption)
    return figure


def paired_panel(figure, paired: pd.DataFrame, comparisons: Sequence[str], x_of, aggregation: str | None = None):
    """``figure`` with a lower panel: the paired differences ``comparisons`` (one line per fit convention)
    with their interval bands and a zero line, sharing the upper panel's x axis.

    Parameters
    ----------
    figure : plotly.graph_objects.Figure
        One panel (what :func:`scaling_figure` / :func:`prefix_figure` draw).
    paired : DataFrame
        :func:`~revdistill.experiment.paired.paired_summary`.
    comparisons : sequence of str
        Keys of :data:`~revdistill.experiment.paired.COMPARISONS`.
    x_of : callable
        ``x_of(rows) -> x`` positions of paired rows on the upper panel's axis.
    aggregation : str, optional
        Which aggregation of ``paired`` (default: the upper panel's when present, else the first).

    Returns
    -------
    plotly.graph_objects.Figure
        A new two-row figure (the upper panel's traces and layout, then the differences).
    """
    import plotly.graph_objects as go  # noqa: PLC0415
    from plotly.subplots import make_subplots  # noqa: PLC0415

    from revdistill.views.style import PAIRED_COLOURS  # noqa: PLC0415

    if paired is None or len(paired) == 0:
        return figure
    if aggregation not in set(paired["aggregation"]):
        aggregation = paired["aggregation"].iloc[0]
    chosen = paired[(paired["aggregation"] == aggregation) & paired["comparison"].isin(comparisons)]
    chosen = chosen.assign(fit_on=chosen["fit_on"].fillna("").astype(str))
    both = chosen.loc[chosen["fit_on"] != "", "fit_on"].nunique() > 1
    combined = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.68, 0.32], vertical_spacing=0.05)
    for trace in figure.data:
        combined.add_trace(trace, row=1, col=1)
    combined.update_layout(figure.layout)
    combined.update_layout(height=PAIRED_HEIGHT)
    combined.update_xaxes(type=figure.layout.xaxis.type, row=2, col=1)
    combined.update_xaxes(title_text=None, row=1, col=1)
    combined.update_xaxes(title_text=figure.layout.xaxis.title.text, row=2, col=1)
    for comparison in comparisons:
        for fit_on, frame in chosen[chosen["comparison"] == comparison].groupby("fit_on", sort=False):
            frame = frame.assign(x=np.asarray(x_of(frame), dtype=float)).sort_values("x")
            label = frame["comparison_label"].iloc[0]
            name = f"{label} ({FIT_ON_LABELS.get(fit_on, fit_on)})" if both and fit_on else label
            colour = PAIRED_COLOURS.get(comparison)
            if frame["ci_low"].notna().all():
                combined.add_trace(go.Scatter(
                    x=np.concatenate([frame["x"], frame["x"][::-1]]),
                    y=np.concatenate([frame["ci_high"], frame["ci_low"][::-1]]), mode="lines", fill="toself",
                    opacity=0.18, fillcolor=colour, line=dict(width=0), hoverinfo="skip", name=f"{name} interval",
                    showlegend=False), row=2, col=1)
            combined.add_trace(go.Scatter(
                x=frame["x"], y=frame["delta"], mode="lines+markers", name=name, customdata=np.stack(
                    [frame["wins"], frame["losses"], frame["n_assays"]], axis=1), text=frame["model"],
                line=dict(color=colour, dash=DASH.get(fit_on, "solid")), marker=dict(symbol="square", size=6),
                hovertemplate="%{text}: %{y:+.3f} (wins %{customdata[0]}, losses %{customdata[1]} of "
                              "%{customdata[2]})<extra>" + name + "</extra>"), row=2, col=1)
    combined.add_hline(y=0, line=dict(color="#888", width=1), row=2, col=1)  # after the traces: on a drawn panel
    combined.update_yaxes(title_text="paired Δ ρ", zeroline=True, row=2, col=1)
    return combined


def prefix_figure(summary: pd.DataFrame, *, caption: str = "", aggregation: str | None = None,
                  metric: str = "spearman", representations: Sequence[str] = ("nested", "truncated", "esm2", "naive"),
                  log_x: bool = False, title: str | None = None, paired: pd.DataFrame | None = None):
    """Metric against prefix / embedding dimension: the nested prefixes (per fit convention) and the
    largest model truncated with interval bands, ESM-2 and the naive baseline at each level's width;
    with ``paired`` (:func:`~revdistill.experiment.paired.paired_summary`), a lower panel of the paired
    difference RD prefix − truncated and its band."""
    import plotly.graph_objects as go  # noqa: PLC0415

    chosen = _chosen(summary, aggregation, metric)
    both = chosen.loc[chosen["fit_on"] != "", "fit_on"].nunique() > 1
    figure = go.Figure()
    for representation in representations:
        for fit_on, frame in chosen[chosen["representation"] == representation].groupby("fit_on", sort=False):
            frame = frame.sort_values("dim")
            name = series_name(representation, fit_on, both)
            colour = COLOURS.get(representation)
            curve = representation in ("nested", "truncated")
            if curve and frame["ci_low"].notna().all():
                band_x = np.concatenate([frame["dim"].to_numpy(), frame["dim"].to_numpy()[::-1]])
                band_y = np.concatenate([frame["ci_high"].to_numpy(), frame["ci_low"].to_numpy()[::-1]])
                figure.add_trace(go.Scatter(x=band_x, y=band_y, mode="lines", fill="toself", opacity=0.15,
                                            fillcolor=colour, line=dict(width=0), hoverinfo="skip",
                                            name=f"{name} interval", showlegend=False))
            dash = DASH["truncated"] if representation == "truncated" else DASH.get(fit_on, "solid")
            figure.add_trace(go.Scatter(
                x=frame["dim"], y=frame["value"], mode="lines+markers", name=name,
                line=dict(color=colour, dash=dash), marker=dict(color=colour, size=6 if curve else 9),
                error_y=None if curve else _error_y(frame), text=frame["model"],
                hovertemplate="dim %{x} (%{text}): %{y:.3f}<extra>" + name + "</extra>"))
    figure.update_layout(
        title=title or (f"{METRIC_LABELS[metric]} vs embedding dimension<br><sup>"
                        f"{chosen['aggregation_label'].iloc[0]}; bands and bars: intervals</sup>"),
        xaxis=dict(type="log" if log_x else "linear", title="prefix / embedding dimension"),
        yaxis=dict(title=METRIC_LABELS[metric]), legend=dict(orientation="h", y=-0.18), template=TEMPLATE)
    if paired is not None and metric == "spearman":
        figure = paired_panel(figure, paired, ("prefix-truncated",), lambda frame: frame["dim"],
                              chosen["aggregation"].iloc[0])
    caption_annotation(figure, caption)
    return figure


def assay_figure(results: pd.DataFrame, assay: str, *, metric: str = "spearman",
                 representations: Sequence[str] = ("esm2", "rd", "naive", "nested", "truncated"),
                 title: str | None = None):
    """Per-assay drill-down from the results table: metric against dimension, one panel per CV scheme."""
    import plotly.graph_objects as go  # noqa: PLC0415
    from plotly.subplots import make_subplots  # noqa: PLC0415

    if metric not in METRIC_LABELS:
        raise ValueError(f"metric={metric!r}; choose from {list(METRIC_LABELS)}")
    frame = results[results["assay"] == assay]
    if frame.empty:
        known = sorted(results["assay"].unique())
        raise ValueError(f"assay={assay!r} is not in the results; they hold {known[:10]}")
    frame = frame.assign(fit_on=frame["fit_on"].fillna("") if "fit_on" in frame else "")
    both = frame.loc[frame["fit_on"] != "", "fit_on"].nunique() > 1
    schemes = list(dict.fromkeys(frame["scheme"]))
    sources = frame.groupby("scheme")["fold_source"].first() if "fold_source" in frame else {}
    figure = make_subplots(rows=1, cols=len(schemes), shared_yaxes=True, subplot_titles=[
        f"{SCHEME_LABELS.get(s, s)} folds" + (f" ({sources[s]})" if s in sources else "") for s in schemes])
    for column, scheme in enumerate(schemes, start=1):
        for representation in representations:
            part = frame[(frame["scheme"] == scheme) & (frame["representation"] == representation)]
            for fit_on, series in part.groupby("fit_on", sort=False):
                series = series.sort_values("dim")
                name = series_name(representation, fit_on, both)
                dash = DASH["truncated"] if representation == "truncated" else DASH.get(fit_on, "solid")
                figure.add_trace(go.Scatter(
                    x=series["dim"], y=series[metric], mode="lines+markers", name=name,
                    legendgroup=name, showlegend=column == 1,
                    line=dict(color=COLOURS.get(representation), dash=dash), text=series["model"],
                    hovertemplate="dim %{x} (%{text}): %{y:.3f}<extra>" + name + "</extra>"), row=1, col=column)
        figure.update_xaxes(title_text="dimension", row=1, col=column)
    figure.update_yaxes(title_text=METRIC_LABELS[metric], row=1, col=1)
    figure.update_layout(title=title or f"{assay} ({int(frame['n_variants'].iloc[0])} variants)",
                         template=TEMPLATE, legend=dict(orientation="h", y=-0.25))
    return figure
