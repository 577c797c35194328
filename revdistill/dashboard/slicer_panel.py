"""Panel 3, the Matryoshka slicer: a slider over ``k`` that snaps to level boundaries.

Everything the slider shows is precomputed: the views by :func:`revdistill.views.slicer.slicer_views`,
the probe Spearman of every prefix by the experiment (the ``nested`` and ``truncated`` rows of its
summary: the same numbers the scaling panel and the CLI show). Moving it redraws the
*live* figure at once (the marker on the quality curves; the readout): that is cheap whatever the
number of rows. The PCA view of ``prefix(k)`` swaps one precomputed ``(n, 2)`` array into a scatter
(WebGL points up to 10,000 rows, a server-side raster above: :mod:`.points`), which costs a browser
far more to redraw; it lives in its own figure and
is throttled (at most one redraw per :data:`VIEW_INTERVAL_S`, always ending on the last ``k``), so a
drag never queues up redraws and the live figure never waits for it.
"""
from __future__ import annotations

import asyncio
import html
import time
from typing import Any

import ipywidgets as widgets
import numpy as np

from revdistill.views.style import COLOURS

from .points import PointsFigure
from .state import DashboardState
from .widgets import figure_widget, replace_widgets, section_title, subsample_note

__all__ = ["SlicerPanel", "build_slicer_panel", "snap_to_boundary", "probe_curve"]

MARKER_TRACE = 4
VIEW_WIDTH, VIEW_HEIGHT = 520, 440
#: Minimum seconds between two redraws of the PCA view while the slider moves.
VIEW_INTERVAL_S = 0.25


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


def probe_curve(summary: Any, representation: str, fit_on: str) -> tuple[np.ndarray, np.ndarray]:
    """``(dims, Spearman)`` of one prefix curve from an analysis summary, sorted by dim."""
    rows = summary[(summary["representation"] == representation) & (summary["fit_on"].fillna("") == fit_on)]
    rows = rows.sort_values("dim")
    return rows["dim"].to_numpy(dtype=np.float64), rows["value"].to_numpy(dtype=np.float64)


def _interp(dims: np.ndarray, values: np.ndarray, k: int) -> float:
    good = np.isfinite(values)
    if not good.any() or k > dims[good].max() or k < dims[good].min():
        return float("nan")
    return float(np.interp(k, dims[good], values[good]))


def _configure_axes(figure: Any, names: list[dict[str, Any]], target: str) -> None:
    for name in names:
        figure.add_annotation(name)
    figure.update_xaxes(title_text="k (dimensions kept)")
    figure.update_yaxes(range=[-0.05, 1.05], title_text=f"probe target: {target}" if target else None)


class SlicerPanel:
    """Matryoshka slicer.

    Attributes
    ----------
    widget : ipywidgets.VBox
    slider : ipywidgets.IntSlider
        ``k`` in ``1..D``.
    figure : plotly.graph_objects.FigureWidget
        The live figure: probe Spearman (reverse-distilled prefix, ESM-2 truncated), nearest-neighbour
        agreement and cosine vs ``k``, with a marker at ``k``.
    view_figure : plotly.graph_objects.FigureWidget
        PCA of ``prefix(k)`` coloured by the target (throttled redraws).
    readout : ipywidgets.HTML
        The values at ``k``.
    """

    def __init__(self, state: DashboardState) -> None:
        self.state = state
        self.analysis: Any = None
        self._last = 1  # previous slider value, to tell a drag (snapped) from a single step
        self._pending_view: int | None = None
        self._last_view_time = float("-inf")
        self._view_timer: asyncio.TimerHandle | None = None
        self.slider = self._make_slider(None)
        self.readout = widgets.HTML("<span class='rd-hint'>Press Compute to slice an embedding.</span>")
        self.figure = self._make_figure(None)
        self.view = self._make_view(None)
        self.widget = widgets.VBox([
            section_title("3 · Matryoshka slicer",
                          "Keep the first k dimensions of the reverse-distilled embedding; the slider "
                          "snaps to level boundaries."),
            self.slider, self.readout, widgets.HBox([self.figure, self.view_figure]),
        ])
        self.widget.add_class("rd-panel")
        state.on_analysis(self.update)

    @property
    def view_figure(self) -> Any:
        """The PCA view's ``FigureWidget``."""
        return self.view.figure

    @property
    def views(self) -> Any:
        return None if self.analysis is None else self.analysis.views

    def _make_slider(self, full: int | None) -> widgets.IntSlider:
        """Slider over ``1..full`` (disabled placeholder when ``full`` is None)."""
        slider = widgets.IntSlider(value=full or 1, min=1, max=full or 2, step=1, description="prefix k",
                                   continuous_update=True, disabled=full is None,
                                   layout={"width": "640px"})
        slider.add_class("rd-slider")
        slider.observe(self.state.guard(self.on_slide, "prefix slider"), names="value")
        return slider

    @staticmethod
    def _make_figure(analysis: Any) -> Any:
        """The live figure (quality of prefix(k) and the k marker), built with all its data."""
        import plotly.graph_objects as go  # noqa: PLC0415

        empty: list[float] = []
        if analysis is None:
            rd_x = rd = esm_x = esm = ks = nn = dims = cosine = marker = marker_y = empty
            target, shapes, names = "", [], []
        else:
            views = analysis.views
            full = int(views.boundaries[-1])
            rd_x, rd = probe_curve(analysis.summary, "nested", analysis.ladder.fit_on)
            esm_x, esm = probe_curve(analysis.summary, "truncated", "")
            ks, nn = views.ks, views.nn_agreement
            dims, cosine = np.arange(1, full + 1), views.cosine
            marker, marker_y = [full, full], [-0.05, 1.05]
            target = analysis.task.target.split(":")[0]
            shapes = [{"type": "line", "x0": b, "x1": b, "y0": 0, "y1": 1, "xref": "x", "yref": "paper",
                       "line": {"color": "#999", "dash": "dot", "width": 1}} for b in views.boundaries]
            names = [{"x": b, "y": 1.0, "xref": "x", "yref": "y", "text": name, "showarrow": False,
                      "yanchor": "bottom", "font": {"size": 10, "color": "#666"}}
                     for b, name in zip(views.boundaries, views.names)]
        return figure_widget(
            [go.Scatter(name="probe ρ, reverse-distilled prefix", x=rd_x, y=rd, mode="lines+markers",
                        line={"color": COLOURS["nested"]}),
             go.Scatter(name="probe ρ, largest ESM-2 truncated", x=esm_x, y=esm, mode="lines+markers",
                        line={"color": COLOURS["truncated"], "dash": "dot"}),
             go.Scatter(name="kNN agreement with full", x=ks, y=nn, mode="lines",
                        line={"color": "#54A24B", "dash": "dot"}),
             go.Scatter(name="cosine(prefix, full)", x=dims, y=cosine, mode="lines",
                        line={"color": "#B279A2", "dash": "dash"}),
             go.Scatter(name="k", x=marker, y=marker_y, mode="lines", line={"color": "black", "width": 2},
                        showlegend=False, hoverinfo="skip")],
            {"height": 440, "width": 620, "title": {"text": "Quality of prefix(k)"},
             "legend": {"orientation": "h", "y": -0.25}, "shapes": shapes},
            configure=lambda figure: _configure_axes(figure, names, target),
        )

    @staticmethod
    def _make_view(analysis: Any) -> PointsFigure:
        """The PCA view of prefix(k), full embedding selected, built with all its data (WebGL points or a
        raster, by size: see :mod:`.points`)."""
        if analysis is None:
            return PointsFigure([None], colors=np.zeros(0), labels=[], titles=["PCA of prefix(k)"],
                                width=VIEW_WIDTH, height=VIEW_HEIGHT)
        views, table = analysis.views, analysis.task.table
        view = PointsFigure([views.views[-1].T], colors=table["score"].to_numpy(dtype=np.float64),
                            labels=table["label"].astype(str).tolist(), titles=["PCA of prefix(k)"],
                            width=VIEW_WIDTH, height=VIEW_HEIGHT, colorbar={"title": {"text": "score"}})
        extra = subsample_note(analysis.task)
        if extra:
            view.set_note(f"{view.note} · {extra}")
        return view

    def update(self, analysis: Any) -> None:
        """Show an analysis, full embedding selected.

        The figure and the slider are rebuilt with their data rather than changed: a figure created
        with its data always reaches the browser intact, and changing ``max`` of a displayed IntSlider
        leaves the browser's keyboard range at the old maximum (ipywidgets 8).
        """
        self.analysis = analysis
        full = int(analysis.views.boundaries[-1])
        self._last = full
        self._cancel_view_timer()
        self._pending_view = None
        old = (self.slider, self.figure, self.view_figure)
        self.slider = self._make_slider(full)
        self.figure = self._make_figure(analysis)
        self.view = self._make_view(analysis)
        figures = widgets.HBox([self.figure, self.view_figure])
        replace_widgets(self.widget, (self.widget.children[0], self.slider, self.readout, figures), old)
        self.readout.value = self._readout(full)

    def on_slide(self, change: dict[str, Any]) -> None:
        """Snap, then move the marker and swap in the precomputed view of ``prefix(k)``."""
        if self.analysis is None:
            return
        k = int(change["new"])
        snapped = snap_to_boundary(k, self._last, self.views.boundaries)
        self._last = snapped
        if snapped != k:
            self.slider.value = snapped  # re-enters on_slide with the snapped value
            return
        self.figure.data[MARKER_TRACE].x = [k, k]
        self.readout.value = self._readout(k)
        self._request_view(k)

    # -- the throttled PCA view ------------------------------------------------------------------
    def _request_view(self, k: int) -> None:
        """Show ``prefix(k)``'s view now, or once :data:`VIEW_INTERVAL_S` has passed since the last."""
        self._pending_view = k
        if self._view_timer is not None:
            return  # a redraw is already scheduled; it will show the latest k
        wait = self._last_view_time + VIEW_INTERVAL_S - time.monotonic()
        loop = _running_loop()
        if wait <= 0 or loop is None:
            self.show_view()
        else:
            self._view_timer = loop.call_later(wait, self.state.guard(self._on_view_timer, "prefix view"))

    def _on_view_timer(self) -> None:
        self._view_timer = None
        self.show_view()

    def _cancel_view_timer(self) -> None:
        if self._view_timer is not None:
            self._view_timer.cancel()
            self._view_timer = None

    def show_view(self) -> None:
        """Swap the precomputed PCA view of the pending ``prefix(k)`` into the scatter."""
        k, self._pending_view = self._pending_view, None
        if k is None or self.analysis is None:
            return
        view = self.views.views[self.views.grid_index(k)]  # (2, n): rows are contiguous
        self.view.set_points(0, view.T)  # one message, one redraw
        self._last_view_time = time.monotonic()

    def _readout(self, k: int) -> str:
        analysis = self.analysis
        if analysis is None:
            return ""
        views = analysis.views
        level = views.names[int(np.searchsorted(views.boundaries, k))]
        grid_k = int(views.ks[views.grid_index(k)])
        shown = "" if grid_k == k else f" (view from the nearest precomputed k={grid_k})"
        rd = _interp(*probe_curve(analysis.summary, "nested", analysis.ladder.fit_on), k)
        esm = _interp(*probe_curve(analysis.summary, "truncated", ""), k)
        target = analysis.task.target.split(":")[0]

        def fmt(value: float) -> str:
            return "—" if not np.isfinite(value) else f"{value:.3f}"

        return (f"<div class='rd-readout'><b>k = {k}</b> of {views.boundaries[-1]} · inside level "
                f"<b>{html.escape(level)}</b>{shown}<br>probe Spearman ({html.escape(target)}; interpolated "
                f"between probed prefixes): reverse-distilled {fmt(rd)}, largest ESM-2 truncated {fmt(esm)} · "
                f"{views.n_neighbors}-NN agreement with the full embedding {fmt(views.agreement_at(k))} · mean "
                f"cosine(prefix, full) {fmt(float(views.cosine[int(k) - 1]))}</div>")


def _running_loop() -> asyncio.AbstractEventLoop | None:
    """The kernel's event loop when called from a widget callback; None in plain Python."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def build_slicer_panel(state: DashboardState) -> SlicerPanel:
    """Build the Matryoshka slicer panel (see :class:`SlicerPanel`)."""
    return SlicerPanel(state)
