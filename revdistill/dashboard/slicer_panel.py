"""Panel 3, the Matryoshka slicer: a slider over ``k`` that snaps to level boundaries.

Everything the slider shows is precomputed by :func:`~.curves.slicer_curves`; moving it only moves a
marker and swaps one precomputed ``(n, 2)`` array into the scatter, so a redraw stays well under
200 ms at 5,000 points.
"""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import numpy as np

from .curves import SlicerCurves
from .state import DashboardState
from .widgets import figure_widget, section_title

__all__ = ["SlicerPanel", "build_slicer_panel", "snap_to_boundary"]

MARKER_TRACE = 4
SCATTER_TRACE = 5


def snap_to_boundary(k: int, previous: int, boundaries: tuple[int, ...], fraction: float = 0.03) -> int:
    """Snap ``k`` to a level boundary within ``fraction * D`` when the slider jumped (dragged).

    Single steps (keyboard arrows) are not snapped, so every ``k`` stays reachable.

    Parameters
    ----------
    k, previous : int
        New and previous slider values.
    boundaries : tuple of int
        Cumulative level ends; the last is ``D``.
    fraction : float
        Snap distance as a share of ``D`` (at least 1).
    """
    if abs(int(k) - int(previous)) <= 1:
        return int(k)
    reach = max(1, int(round(fraction * boundaries[-1])))
    nearest = min(boundaries, key=lambda b: abs(b - k))
    return int(nearest) if abs(nearest - k) <= reach else int(k)


def _configure_axes(figure: Any, names: list[dict[str, Any]], target: str) -> None:
    for name in names:
        figure.add_annotation(name)
    figure.update_xaxes(title_text="k (dimensions kept)", row=1, col=1)
    figure.update_yaxes(range=[-0.05, 1.05], title_text=f"probe target: {target}" if target else None,
                        row=1, col=1)


class SlicerPanel:
    """Matryoshka slicer.

    Attributes
    ----------
    widget : ipywidgets.VBox
    slider : ipywidgets.IntSlider
        ``k`` in ``1..D``.
    figure : plotly.graph_objects.FigureWidget
        Left: probe Spearman (reverse-distilled prefix, ESM-2 truncated), nearest-neighbour agreement
        and cosine vs ``k``, with a marker at ``k``. Right: PCA of ``prefix(k)`` coloured by the target.
    readout : ipywidgets.HTML
        The values at ``k``.
    """

    def __init__(self, state: DashboardState) -> None:
        self.state = state
        self.curves: SlicerCurves | None = None
        self._last = 1  # previous slider value, to tell a drag (snapped) from a single step
        self.slider = self._make_slider(None)
        self.readout = widgets.HTML("<span class='rd-hint'>Press Compute to slice an embedding.</span>")
        self.figure = self._make_figure(None, None)
        self.widget = widgets.VBox([
            section_title("3 · Matryoshka slicer",
                          "Keep the first k dimensions of the reverse-distilled embedding; the slider "
                          "snaps to level boundaries."),
            self.slider, self.readout, self.figure,
        ])
        self.widget.add_class("rd-panel")
        state.on_workspace(self.update)

    def _make_slider(self, full: int | None) -> widgets.IntSlider:
        """Slider over ``1..full`` (disabled placeholder when ``full`` is None)."""
        slider = widgets.IntSlider(value=full or 1, min=1, max=full or 2, step=1, description="prefix k",
                                   continuous_update=True, disabled=full is None,
                                   layout={"width": "640px"})
        slider.add_class("rd-slider")
        slider.observe(self.state.guard(self.on_slide, "prefix slider"), names="value")
        return slider

    @staticmethod
    def _make_figure(curves: SlicerCurves | None, table: Any) -> Any:
        """The slicer figure, built with all its data (full embedding selected)."""
        import plotly.graph_objects as go  # noqa: PLC0415

        empty: list[float] = []
        if curves is None:
            ks = rd = esm = nn = dims = cosine = marker = view_x = view_y = colors = empty
            labels: list[str] = []
            target, shapes, names = "", [], []
            marker_y = empty
        else:
            full = int(curves.boundaries[-1])
            ks, rd, esm, nn = curves.ks, curves.spearman_rd, curves.spearman_esm, curves.nn_agreement
            dims, cosine = np.arange(1, full + 1), curves.cosine
            marker, marker_y = [full, full], [-0.05, 1.05]
            view_x, view_y = curves.views[-1, 0], curves.views[-1, 1]
            target = curves.target
            colors = table[target].to_numpy(dtype=np.float64)
            labels = table["label"].astype(str).tolist()
            shapes = [{"type": "line", "x0": b, "x1": b, "y0": 0, "y1": 1, "xref": "x", "yref": "paper",
                       "line": {"color": "#999", "dash": "dot", "width": 1}} for b in curves.boundaries]
            names = [{"x": b, "y": 1.0, "xref": "x", "yref": "y", "text": name, "showarrow": False,
                      "yanchor": "bottom", "font": {"size": 10, "color": "#666"}}
                     for b, name in zip(curves.boundaries, curves.names)]
        figure = figure_widget(
            [(go.Scatter(name="probe ρ, reverse-distilled prefix", x=ks, y=rd, mode="lines+markers",
                         line={"color": "#E45756"}), 1, 1),
             (go.Scatter(name="probe ρ, ESM-2 truncated", x=ks, y=esm, mode="lines+markers",
                         line={"color": "#4C78A8"}), 1, 1),
             (go.Scatter(name="kNN agreement with full", x=ks, y=nn, mode="lines",
                         line={"color": "#54A24B", "dash": "dot"}), 1, 1),
             (go.Scatter(name="cosine(prefix, full)", x=dims, y=cosine, mode="lines",
                         line={"color": "#B279A2", "dash": "dash"}), 1, 1),
             (go.Scatter(name="k", x=marker, y=marker_y, mode="lines", line={"color": "black", "width": 2},
                         showlegend=False, hoverinfo="skip"), 1, 1),
             (go.Scattergl(name="rows", x=view_x, y=view_y, mode="markers", showlegend=False, text=labels,
                           marker={"size": 4, "colorscale": "Viridis", "showscale": True, "color": colors,
                                   "colorbar": {"x": 1.02, "len": 0.8, "title": {"text": target}}},
                           hovertemplate="%{text}<extra></extra>"), 1, 2)],
            {"height": 420, "legend": {"orientation": "h", "y": -0.2}, "shapes": shapes},
            rows=1, cols=2, subplot_titles=("Quality of prefix(k)", "PCA of prefix(k)"),
            column_widths=[0.55, 0.45],
            configure=lambda figure: _configure_axes(figure, names, target),
        )
        return figure

    def update(self, workspace: Any) -> None:
        """Show a workspace's precomputed curves, full embedding selected.

        The figure and the slider are rebuilt with their data rather than changed: a figure created
        with its data always reaches the browser intact, and changing ``max`` of a displayed IntSlider
        leaves the browser's keyboard range at the old maximum (ipywidgets 8).
        """
        curves: SlicerCurves = workspace.cache["slicer"]
        self.curves = curves
        full = int(curves.boundaries[-1])
        self._last = full
        old_slider, old_figure = self.slider, self.figure
        self.slider = self._make_slider(full)
        self.figure = self._make_figure(curves, workspace.dataset.table)
        swap = {id(old_slider): self.slider, id(old_figure): self.figure}
        self.widget.children = tuple(swap.get(id(child), child) for child in self.widget.children)
        old_slider.close()
        old_figure.close()
        self.readout.value = self._readout(full)

    def on_slide(self, change: dict[str, Any]) -> None:
        """Snap, then move the marker and swap in the precomputed view of ``prefix(k)``."""
        if self.curves is None:
            return
        k = int(change["new"])
        snapped = snap_to_boundary(k, self._last, self.curves.boundaries)
        self._last = snapped
        if snapped != k:
            self.slider.value = snapped  # re-enters on_slide with the snapped value
            return
        index = self.curves.grid_index(k)
        view = self.curves.views[index]
        with self.figure.batch_update():  # one message, one redraw
            self.figure.data[MARKER_TRACE].x = [k, k]
            scatter = self.figure.data[SCATTER_TRACE]
            scatter.x, scatter.y = view[0], view[1]  # contiguous rows: sent as binary buffers
        self.readout.value = self._readout(k)

    def _readout(self, k: int) -> str:
        curves = self.curves
        if curves is None:
            return ""
        values = curves.at(k)
        level = curves.names[int(np.searchsorted(curves.boundaries, k))]
        grid_k = int(curves.ks[curves.grid_index(k)])
        shown = "" if grid_k == k else f" (view and probe from the nearest precomputed k={grid_k})"

        def fmt(value: float) -> str:
            return "—" if not np.isfinite(value) else f"{value:.3f}"

        return (f"<div class='rd-readout'><b>k = {k}</b> of {curves.boundaries[-1]} · inside level "
                f"<b>{html.escape(level)}</b>{shown}<br>probe Spearman ({html.escape(curves.target)}): "
                f"reverse-distilled {fmt(values['spearman_rd'])}, ESM-2 truncated "
                f"{fmt(values['spearman_esm'])} · {curves.n_neighbors}-NN agreement with the full "
                f"embedding {fmt(values['nn_agreement'])} · mean cosine(prefix, full) "
                f"{fmt(values['cosine'])}</div>")


def build_slicer_panel(state: DashboardState) -> SlicerPanel:
    """Build the Matryoshka slicer panel (see :class:`SlicerPanel`)."""
    return SlicerPanel(state)
