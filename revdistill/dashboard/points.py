"""Scatter figures that stay fast at every assay size: WebGL points when few, a raster image when many.

The renderer is chosen by measurement (headless Chromium, software WebGL, under Voila, on a 2-core
machine; ``tests/test_browser.py`` records it in ``test-artifacts/timings.json``): plotly's
``Scattergl`` redraws 5,000 points in ~140 ms, 20,000 in ~310 ms, 100,000 in ~1.2 s and 500,000 in
~8 s, while a server-side raster (:mod:`revdistill.views.raster`) shown as a plotly layout image
redraws in ~100–150 ms at any size. Up to :data:`MAX_WEBGL_POINTS` points every point is drawn
(hover shows each); above, the figure shows the raster (mean colour per pixel) and an invisible
seeded sample of :data:`HOVER_SAMPLE` points answers hovering. The figure says which in a note.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from revdistill.views.raster import data_bounds, png_data_uri, raster_png, rasterize

from .widgets import PLOT_MARGIN, PLOT_TEMPLATE, as_figure_widget

__all__ = ["PointsFigure", "choose_renderer", "MAX_WEBGL_POINTS", "HOVER_SAMPLE", "RENDERERS"]

#: Largest point count drawn point by point (see the module docstring for the measurements).
MAX_WEBGL_POINTS = 10_000
#: Points that answer hovering over a raster.
HOVER_SAMPLE = 2_000
RENDERERS = ("auto", "points", "raster")
COLORSCALE = "Viridis"
#: Margins: the usual ones, with room under the x axis for the note.
MARGIN = {**PLOT_MARGIN, "b": 80}


def choose_renderer(n_points: int, renderer: str = "auto", max_points: int = MAX_WEBGL_POINTS) -> str:
    """``"points"`` up to ``max_points`` points, else ``"raster"``; an explicit choice is kept."""
    if renderer not in RENDERERS:
        raise ValueError(f"renderer={renderer!r}; choose from {list(RENDERERS)}")
    if renderer != "auto":
        return renderer
    return "points" if n_points <= max_points else "raster"


def _columns(coords: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """x and y of ``(n, 2)`` coordinates as contiguous float32 arrays (plotly ships them as binary buffers;
    a strided column view reaches the browser broken)."""
    if coords is None:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    rows = np.ascontiguousarray(np.asarray(coords, dtype=np.float32).T)
    return rows[0], rows[1]


class PointsFigure:
    """One or more 2-D point clouds side by side, sharing colours and hover labels.

    Parameters
    ----------
    clouds : sequence of (n_points, 2) arrays or None
        One per subplot (None: empty for now, e.g. a UMAP not computed yet).
    colors : numpy.ndarray of shape (n_points,)
        Numeric colour value per point (category codes for categories).
    labels : sequence of str
        Hover label per point.
    titles : sequence of str
        Subplot titles.
    width, height : int
        Figure size in pixels (the raster matches the plot area).
    colorbar : dict, optional
        plotly colour-bar settings (``title``, ``tickvals``/``ticktext`` for categories).
    categorical : bool
        Colours are category codes: a raster pixel shows the last point's category, not a mean.
    renderer : {"auto", "points", "raster"}
        See :func:`choose_renderer`.
    seed : int
        Seeds the hover sample.
    title : str, optional
        Figure title.

    Attributes
    ----------
    figure : plotly.graph_objects.FigureWidget
        Built with all its data (Voila drops changes made before the browser connects).
    renderer : str
        ``"points"`` or ``"raster"``.
    note : str
        What is drawn, for the figure and the panel's status line.
    """

    def __init__(self, clouds: Sequence[np.ndarray | None], *, colors: np.ndarray, labels: Sequence[str],
                 titles: Sequence[str], width: int, height: int, colorbar: dict[str, Any] | None = None,
                 categorical: bool = False, renderer: str = "auto", seed: int = 0, title: str | None = None,
                 max_points: int = MAX_WEBGL_POINTS) -> None:
        self.clouds = list(clouds)
        self.colors = np.asarray(colors, dtype=np.float64)
        n_points = len(self.colors)
        if len(labels) != n_points:
            raise ValueError(f"{len(labels)} labels for {n_points} points")
        for cloud in self.clouds:
            if cloud is not None and np.shape(cloud) != (n_points, 2):
                raise ValueError(f"a cloud has shape {np.shape(cloud)}, expected ({n_points}, 2)")
        self.categorical = categorical
        self.renderer = choose_renderer(n_points, renderer, max_points)
        self.width, self.height = int(width), int(height)
        if self.renderer == "raster":
            size = min(HOVER_SAMPLE, n_points)
            self.sample = np.sort(np.random.default_rng(seed).choice(n_points, size=size, replace=False))
        else:
            self.sample = np.arange(n_points)
        self.labels = [str(labels[i]) for i in self.sample]
        self.note = self._note(n_points)
        self.figure = as_figure_widget(self._build(titles, colorbar or {}, title))

    # -- construction ---------------------------------------------------------------------------------
    def _note(self, n_points: int) -> str:
        if self.renderer == "points":
            return f"{n_points:,} points"
        return (f"{n_points:,} points drawn as a raster ({'category' if self.categorical else 'mean colour'} per "
                f"pixel); hover shows a seeded sample of {len(self.sample):,}")

    def _build(self, titles: Sequence[str], colorbar: dict[str, Any], title: str | None) -> Any:
        import plotly.graph_objects as go  # noqa: PLC0415
        from plotly.subplots import make_subplots  # noqa: PLC0415

        count = len(self.clouds)
        figure = make_subplots(rows=1, cols=count, subplot_titles=tuple(titles))
        low, high = self._color_range()
        for index, cloud in enumerate(self.clouds):
            x, y = self._trace_xy(cloud)
            marker = {"size": 4, "colorscale": COLORSCALE, "color": self.colors[self.sample], "cmin": low,
                      "cmax": high, "showscale": index == count - 1}
            if index == count - 1:
                marker["colorbar"] = {"len": 0.8, **colorbar}
            if self.renderer == "raster":
                marker["opacity"] = 0.0  # the raster shows the points; the sample only answers hovering
            figure.add_trace(go.Scattergl(name=str(titles[index]) if index < len(titles) else "", x=x, y=y,
                                          mode="markers", text=self.labels, marker=marker, showlegend=False,
                                          hovertemplate="%{text}<extra></extra>"), row=1, col=index + 1)
        figure.update_layout(template=PLOT_TEMPLATE, margin=dict(MARGIN), width=self.width,
                             height=self.height, title={"text": title} if title else None,
                             annotations=list(figure.layout.annotations) + [self._note_annotation()])
        if self.renderer == "raster":
            images, ranges = zip(*(self._image(index, cloud, figure) for index, cloud in enumerate(self.clouds)))
            figure.update_layout(images=list(images))
            for index, (x_range, y_range) in enumerate(ranges):
                figure.update_xaxes(range=x_range, row=1, col=index + 1)
                figure.update_yaxes(range=y_range, row=1, col=index + 1)
        return figure

    def _note_annotation(self) -> dict[str, Any]:
        return {"text": self.note, "xref": "paper", "yref": "paper", "x": 0.0, "y": -0.12, "showarrow": False,
                "xanchor": "left", "yanchor": "top", "font": {"size": 10, "color": "#777"}, "name": "rd-note"}

    def _color_range(self) -> tuple[float, float]:
        finite = self.colors[np.isfinite(self.colors)]
        if not len(finite):
            return 0.0, 1.0
        return float(finite.min()), float(finite.max())

    def _trace_xy(self, cloud: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        x, y = _columns(cloud)
        if cloud is None or self.renderer == "points":
            return x, y
        return np.ascontiguousarray(x[self.sample]), np.ascontiguousarray(y[self.sample])

    def _plot_pixels(self, index: int, figure: Any) -> tuple[int, int]:
        """Width and height in pixels of subplot ``index``'s plot area."""
        axis = figure.layout["xaxis" if index == 0 else f"xaxis{index + 1}"]
        start, end = axis.domain or (0.0, 1.0)
        inner_w = self.width - MARGIN["l"] - MARGIN["r"]
        inner_h = self.height - MARGIN["t"] - MARGIN["b"]
        return max(int(inner_w * (end - start)), 16), max(int(inner_h), 16)

    def _image(self, index: int, cloud: np.ndarray | None, figure: Any) -> tuple[dict[str, Any], tuple]:
        """The layout image of cloud ``index`` and its axis ranges."""
        suffix = "" if index == 0 else str(index + 1)
        if cloud is None:
            return {"visible": False, "xref": f"x{suffix}", "yref": f"y{suffix}", "source": ""}, (None, None)
        x, y = _columns(cloud)
        bounds = data_bounds(x, y)
        width, height = self._plot_pixels(index, figure)
        raster = rasterize(x, y, self.colors, width=width, height=height, bounds=bounds,
                           reduce="last" if self.categorical else "mean")
        low, high = self._color_range()
        source = png_data_uri(raster_png(raster, vmin=low, vmax=high, colorscale=COLORSCALE))
        x0, x1, y0, y1 = bounds
        image = {"source": source, "xref": f"x{suffix}", "yref": f"y{suffix}", "x": x0, "y": y1, "sizex": x1 - x0,
                 "sizey": y1 - y0, "sizing": "stretch", "layer": "below", "visible": True}
        return image, ([x0, x1], [y0, y1])

    # -- updates in place -----------------------------------------------------------------------------
    def set_points(self, index: int, cloud: np.ndarray | None) -> None:
        """Show new coordinates in subplot ``index`` (one message to the browser, one redraw)."""
        if cloud is not None and np.shape(cloud) != (len(self.colors), 2):
            raise ValueError(f"cloud shape {np.shape(cloud)}, expected ({len(self.colors)}, 2)")
        self.clouds[index] = cloud
        figure = self.figure
        with figure.batch_update():
            figure.data[index].x, figure.data[index].y = self._trace_xy(cloud)
            if self.renderer == "raster":
                self._show_image(index, cloud)

    def _show_image(self, index: int, cloud: np.ndarray | None) -> None:
        figure = self.figure
        image, (x_range, y_range) = self._image(index, cloud, figure)
        images = [dict(item.to_plotly_json()) for item in figure.layout.images]
        images[index] = image
        figure.layout.images = images
        if x_range is not None:
            figure.layout["xaxis" if index == 0 else f"xaxis{index + 1}"].range = x_range
            figure.layout["yaxis" if index == 0 else f"yaxis{index + 1}"].range = y_range

    def set_colors(self, colors: np.ndarray, colorbar: dict[str, Any] | None = None,
                   categorical: bool = False) -> None:
        """Recolour every subplot (and redraw the rasters)."""
        colors = np.asarray(colors, dtype=np.float64)
        if colors.shape != self.colors.shape:
            raise ValueError(f"{len(colors)} colours for {len(self.colors)} points")
        self.colors, self.categorical = colors, categorical
        low, high = self._color_range()
        figure = self.figure
        with figure.batch_update():
            for trace in figure.data:
                trace.marker.color = colors[self.sample]
                trace.marker.cmin, trace.marker.cmax = low, high
            if colorbar:
                figure.data[-1].marker.colorbar.update(colorbar)
            if self.renderer == "raster":
                for index, cloud in enumerate(self.clouds):
                    self._show_image(index, cloud)

    def set_note(self, text: str) -> None:
        """Replace the grey note under the figure (e.g. to say a UMAP ran on a subsample)."""
        self.note = text
        annotations = [dict(item.to_plotly_json()) for item in self.figure.layout.annotations]
        for annotation in annotations:
            if annotation.get("name") == "rd-note":
                annotation["text"] = text
        self.figure.layout.annotations = annotations

    def close(self) -> None:
        """Close the widget (the panel replaced it)."""
        self.figure.close()
