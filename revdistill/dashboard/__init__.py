"""Voila dashboard: one ipywidget builder per panel, plus the app that composes them.

Data flow: :mod:`.data` (what to probe: a :class:`~revdistill.experiment.tasks.Task`) -> the compute service
(:mod:`revdistill.service`: reference ladders + :func:`~revdistill.experiment.pipeline.run_experiment` +
slicer views + projections, shared by every visitor) -> the panels (:mod:`.models_panel`,
:mod:`.decomposition_panel`, :mod:`.slicer_panel`, :mod:`.umap_panel`, :mod:`.scaling_panel`,
:mod:`.landscape_panel`), each reading the typed :class:`~revdistill.service.results.AnalysisResult` that
:class:`~.state.DashboardState` publishes -> :mod:`.app`. The panels hold UI only: the science lives in
:mod:`revdistill.experiment` and :mod:`revdistill.views`, and runs in the service; a visitor's kernel
imports no compute library (torch, numba, UMAP, scikit-learn, SciPy, h5py).

Helpers: :mod:`.widgets` builds figures and the error box, :mod:`.serving` makes Voila ship plotly's
widget code once per page, :mod:`.kernels` is the Voila server's kernel manager (a kernel taken from the
pool is not culled before its page connects). Importing this package imports nothing heavy; ``ipywidgets``
and ``plotly`` load with the builders.
"""
from __future__ import annotations

from typing import Any

__all__ = ["build_app", "DashboardState"]


def __getattr__(name: str) -> Any:
    """Import the public builders lazily (keeps ``import revdistill.dashboard`` cheap)."""
    if name == "build_app":
        from .app import build_app  # noqa: PLC0415

        return build_app
    if name == "DashboardState":
        from .state import DashboardState  # noqa: PLC0415

        return DashboardState
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
