"""Panel 5, scaling curves: ESM-2 vs reverse-distilled vs naive, over model size and prefix dimension.

The figures are :func:`revdistill.views.figures.scaling_figure` and
:func:`~revdistill.views.figures.prefix_figure` of the analysis' summary — the same figures the CLI
and the notebooks draw, with the protocol and the ladders in the caption — each with a lower panel of
the paired differences (RD − ESM-2, RD − naive; RD prefix − truncated). "Load results" shows a finished
``revdistill proteingym`` run instead (a results CSV or results folder under the data folders, or an
uploaded CSV), read in the compute service by :func:`revdistill.views.report.load_results`, so a cluster run
is explored here without SciPy in the visitor's kernel.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import ipywidgets as widgets

from .state import DashboardState
from .widgets import as_figure_widget, download_link, hint, replace_widgets, section_title

__all__ = ["ScalingPanel", "build_scaling_panel", "RESULTS_DIR_ENV"]

#: A folder of finished results the "Load results" box may also read (besides the cache and ProteinGym folder).
RESULTS_DIR_ENV = "REVDISTILL_RESULTS_DIR"
#: The tables offered for download: (part, file name, link label).
_TABLES = (("table", "revdistill-results.csv", "Download results (CSV)"),
           ("summary", "revdistill-series.csv", "Download per-series summary (CSV)"),
           ("paired", "revdistill-paired.csv", "Download paired differences (CSV)"))


class ScalingPanel:
    """Scaling curves with intervals and ProteinGym's published zero-shot reference.

    Attributes
    ----------
    widget : ipywidgets.VBox
    size_figure, prefix_figure : plotly.graph_objects.FigureWidget
        Spearman vs model size (log x) and vs prefix dimension; rebuilt for every analysis.
    caption : ipywidgets.HTML
        The protocol and the ladders that produced the numbers.
    """

    def __init__(self, state: DashboardState) -> None:
        import plotly.graph_objects as go  # noqa: PLC0415

        self.state = state
        self.analysis: Any = None
        self.loaded: Any = None
        self._links = ""
        self.size_figure = as_figure_widget(go.Figure(layout={"height": 460,
                                                              "title": {"text": "Spearman vs model size"}}))
        self.prefix_figure = as_figure_widget(go.Figure(layout={"height": 460,
                                                                "title": {"text": "Spearman vs prefix dimension"}}))
        self.status = widgets.HTML("<span class='rd-hint'>Press Compute first.</span>")
        self.status.add_class("rd-scaling-status")
        self.caption = widgets.HTML("")
        self.caption.add_class("rd-caption")
        self.downloads = widgets.HTML("")
        self.prepare_html = widgets.Button(description="Prepare HTML export", disabled=True)
        self.prepare_html.on_click(state.guard(self.on_prepare_html, "HTML export"))
        self.figures = widgets.HBox([self.size_figure, self.prefix_figure])
        self.results_path = widgets.Text(placeholder="results.csv or results folder (under the data folders)",
                                         layout=widgets.Layout(width="420px"))
        self.results_path.add_class("rd-results-path")
        self.results_upload = widgets.FileUpload(accept=".csv", multiple=False, description="Upload results CSV")
        self.load_button = widgets.Button(description="Load results", tooltip="show a finished revdistill "
                                          "proteingym run (its scaling and paired figures)")
        self.load_button.add_class("rd-load-results")
        self.load_button.on_click(state.guard(self.on_load_results, "Load results"))
        self.widget = widgets.VBox([
            section_title("5 · Scaling curves",
                          "Cross-validated ridge probe on pooled embeddings (the protocol below); bars and bands "
                          "are bootstrap intervals."),
            self.status, self.figures, self.caption,
            hint("Grey dashed: ProteinGym's published zero-shot ESM-2 Spearman (a different task, for scale). "
                 "PNG: the camera icon in each figure's toolbar."),
            widgets.HBox([self.prepare_html, self.downloads]),
            widgets.HBox([self.results_path, self.results_upload, self.load_button]),
            hint("Load results: a finished `revdistill proteingym --out` table (with its .summary.csv and "
                 ".results/ folder when present), e.g. from a cluster run; paths under the cache, the ProteinGym "
                 f"folder or ${RESULTS_DIR_ENV}."),
        ])
        self.widget.add_class("rd-panel")
        state.on_analysis(self.update)

    def update(self, analysis: Any) -> None:
        """Draw a new analysis' curves, with its paired differences, and offer its tables."""
        from revdistill.views.figures import prefix_figure, scaling_figure  # noqa: PLC0415

        self.analysis, self.loaded = analysis, None
        paired = analysis.paired
        figures = (scaling_figure(analysis.summary, data_dir=self.state.options.proteingym_dir, paired=paired,
                                  title=f"Spearman vs model size · {analysis.task.name}"),
                   prefix_figure(analysis.summary, paired=paired,
                                 title=f"Spearman vs prefix dimension · {analysis.task.name}"))
        table = analysis.table
        self._show(figures, analysis.caption(),
                   f"{len(table)} probes on {analysis.task.name} (target: {analysis.task.target}).",
                   self._table_links(table, analysis.summary, paired))

    def _show(self, figures: tuple[Any, Any], caption: str, status: str, links: str) -> None:
        from revdistill.views.figures import PAIRED_HEIGHT  # noqa: PLC0415

        old = (self.size_figure, self.prefix_figure)
        # sized before they become widgets: a widget reaches the browser whole, a later change may not
        self.size_figure, self.prefix_figure = (as_figure_widget(figure.update_layout(height=PAIRED_HEIGHT, width=580))
                                                for figure in figures)
        replace_widgets(self.figures, (self.size_figure, self.prefix_figure), old)
        self.status.value = f"<span class='rd-hint'>{html.escape(status)}</span>"
        self.caption.value = "<div class='rd-hint'>" + "<br>".join(
            html.escape(line) for line in caption.splitlines()) + "</div>"
        self._links = self.downloads.value = links
        self.prepare_html.disabled = False

    def allowed_roots(self) -> list[Path]:
        """Folders "Load results" may read from: the cache, the ProteinGym folder and ``$REVDISTILL_RESULTS_DIR``."""
        from revdistill.io.paths import cache_root  # noqa: PLC0415

        options = self.state.options
        roots = [Path(options.cache_dir) if options.cache_dir else cache_root(), options.proteingym_dir,
                 os.environ.get(RESULTS_DIR_ENV)]
        return [Path(root).expanduser().resolve() for root in roots if root]

    def on_load_results(self, _button: Any = None) -> None:
        """Show a finished run: the uploaded CSV, else the typed path (which must lie under :meth:`allowed_roots`).

        The service reads it and recomputes what is missing
        (:meth:`~revdistill.service.results.DashboardCompute.results`); the kernel gets figures and tables to show.
        """
        compute, data_dir = self.state.compute, self.state.options.proteingym_dir
        if self.results_upload.value:
            item = list(self.results_upload.value)[0]
            content = bytes(item["content"])
            limit = self.state.options.max_upload_bytes
            if len(content) > limit:
                raise ValueError(f"{item['name']} is {len(content) / 1e6:.1f} MB; the upload limit is "
                                 f"{limit / 1e6:.1f} MB")
            loaded = compute.results(content=content, name=item["name"], data_dir=data_dir)
        else:
            text = self.results_path.value.strip()
            if not text:
                raise ValueError("type the path of a results CSV or results folder, or upload a results CSV")
            path = Path(text).expanduser().resolve()
            roots = self.allowed_roots()
            if not any(path.is_relative_to(root) for root in roots):
                raise ValueError(f"{text}: only files under {', '.join(map(str, roots))} can be opened here; "
                                 f"upload the CSV instead")
            if not path.exists():
                raise ValueError(f"{text}: no such file or folder")
            loaded = compute.results(path=path, data_dir=data_dir)
        import plotly.graph_objects as go  # noqa: PLC0415

        self.analysis, self.loaded = None, loaded
        links = " · ".join(download_link(loaded.csv[part].encode(), filename, "text/csv", label)
                           for part, filename, label in _TABLES)
        self._show(tuple(go.Figure(figure) for figure in loaded.figures), loaded.caption,
                   f"Loaded {loaded.name}: {loaded.rows} rows, {loaded.n_assays} assay(s); "
                   f"paired differences {loaded.sources['paired']}.", links)

    @staticmethod
    def _table_links(table: Any, summary: Any, paired: Any) -> str:
        frames = {"table": table, "summary": summary, "paired": paired}
        return " · ".join(download_link(frames[part].to_csv(index=False).encode(), filename, "text/csv", label)
                          for part, filename, label in _TABLES)

    def on_prepare_html(self, _button: Any = None) -> None:
        """Offer both figures as one standalone HTML file (plotly.js inlined: works offline)."""
        import plotly.graph_objects as go  # noqa: PLC0415

        if self.analysis is None and self.loaded is None:
            raise ValueError("press Compute or Load results first: there are no curves to export")
        caption = self.caption.value
        parts = [go.Figure(figure).to_html(include_plotlyjs=index == 0, full_html=False)
                 for index, figure in enumerate((self.size_figure, self.prefix_figure))]
        page = (f"<html><head><meta charset='utf-8'><title>revdistill scaling curves</title></head><body>"
                f"{''.join(parts)}<p style='font:12px sans-serif;color:#555'>{caption}</p></body></html>").encode()
        self.downloads.value = self._links + " · " + download_link(
            page, "revdistill-scaling.html", "text/html", "Download figures (HTML)")


def build_scaling_panel(state: DashboardState) -> ScalingPanel:
    """Build the scaling curves panel (see :class:`ScalingPanel`)."""
    return ScalingPanel(state)
