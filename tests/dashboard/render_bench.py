"""A page that shows the dashboard's views at a given size with synthetic data, for the browser test.

``tests/test_browser.py`` serves a two-cell notebook calling :func:`build` (the size comes from the page's
query string ``?n=...``) and measures, in headless Chromium, how long each view takes to appear and to
redraw. The views are the dashboard's own code paths, with synthetic inputs instead of a computation:

- the slicer's PCA view: a :class:`~revdistill.dashboard.points.PointsFigure` whose points a slider swaps
  between precomputed ``(2, n)`` views (what ``SlicerPanel.show_view`` does);
- the UMAP panel: **Show PCA** runs :func:`~revdistill.views.projection.pca_view` on ``(n, 64)`` values and
  draws it (what ``UmapPanel.show_subspace`` does); **Compute UMAP** runs
  :func:`~revdistill.views.projection.umap_view` in the background (seeded subsample above
  ``DEFAULT_FIT_SAMPLE``) and draws it;
- the landscape: **Show landscape** builds :func:`~revdistill.views.landscape.landscape_figure` of an assay
  with ``n`` variants (a protein of ``min(n // 19, 3423)`` positions, all its singles, the rest multiple
  mutants, which the landscape leaves out, as ProteinGym's largest assays are).
"""
from __future__ import annotations

import os
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Longest ProteinGym target sequence (residues): a landscape never has more columns.
LONGEST = 3423
AMINO = "ACDEFGHIKLMNPQRSTVWY"


def query_size(default: int = 5000) -> int:
    """``n`` from the page's query string (Voila passes it to a kernel started for the request)."""
    values = urllib.parse.parse_qs(os.environ.get("QUERY_STRING", ""))
    return int(values.get("n", [default])[0])


def synthetic_points(n: int, n_features: int = 64, seed: int = 0) -> np.ndarray:
    """``(n, n_features)`` clustered values (like pooled embeddings of variants of a few kinds)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(12, n_features))
    return (centres[rng.integers(0, 12, n)] + rng.normal(size=(n, n_features))).astype(np.float32)


def synthetic_views(values: np.ndarray, n_grid: int = 6) -> np.ndarray:
    """``(n_grid, 2, n)`` views, as ``SlicerViews.views`` holds them (PCA of growing prefixes)."""
    from revdistill.views.projection import pca_view  # noqa: PLC0415

    ks = np.unique(np.geomspace(2, values.shape[1], n_grid).astype(int))
    return np.stack([np.ascontiguousarray(pca_view(values[:, :k]).T.astype(np.float32)) for k in ks])


def synthetic_assay(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """An assay of ``n`` variants: every single mutant of a protein of ``min(n // 19, 3423)`` residues, the
    rest multiple mutants; a prediction per variant."""
    rng = np.random.default_rng(seed)
    length = max(1, min(n // 19, LONGEST))
    wild = rng.choice(list(AMINO), length)
    positions = np.repeat(np.arange(1, length + 1), 19)
    mutated = np.array([[a for a in AMINO if a != w] for w in wild]).ravel()
    singles = len(positions)
    extra = max(n - singles, 0)
    table = pd.DataFrame({
        "position": np.concatenate([positions, rng.integers(1, length + 1, extra)]),
        "wild_type": np.concatenate([np.repeat(wild, 19), np.full(extra, "A")]),
        "mutated_aa": np.concatenate([mutated, np.full(extra, "C")]),
        "n_mutations": np.concatenate([np.ones(singles, int), np.full(extra, 2)]),
    })
    table["mutant"] = [f"{w}{p}{m}" for w, p, m in zip(table.wild_type, table.position, table.mutated_aa)]
    table["score"] = rng.normal(size=len(table))
    return table, table["score"].to_numpy() * 0.6 + rng.normal(scale=0.6, size=len(table))


def build(n: int | None = None) -> Any:
    """The page: a slider over the PCA views, the UMAP panel's two views and the landscape, at size ``n``."""
    import ipywidgets as widgets  # noqa: PLC0415

    from revdistill.dashboard.points import PointsFigure  # noqa: PLC0415
    from revdistill.dashboard.serving import prepare_static, under_voila  # noqa: PLC0415
    from revdistill.dashboard.state import DashboardOptions, DashboardState  # noqa: PLC0415
    from revdistill.dashboard.widgets import as_figure_widget  # noqa: PLC0415
    from revdistill.views import projection  # noqa: PLC0415
    from revdistill.views.landscape import landscape, landscape_figure  # noqa: PLC0415

    if under_voila():
        prepare_static(Path.cwd())
    n = query_size() if n is None else n
    state = DashboardState(DashboardOptions())
    values = synthetic_points(n)
    views = synthetic_views(values)
    colors = values[:, 0].astype(np.float64)
    labels = [f"v{i}" for i in range(n)]
    slicer = PointsFigure([views[-1].T], colors=colors, labels=labels, titles=("PCA of prefix(k)",), width=520,
                          height=440)
    slider = widgets.IntSlider(value=len(views) - 1, min=0, max=len(views) - 1, description="view")
    slider.add_class("rd-bench-slider")
    slider.observe(lambda change: slicer.set_points(0, views[change["new"]].T), names="value")
    panel = PointsFigure([None, None], colors=colors, labels=labels, titles=("PCA", "UMAP"), width=1100, height=440)
    status = widgets.HTML(f"<span class='rd-bench-status'>{n} points, renderer {slicer.renderer}</span>")
    show_pca, run_umap, show_landscape = (widgets.Button(description=text) for text in
                                          ("Show PCA", "Compute UMAP", "Show landscape"))
    for button, name in ((show_pca, "pca"), (run_umap, "umap"), (show_landscape, "landscape")):
        button.add_class(f"rd-bench-{name}")
    holder = widgets.Box([])
    cache = Path(tempfile.mkdtemp(prefix="revdistill-bench-umap-"))

    def on_pca(_button: Any) -> None:
        start = time.perf_counter()
        panel.set_points(0, projection.pca_view(values))
        status.value = f"<span class='rd-bench-status'>PCA {time.perf_counter() - start:.2f} s on the server</span>"

    def on_umap(_button: Any) -> None:
        seconds = {}

        def work() -> np.ndarray:
            if not projection.umap_ready():
                projection.warm_up_umap()  # what every dashboard kernel does when it starts
            start = time.perf_counter()
            coords = projection.umap_view(values, cache_dir=cache)
            seconds["umap"] = time.perf_counter() - start
            return coords

        def done(coords: np.ndarray) -> None:
            panel.set_points(1, coords)
            note = projection.umap_note(n)
            panel.set_note(" · ".join(p for p in (panel.note, note) if p))
            status.value = (f"<span class='rd-bench-status'>UMAP done in {seconds['umap']:.1f} s"
                            f"{' (' + note + ')' if note else ''}</span>")

        state.run_task("UMAP", work, done)

    def on_landscape(_button: Any) -> None:
        table, prediction = synthetic_assay(n)
        scape = landscape(table, prediction)
        figure = as_figure_widget(landscape_figure(scape, prediction_name="synthetic", title=f"{scape.n_cells} cells"))
        holder.children = (figure,)
        status.value = f"<span class='rd-bench-status'>landscape of {scape.n_cells} cells</span>"

    show_pca.on_click(state.guard(on_pca, "PCA"))
    run_umap.on_click(state.guard(on_umap, "UMAP"))
    show_landscape.on_click(state.guard(on_landscape, "landscape"))
    page = widgets.VBox([status, slider, slicer.figure, widgets.HBox([show_pca, run_umap, show_landscape]),
                         panel.figure, holder])
    page.add_class("rd-bench")
    return page
