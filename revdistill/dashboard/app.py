"""The dashboard app: six panels sharing one :class:`~.state.DashboardState`, plus the error box.

``notebooks/dashboard.ipynb`` is just::

    from revdistill.dashboard import build_app
    app = build_app()
    app.widget
"""
from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from .decomposition_panel import DecompositionPanel
from .landscape_panel import LandscapePanel
from .models_panel import ModelsPanel
from .scaling_panel import ScalingPanel
from .serving import prepare_static, under_voila
from .slicer_panel import SlicerPanel
from .state import DashboardOptions, DashboardState
from .umap_panel import UmapPanel
from .widgets import ErrorBox

__all__ = ["App", "build_app", "configure_logging", "STYLE"]

logger = logging.getLogger(__name__)

STYLE = """
<style>
.rd-title h1 {font-size: 1.6em; margin: 0.2em 0;}
.rd-title p {margin: 0 0 0.6em 0; color: #444; max-width: 70em; line-height: 1.45;}
.rd-panel {border: 1px solid #e3e3e3; border-radius: 6px; padding: 8px 14px 10px 14px; margin: 8px 0;
           background: #fff;}
.rd-h {margin: 0.2em 0 0.1em 0; font-size: 1.2em;}
.rd-sub, .rd-hint {color: #666; font-size: 0.92em;}
.rd-reason {color: #999; font-size: 0.85em; line-height: 28px;}
.rd-banner {background: #fff4e5; border: 1px solid #f0b35b; border-radius: 4px; padding: 6px 10px;
            margin: 4px 0 8px 0; font-size: 0.92em; line-height: 1.35;}
.rd-error {background: #fdecea; border: 1px solid #e57373; border-radius: 4px; padding: 4px 10px;
           margin: 4px 0; align-items: center;}
.rd-error-text {color: #b71c1c;}
.rd-error-text ul {margin: 2px 0 2px 0;}
.rd-table {border-collapse: collapse; font-size: 0.9em; margin: 6px 0;}
.rd-table td, .rd-table th {border-bottom: 1px solid #eee; padding: 2px 8px; text-align: left;}
.rd-readout {font-size: 0.92em; line-height: 1.4;}
.rd-download {margin-right: 1em;}
.rd-assay-list select, .rd-assay-header {font: 12px/1.35 "DejaVu Sans Mono", Menlo, Consolas, monospace !important;}
.rd-assay-list select {padding: 2px 4px !important;}
.rd-assay-header {margin: 4px 0 0 0; padding: 0 5px; color: #555; white-space: pre;}
.rd-estimate {margin: 4px 0;}
.rd-app .js-plotly-plot .layer-below image, .rd-app .js-plotly-plot .layer-above image {image-rendering: pixelated;}
</style>
"""

HEADER = """
<div class='rd-title'><h1>revdistill · reverse-distilled ESM-2 explorer</h1>
<p>Reverse distillation turns a ladder of ESM-2 models (8M → 35M → 150M …) into one nested embedding: its first
320 dimensions are ESM-2 8M exactly, the next block is what 35M adds beyond 8M, and so on. Pick models and data,
press <b>Compute</b>, then slice prefixes, view subspaces, plot scaling curves and, for a DMS assay, see its
mutational landscape.</p></div>
"""


def configure_logging(log_file: str | Path | None = None) -> None:
    """Send ``revdistill`` log records (with tracebacks) to the server's stderr and optionally a file.

    Called by :func:`build_app`, not at import. ``sys.__stderr__`` is the kernel process's real
    stderr, which Voila's server inherits: visitors never see it, the operator does.
    """
    logger = logging.getLogger("revdistill")
    if any(getattr(handler, "_revdistill", False) for handler in logger.handlers):
        return
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.__stderr__)]
    if log_file is not None:
        Path(log_file).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file))
    for handler in handlers:
        handler._revdistill = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger.addHandler(handler)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.INFO)


@dataclass
class App:
    """The composed dashboard.

    Attributes
    ----------
    widget : ipywidgets.VBox
        Display this.
    state : DashboardState
    errors : ErrorBox
    models, decomposition, slicer, umap, scaling, landscape : panels
    """

    widget: Any
    state: DashboardState
    errors: ErrorBox
    models: ModelsPanel
    decomposition: DecompositionPanel
    slicer: SlicerPanel
    umap: UmapPanel
    scaling: ScalingPanel
    landscape: LandscapePanel

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)


def build_app(options: DashboardOptions | None = None, *, warm_up: bool = True,
              log_file: str | Path | None = None) -> App:
    """Build every panel around one shared state.

    Parameters
    ----------
    options : DashboardOptions, optional
        Paths and limits (cache, weights, ProteinGym folder, upload size).
    warm_up : bool, default=True
        Ask the compute service to compile UMAP now (once per server; the kernel starts before the
        visitor comes when Voila preheats kernels, so the first UMAP is fast).
    log_file : str or Path, optional
        Also write the log (with tracebacks) to this file.

    Returns
    -------
    App
    """
    start = time.perf_counter()
    configure_logging(log_file)
    if under_voila():
        prepare_static(Path.cwd())  # plotly's widget code, served once per page (see .serving)
    state = DashboardState(options)
    errors = ErrorBox(state)
    models = ModelsPanel(state)
    decomposition = DecompositionPanel(state)
    slicer = SlicerPanel(state)
    umap = UmapPanel(state, warm_up=warm_up)
    scaling = ScalingPanel(state)
    landscape = LandscapePanel(state)
    widget = widgets.VBox([
        widgets.HTML(STYLE + HEADER), errors.widget, models.widget, decomposition.widget,
        slicer.widget, umap.widget, scaling.widget, landscape.widget,
    ], layout={"max_width": "1200px"})
    widget.add_class("rd-app")
    logger.info("dashboard built in %.1f s", time.perf_counter() - start)  # the operator's (and tests') marker
    return App(widget=widget, state=state, errors=errors, models=models, decomposition=decomposition,
               slicer=slicer, umap=umap, scaling=scaling, landscape=landscape)
