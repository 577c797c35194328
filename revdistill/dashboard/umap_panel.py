"""Panel 4, subspace UMAP: a prefix or the block a model adds, as PCA at once and UMAP in background."""
from __future__ import annotations

import time
from typing import Any

import ipywidgets as widgets
import numpy as np

from revdistill.views import projection as project

from .data import color_options
from .state import DashboardState
from .widgets import figure_widget, hint, section_title

__all__ = ["UmapPanel", "build_umap_panel", "subspace_options", "color_values"]

PCA_TRACE = 0
UMAP_TRACE = 1


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


def _columns(coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x and y of ``(n, 2)`` coordinates as contiguous float32 arrays.

    plotly sends contiguous numeric arrays as binary buffers; a strided column view reaches the
    browser broken ("Error setting state"), so the update is lost.
    """
    rows = np.ascontiguousarray(np.asarray(coords, dtype=np.float32).T)
    return rows[0], rows[1]


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
    figure : plotly.graph_objects.FigureWidget
        PCA (left) and UMAP (right) of the chosen subspace.
    """

    def __init__(self, state: DashboardState) -> None:
        import plotly.graph_objects as go  # noqa: PLC0415

        self.state = state
        self.analysis: Any = None
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
        empty: list[float] = []
        marker = {"size": 4, "colorscale": "Viridis"}
        self.figure = figure_widget(
            [(go.Scattergl(name="PCA", x=empty, y=empty, mode="markers", marker=dict(marker),
                           hovertemplate="%{text}<extra>PCA</extra>"), 1, 1),
             (go.Scattergl(name="UMAP", x=empty, y=empty, mode="markers",
                           marker=dict(marker, showscale=True, colorbar={"x": 1.02, "len": 0.8}),
                           hovertemplate="%{text}<extra>UMAP</extra>"), 1, 2)],
            {"height": 420, "showlegend": False},
            rows=1, cols=2, subplot_titles=("PCA (instant)", "UMAP (background, cached)"),
        )
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
            self.figure,
        ])
        self.widget.add_class("rd-panel")
        state.on_analysis(self.update)

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
        """New analysis: fill the dropdowns and show the full embedding's PCA."""
        self.analysis = analysis
        options = subspace_options(analysis.nested)
        colors = color_options(analysis.task)
        for dropdown in (self.subspace, self.color):
            dropdown.unobserve_all("value")
        self.subspace.options = options
        self.subspace.value = options[len(analysis.nested.names) - 1][1]
        self.color.options = [(c, c) for c in colors]
        self.color.value = colors[0]
        self.subspace.observe(self.state.guard(self.on_subspace, "subspace"), names="value")
        self.color.observe(self.state.guard(self.on_color, "colour"), names="value")
        for dropdown in (self.subspace, self.color, self.run_umap):
            dropdown.disabled = False
        self.show_subspace()

    def on_subspace(self, change: dict[str, Any]) -> None:
        """Show the new subspace's PCA at once (and its UMAP if cached)."""
        if self.analysis is not None and change["new"]:
            self.show_subspace()

    def on_color(self, change: dict[str, Any]) -> None:
        """Recolour both views."""
        if self.analysis is None or not change["new"]:
            return
        colors, colorbar = color_values(self.analysis.task.table, change["new"])
        with self.figure.batch_update():
            for trace in self.figure.data:
                trace.marker.color = colors
            self.figure.data[UMAP_TRACE].marker.colorbar.update(colorbar)

    def show_subspace(self) -> None:
        """PCA of the chosen subspace now; UMAP from the cache if it is there, else cleared."""
        analysis = self.analysis
        values = _subspace(analysis.nested, self.subspace.value)
        start = time.perf_counter()
        pca = project.pca_view(values)
        colors, colorbar = color_values(analysis.task.table, self.color.value)
        labels = analysis.task.table["label"].astype(str).tolist()
        cached = self._cached_umap(values)
        with self.figure.batch_update():
            first, second = self.figure.data
            first.x, first.y = _columns(pca)
            for trace in (first, second):
                trace.marker.color = colors
                trace.text = labels
            second.marker.colorbar.update(colorbar)
            second.x, second.y = _columns(cached) if cached is not None else ([], [])
        took = time.perf_counter() - start
        self.status.value = (f"{values.shape[1]} dims × {values.shape[0]} rows · PCA {took * 1000:.0f} ms · "
                             + ("UMAP from cache" if cached is not None else
                                "UMAP: press Compute UMAP" + self._warm_note()))

    def _warm_note(self) -> str:
        return "" if project.umap_ready() else " (first run compiles UMAP: about a minute)"

    def _cached_umap(self, values: np.ndarray) -> np.ndarray | None:
        return project.cached_umap_view(values, cache_dir=self._cache_dir())

    def _cache_dir(self):
        from revdistill.paths import cache_dir  # noqa: PLC0415

        return cache_dir("umap", self.state.options.cache_dir)

    def on_run_umap(self, _button: Any = None) -> None:
        """Compute the UMAP of the chosen subspace in the background."""
        if self.analysis is None:
            raise ValueError("press Compute first: there is no embedding to project yet")
        key = self.subspace.value
        values = _subspace(self.analysis.nested, key)
        cache_dir = self._cache_dir()
        self.run_umap.disabled = True
        self.status.value = f"UMAP of {values.shape[0]} points running…{self._warm_note()}"
        start = time.perf_counter()

        def done(coords: np.ndarray) -> None:
            if self.subspace.value != key:
                return  # the user moved on; the result is cached for when they come back
            with self.figure.batch_update():
                self.figure.data[UMAP_TRACE].x, self.figure.data[UMAP_TRACE].y = _columns(coords)
            self.status.value = f"UMAP of {values.shape[0]} points: {time.perf_counter() - start:.1f} s (cached)"

        def finally_() -> None:
            self.run_umap.disabled = False

        self.state.run_task("Compute UMAP", lambda: project.umap_view(values, cache_dir=cache_dir), done,
                            finally_=finally_)


def build_umap_panel(state: DashboardState) -> UmapPanel:
    """Build the subspace UMAP panel (see :class:`UmapPanel`)."""
    return UmapPanel(state)
