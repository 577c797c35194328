"""Panel 4, subspace UMAP: a prefix or the block a model adds, as PCA at once and UMAP in background."""
from __future__ import annotations

import time
from typing import Any

import ipywidgets as widgets
import numpy as np

from revdistill.views import projection as project

from .data import color_options
from .points import PointsFigure
from .state import DashboardState
from .widgets import hint, replace_widgets, section_title, subsample_note

__all__ = ["UmapPanel", "build_umap_panel", "subspace_options", "color_values"]

PCA_TRACE = 0
UMAP_TRACE = 1
TITLES = ("PCA (instant)", "UMAP (background, cached)")
WIDTH, HEIGHT = 1100, 440


def subspace_options(nested: Any) -> list[tuple[str, str]]:
    """Dropdown options: every level's prefix, then every block a larger model adds.

    Returns
    -------
    list of (label, key)
        ``key`` is ``"prefix:<k>"`` or ``"block:<level>"``.
    """
    options = [(f"prefix {end} = {name} level", f"prefix:{end}")
               for name, end in zip(nested.names, nested.boundaries)]
    for start, end, name in zip(nested.boundaries[:-1], nested.boundaries[1:], nested.names[1:]):
        options.append((f"block {name}: dims {start + 1}–{end} (what {name} adds)", f"block:{name}"))
    return options


def _subspace(nested: Any, key: str) -> np.ndarray:
    kind, _, value = key.partition(":")
    if kind == "prefix":
        return project.subspace(nested, prefix=int(value))
    elif kind == "block":
        return project.subspace(nested, block=value)
    raise ValueError(f"subspace {key!r} must start with 'prefix:' or 'block:'")


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

    def __init__(self, state: DashboardState) -> None:
        self.state = state
        self.analysis: Any = None
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
    def _engine_html() -> str:
        if project.umap_ready():
            return "<span class='rd-hint'>UMAP engine: ready (compiled).</span>"
        return ("<span class='rd-hint'>UMAP engine: compiling in the background (about a minute on "
                "a fresh server; PCA works meanwhile).</span>")

    def _watch_warm_up(self) -> None:
        """Refresh the engine note when the background warm-up finishes (on the kernel's loop)."""
        loop = self.state.event_loop()

        def refresh() -> None:
            self.engine.value = self._engine_html()

        if loop is None:
            return
        project.on_warm_up_done(lambda: loop.call_soon_threadsafe(self.state.guard(refresh, "UMAP engine")))

    # -- handlers ---------------------------------------------------------------------------------
    def update(self, analysis: Any) -> None:
        """New analysis: fill the dropdowns and show the full embedding's PCA (a new figure, built with its data)."""
        self.analysis = analysis
        options = subspace_options(analysis.nested)
        colors = color_options(analysis.task)
        self._filling = True  # (unobserve_all would also drop the widget's own value -> index link)
        try:
            self.subspace.options = options
            self.subspace.value = options[len(analysis.nested.names) - 1][1]
            self.color.options = [(c, c) for c in colors]
            self.color.value = colors[0]
        finally:
            self._filling = False
        for dropdown in (self.subspace, self.color, self.run_umap):
            dropdown.disabled = False
        start = time.perf_counter()
        values = _subspace(analysis.nested, self.subspace.value)
        pca, cached = project.pca_view(values), self._cached_umap(values)
        color, colorbar = color_values(analysis.task.table, self.color.value)
        old, self.view = self.view, PointsFigure(
            [pca, cached], colors=color, labels=analysis.task.table["label"].astype(str).tolist(), titles=TITLES,
            width=WIDTH, height=HEIGHT, colorbar=colorbar, categorical=colorbar["tickvals"] is not None)
        self._base_note = self.view.note
        self._show_notes(values.shape[0], cached is not None)
        replace_widgets(self.widget, (*self.widget.children[:-1], self.view.figure), [old])
        self._status(values, time.perf_counter() - start, cached is not None)

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
        values = _subspace(self.analysis.nested, self.subspace.value)
        start = time.perf_counter()
        pca = project.pca_view(values)
        cached = self._cached_umap(values)
        with self.view.figure.batch_update():
            self.view.set_points(PCA_TRACE, pca)
            self.view.set_points(UMAP_TRACE, cached)
            self._show_notes(values.shape[0], cached is not None)
        self._status(values, time.perf_counter() - start, cached is not None)

    def _show_notes(self, n_points: int, umap_shown: bool) -> None:
        """The figure's note: what is drawn, a UMAP subsample, a subsampled data set."""
        parts = [self._base_note]
        if umap_shown and project.umap_note(n_points):
            parts.append(project.umap_note(n_points))
        if subsample_note(self.analysis.task):
            parts.append(subsample_note(self.analysis.task))
        self.view.set_note(" · ".join(parts))

    def _status(self, values: np.ndarray, took: float, cached: bool) -> None:
        self.status.value = (f"{values.shape[1]} dims × {values.shape[0]} rows · PCA {took * 1000:.0f} ms · "
                             + ("UMAP from cache" if cached else "UMAP: press Compute UMAP" + self._warm_note()))

    def _warm_note(self) -> str:
        return "" if project.umap_ready() else " (first run compiles UMAP: about a minute)"

    def _cached_umap(self, values: np.ndarray) -> np.ndarray | None:
        return project.cached_umap_view(values, cache_dir=self._cache_dir())

    def _cache_dir(self):
        from revdistill.io.paths import cache_dir  # noqa: PLC0415

        return cache_dir("umap", self.state.options.cache_dir)

    def on_run_umap(self, _button: Any = None) -> None:
        """Compute the UMAP of the chosen subspace in the background."""
        if self.analysis is None:
            raise ValueError("press Compute first: there is no embedding to project yet")
        key = self.subspace.value
        values = _subspace(self.analysis.nested, key)
        cache_dir = self._cache_dir()
        self.run_umap.disabled = True
        note = project.umap_note(values.shape[0])
        self.status.value = (f"UMAP of {values.shape[0]:,} points running…{self._warm_note()}"
                             + (f" ({note})" if note else ""))
        start = time.perf_counter()
        view = self.view

        def done(coords: np.ndarray) -> None:
            if self.subspace.value != key or self.view is not view:
                return  # the user moved on; the result is cached for when they come back
            with view.figure.batch_update():
                view.set_points(UMAP_TRACE, coords)
                self._show_notes(values.shape[0], True)
            self.status.value = (f"UMAP of {values.shape[0]:,} points: {time.perf_counter() - start:.1f} s (cached)"
                                 + (f" · {note}" if note else ""))

        def finally_() -> None:
            self.run_umap.disabled = False

        self.state.run_task("Compute UMAP", lambda: project.umap_view(values, cache_dir=cache_dir), done,
                            finally_=finally_)


def build_umap_panel(state: DashboardState) -> UmapPanel:
    """Build the subspace UMAP panel (see :class:`UmapPanel`)."""
    return UmapPanel(state)
