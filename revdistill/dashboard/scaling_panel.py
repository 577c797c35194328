"""Panel 5, scaling curves: ESM-2 vs reverse-distilled vs naive, over model size and prefix dimension."""
from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import numpy as np
import pandas as pd

from .curves import scaling_table
from .state import DashboardState
from .widgets import download_link, figure_widget, hint, section_title

__all__ = ["ScalingPanel", "build_scaling_panel", "SIZE_SERIES", "PREFIX_SERIES"]

SIZE_SERIES = (("ESM-2", "#4C78A8"), ("reverse-distilled", "#E45756"), ("naive", "#72B7B2"))
PREFIX_SERIES = (("reverse-distilled", "#E45756"), ("ESM-2 truncated", "#4C78A8"))
REFERENCE_TRACE = 3


def _error_bars(rows: pd.DataFrame) -> dict[str, Any]:
    """Asymmetric plotly error bars from ``low``/``high`` columns."""
    return {"type": "data", "symmetric": False, "visible": True,
            "array": np.nan_to_num(rows["high"].to_numpy() - rows["spearman"].to_numpy()),
            "arrayminus": np.nan_to_num(rows["spearman"].to_numpy() - rows["low"].to_numpy())}


def _width(model: str) -> float:
    """Embedding width of a model: the size axis (the tiny family has no meaningful parameter count)."""
    from revdistill.esm.models import get_spec  # noqa: PLC0415

    return float(get_spec(model).dim)


def _configure_axes(figure: Any) -> None:
    figure.update_xaxes(type="log", title_text="model width = embedding dims (log)", row=1, col=1)
    figure.update_xaxes(title_text="dimensions kept", row=1, col=2)
    figure.update_yaxes(title_text="Spearman ρ", row=1, col=1)


class ScalingPanel:
    """Scaling curves with 95% intervals and ProteinGym's published zero-shot reference.

    Attributes
    ----------
    widget : ipywidgets.VBox
    run : ipywidgets.Button
        Runs the probes (background).
    figure : plotly.graph_objects.FigureWidget
        Left: Spearman vs model width (log x; ESM-2 8M..15B are 320..5120 wide, the tiny family
        32..64). Right: Spearman vs prefix dimension.
    table : pandas.DataFrame or None
        The last computed table (:data:`~.curves.SCALING_COLUMNS`).
    """

    def __init__(self, state: DashboardState) -> None:
        import plotly.graph_objects as go  # noqa: PLC0415

        from revdistill.experiment.aggregate import zero_shot_reference  # noqa: PLC0415

        self.state = state
        self.table: pd.DataFrame | None = None
        self.workspace: Any = None
        reference = zero_shot_reference(state.options.proteingym_dir)
        empty: list[float] = []
        traces = [(go.Scatter(name=f"{name} (probe)", x=empty, y=empty, mode="lines+markers",
                              line={"color": color}), 1, 1) for name, color in SIZE_SERIES]
        traces.append((go.Scatter(
            name="ESM-2 zero-shot, ProteinGym published", x=[_width(m) for m in reference["model"]],
            y=reference["spearman"],
            text=reference["model"], mode="lines+markers+text", textposition="top center",
            line={"color": "#888", "dash": "dash"}, marker={"symbol": "diamond"}), 1, 1))
        traces += [(go.Scatter(name=f"{name} prefix" if name != "ESM-2 truncated" else name, x=empty, y=empty,
                               mode="lines+markers", line={"color": color, "dash": "dot" if i else "solid"}), 1, 2)
                   for i, (name, color) in enumerate(PREFIX_SERIES)]
        self.figure = figure_widget(
            traces, {"height": 430, "legend": {"orientation": "h", "y": -0.22}},
            rows=1, cols=2, subplot_titles=("Spearman vs model size", "Spearman vs prefix dimension"),
            configure=_configure_axes,
        )
        source = str(reference["source"].iloc[0]) if len(reference) else ""
        self.reference_source = f"Reference: {Path(source).name}." if "/" in source else source
        self.run = widgets.Button(description="Compute scaling curves", icon="line-chart", disabled=True,
                                  layout={"width": "220px"})
        self.run.add_class("rd-run-scaling")
        self.status = widgets.Label("Press Compute first.")
        self.status.add_class("rd-scaling-status")
        self.downloads = widgets.HTML("")
        self.prepare_html = widgets.Button(description="Prepare HTML export", disabled=True)
        self.run.on_click(state.guard(self.on_run, "scaling curves"))
        self.prepare_html.on_click(state.guard(self.on_prepare_html, "HTML export"))
        self.widget = widgets.VBox([
            section_title("5 · Scaling curves",
                          "5-fold cross-validated ridge probe on pooled embeddings; bars are 95% "
                          "bootstrap intervals over variants."),
            widgets.HBox([self.run, self.status]),
            self.figure,
            hint("Grey dashed: ProteinGym's published zero-shot ESM-2 Spearman (a different task, for "
                 "scale). PNG: the camera icon in the figure's toolbar. " + self.reference_source),
            widgets.HBox([self.prepare_html, self.downloads]),
        ])
        self.widget.add_class("rd-panel")
        state.on_workspace(self.update)

    def update(self, workspace: Any) -> None:
        """New workspace: clear the curves and enable the button."""
        self.workspace = workspace
        self.table = None
        with self.figure.batch_update():
            for index, trace in enumerate(self.figure.data):
                if index != REFERENCE_TRACE:
                    trace.x, trace.y = [], []
        self.run.disabled = False
        self.prepare_html.disabled = True
        self.downloads.value = ""
        target = workspace.dataset.target
        self.status.value = f"Ready: probe target {target} on {workspace.dataset.name}."

    def on_run(self, _button: Any = None) -> None:
        """Run the probes in the background, then draw."""
        workspace = self.workspace
        if workspace is None:
            raise ValueError("press Compute first: there is no workspace yet")
        self.run.disabled = True
        self.status.value = "probing every representation (background)…"

        def progress(fraction: float, message: str) -> None:
            self.state.call_soon(setattr, self.status, "value", f"{fraction:.0%} · {message}")

        def finally_() -> None:
            self.run.disabled = False

        self.state.run_task("scaling curves", lambda: scaling_table(workspace, progress=progress), self.show,
                            finally_=finally_)

    def show(self, table: pd.DataFrame) -> None:
        """Draw ``table`` and offer it as CSV."""
        self.table = table
        size = table[table["axis"] == "size"]
        prefix = table[table["axis"] == "prefix"].sort_values("dim")
        with self.figure.batch_update():
            for index, (name, _color) in enumerate(SIZE_SERIES):
                rows = size[size["representation"] == name]
                trace = self.figure.data[index]
                trace.x = [_width(model) for model in rows["model"]]
                trace.y = rows["spearman"].to_numpy()
                trace.text = rows["model"].tolist()
                trace.error_y = _error_bars(rows)
            for offset, (name, _color) in enumerate(PREFIX_SERIES):
                rows = prefix[prefix["representation"] == name]
                trace = self.figure.data[REFERENCE_TRACE + 1 + offset]
                trace.x = rows["dim"].to_numpy()
                trace.y = rows["spearman"].to_numpy()
                trace.error_y = _error_bars(rows)
        target = html.escape(str(table["target"].iloc[0])) if len(table) else ""
        self.status.value = f"{len(table)} probes done (target: {target})."
        csv = table.to_csv(index=False).encode()
        self.downloads.value = download_link(csv, "revdistill-scaling.csv", "text/csv", "Download CSV")
        self.prepare_html.disabled = False

    def on_prepare_html(self, _button: Any = None) -> None:
        """Offer the figure as a standalone HTML file (plotly.js inlined: works offline)."""
        import plotly.graph_objects as go  # noqa: PLC0415

        figure = go.Figure(self.figure)
        page = figure.to_html(include_plotlyjs=True, full_html=True).encode()
        csv_link = download_link(self.table.to_csv(index=False).encode(), "revdistill-scaling.csv",
                                 "text/csv", "Download CSV") if self.table is not None else ""
        self.downloads.value = csv_link + " · " + download_link(
            page, "revdistill-scaling.html", "text/html", "Download figure (HTML)")


def build_scaling_panel(state: DashboardState) -> ScalingPanel:
    """Build the scaling curves panel (see :class:`ScalingPanel`)."""
    return ScalingPanel(state)
