"""Panel 4, subspace UMAP: a prefix or the block a model adds, as PCA at once and UMAP in background.

Both projections are computed by the compute service (UMAP compiled once per server, results cached on
disk and shared by every visitor); the kernel receives the coordinates and draws them.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import ipywidgets as widgets
import numpy as np

from .data import color_options
from .points import PointsFigure
from .state import DashboardState
from .widgets import Throttle, hint, replace_widgets, section_title, subsample_note

__all__ = ["UmapPanel", "build_umap_panel", "subspace_options", "color_values"]

PCA_TRACE = 0
UMAP_TRACE = 1
TITLES = ("PCA (instant)", "UMAP (background, cached)")
WIDTH, HEIGHT = 1100, 440


def subspace_options(levels: Any) -> list[tuple[str, str]]:
    """Dropdown options: every level's prefix, then every block a larger model adds.

    Parameters
    ----------
    levels : AnalysisResult or NestedEmbedding
        Anything with the nested embedding's ``names`` and ``boundaries``.

    Returns
    -------
    list of (label, key)
        ``key`` is ``"prefix:<k>"`` or ``"block:<level>"`` (what the compute service projects).
    """
    options = [(f"prefix {end} = {name} level", f"prefix:{end}")
               for name, end in zip(levels.names, levels.boundaries)]
    for start, end, name in zip(levels.boundaries[:-1], levels.boundaries[1:], levels.names[1:]):
        options.append((f"block {name}: dims {start + 1}–{end} (what {name} adds)", f"block:{name}"))
    return options


def color_values(table: Any, column: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Numeric marker colours for ``column`` and the colour-bar settings (categories get tick labels)."""
    values = table[column]
    if values.dtype.kind in "biuf":
        return values.to_numpy(dtype=np.float64), {"title": {"text": column}, "tickvals": None, "ticktext": None}
    categories = sorted(values.astype(str).unique())
    codes = values.astype(str).map({c: i for i, c in enumerate(categories)}).to_numpy(dtype=np.float64)
    return codes, {"title": {"text": column}, "tickvals": list(range(len(categories))), "ticktext": categories}


class UmapPanel:
    """Subspace views.

    Attributes
    ----------
    widget : ipywidgets.VBox
    subspace, color : ipywidgets.Dropdown
    run_umap : ipywidgets.Button
        Starts the UMAP in the background (results cached on disk; a cached one shows at once).
    view : PointsFigure
        PCA (left) and UMAP (right) of the chosen subspace; WebGL points or rasters by size (:mod:`.points`).
    figure : plotly.graph_objects.FigureWidget
        ``view.figure``.
    """

    def __init__(self, state: DashboardState, warm_up: bool = True) -> None:
        self.state = state
        self.analysis: Any = None
        self._ready, self._umap_note, self._base_note = False, "", ""
        self._filling = False  # set while the dropdowns are refilled: their callbacks then do nothing
        self.subspace = widgets.Dropdown(options=[("—", "")], description="Subspace", disabled=True,
                                         layout={"width": "420px"})
        self.subspace.add_class("rd-subspace")
        self.color = widgets.Dropdown(options=[("—", "")], description="Colour by", disabled=True,
                                      layout={"width": "260px"})
        self.run_umap = widgets.Button(description="Compute UMAP", icon="braille", disabled=True)
        self.run_umap.add_class("rd-run-umap")
        self.status = widgets.Label("")
        self.status.add_class("rd-umap-status")
        self.engine = widgets.HTML(self._engine_html())
        self.engine.add_class("rd-umap-engine")
        if warm_up:
            self._watch_warm_up()
        self.view = PointsFigure([None, None], colors=np.zeros(0), labels=[], titles=TITLES, width=WIDTH,
                                 height=HEIGHT)
        self.subspace.observe(state.guard(self.on_subspace, "subspace"), names="value")
        self.color.observe(state.guard(self.on_color, "colour"), names="value")
        self.run_umap.on_click(state.guard(self.on_run_umap, "Compute UMAP"))
        self.widget = widgets.VBox([
            section_title("4 · Subspace UMAP",
                          "A prefix, or the block of dimensions a larger model adds beyond the smaller ones."),
            widgets.HBox([self.subspace, self.color]),
            widgets.HBox([self.run_umap, self.status]),
            self.engine,
            hint("Hover a point to see its mutant / sequence id."),
            self.view.figure,
        ])
        self.widget.add_class("rd-panel")
        state.on_analysis(self.update)

    @property
    def figure(self) -> Any:
        """The view's ``FigureWidget``."""
        return self.view.figure

    @staticmethod
    def _engine_html(ready: bool = False) -> str:
        if ready:
            return "<span class='rd-hint'>UMAP engine: ready (compiled once for this server).</span>"
        return ("<span class='rd-hint'>UMAP engine: compiling in the compute service (about a minute on "
                "a fresh server; PCA works meanwhile).</span>")

    def _watch_warm_up(self) -> None:
        """Have the service compile UMAP (once per server: every kernel's request shares one job)."""
        if self.state.event_loop() is None:
            return

        def ready() -> None:
            self._ready = True
            self.engine.value = self._engine_html(True)

        def warm_up() -> None:  # a thread of its own: the session's task thread stays free for the visitor
            try:
                self.state.compute.warm_up()
            except Exception as error:  # noqa: BLE001 - shown in the app and logged
                self.state.call_soon(self.state.report_error, "UMAP engine", error)
            else:
                self.state.call_soon(ready)

        threading.Thread(target=warm_up, name="revdistill-umap-warm-up", daemon=True).start()

    # -- handlers ---------------------------------------------------------------------------------
    def update(self, analysis: Any) -> None:
        """New analysis: fill the dropdowns and show the full embedding's PCA (a new figure, built with its data)."""
        self.analysis = analysis
        options = subspace_options(analysis)
        colors = color_options(analysis.task)
        self._filling = True  # (unobserve_all would also drop the widget's own value -> index link)
        try:
            self.subspace.options = options
            self.subspace.value = options[len(analysis.names) - 1][1]
            self.color.options = [(c, c) for c in colors]
            self.color.value = colors[0]
        finally:
            self._filling = False
        for dropdown in (self.subspace, self.color, self.run_umap):
            dropdown.disabled = False
        self._project(new_figure=True)

    def on_subspace(self, change: dict[str, Any]) -> None:
        """Show the new subspace's PCA at once (and its UMAP if cached)."""
        if not self._filling and self.analysis is not None and change["new"]:
            self.show_subspace()

    def on_color(self, change: dict[str, Any]) -> None:
        """Recolour both views."""
        if self._filling or self.analysis is None or not change["new"]:
            return
        colors, colorbar = color_values(self.analysis.task.table, change["new"])
        self.view.set_colors(colors, colorbar, categorical=colorbar["tickvals"] is not None)

    def show_subspace(self) -> None:
        """PCA of the chosen subspace now; UMAP from the cache if it is there, else cleared."""
        self._project(new_figure=False)

    def _project(self, new_figure: bool) -> None:
        """Ask the service for the PCA and any cached UMAP of the chosen subspace, then draw them."""
        analysis, key, compute = self.analysis, self.subspace.value, self.state.compute
        start = time.perf_counter()

        def work() -> tuple[Any, Any]:
            return compute.projection(analysis, key, "pca"), compute.projection(analysis, key, "cached_umap")

        def done(result: tuple[Any, Any]) -> None:
            pca, cached = result
            if self.analysis is not analysis or self.subspace.value != key:
                return  # the visitor moved on
            self._umap_note = cached.note
            if new_figure:
                color, colorbar = color_values(analysis.task.table, self.color.value)
                old, self.view = self.view, PointsFigure(
                    [pca.coords, cached.coords], colors=color, labels=analysis.task.table["label"].astype(str).tolist(),
                    titles=TITLES, width=WIDTH, height=HEIGHT, colorbar=colorbar,
                    categorical=colorbar["tickvals"] is not None)
                self._base_note = self.view.note
                self._show_notes(cached.coords is not None)
                replace_widgets(self.widget, (*self.widget.children[:-1], self.view.figure), [old])
            else:
                with self.view.figure.batch_update():
                    self.view.set_points(PCA_TRACE, pca.coords)
                    self.view.set_points(UMAP_TRACE, cached.coords)
                    self._show_notes(cached.coords is not None)
            self._status(pca, time.perf_counter() - start, cached.coords is not None)

        self.state.run_task("subspace view", work, done)

    def _show_notes(self, umap_shown: bool) -> None:
        """The figure's note: what is drawn, a UMAP subsample, a subsampled data set."""
        parts = [self._base_note]
        if umap_shown and self._umap_note:
            parts.append(self._umap_note)
        if subsample_note(self.analysis.task):
            parts.append(subsample_note(self.analysis.task))
        self.view.set_note(" · ".join(parts))

    def _status(self, pca: Any, took: float, cached: bool) -> None:
        self.status.value = (f"{pca.n_dims} dims × {pca.n_points} rows · PCA {took * 1000:.0f} ms · "
                             + ("UMAP from cache" if cached else "UMAP: press Compute UMAP" + self._warm_note()))

    def _warm_note(self) -> str:
        return "" if self._ready else " (the first UMAP on a server compiles it: about a minute)"

    def on_run_umap(self, _button: Any = None) -> None:
        """Compute the UMAP of the chosen subspace in the compute service (in the background)."""
        if self.analysis is None:
            raise ValueError("press Compute first: there is no embedding to project yet")
        analysis, key, compute = self.analysis, self.subspace.value, self.state.compute
        self.run_umap.disabled = True
        self.status.value = f"UMAP running in the compute service…{self._warm_note()}"
        start = time.perf_counter()
        view = self.view

        def done(projection: Any) -> None:
            self._umap_note = projection.note
            if self.subspace.value != key or self.view is not view:
                return  # the user moved on; the result is cached for when they come back
            with view.figure.batch_update():
                view.set_points(UMAP_TRACE, projection.coords)
                self._show_notes(True)
            note = projection.note
            self.status.value = (f"UMAP of {projection.n_points:,} points: {time.perf_counter() - start:.1f} s "
                                 f"(cached)" + (f" · {note}" if note else ""))

        def finally_() -> None:
            self.run_umap.disabled = False

        def show_progress(fraction: float, message: str) -> None:
            if self.run_umap.disabled and self.subspace.value == key:  # not after done(), nor for another subspace
                self.status.value = f"{message} ({fraction:.0%}, {time.perf_counter() - start:.0f} s)"

        post = Throttle(self.state, show_progress, interval=0.5)
        self.state.run_task("Compute UMAP", lambda: compute.projection(analysis, key, "umap", progress=post), done,
                            finally_=finally_)


def build_umap_panel(state: DashboardState) -> UmapPanel:
    """Build the subspace UMAP panel (see :class:`UmapPanel`)."""
    return UmapPanel(state)
