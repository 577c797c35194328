"""Panel 5, scaling curves: ESM-2 vs reverse-distilled vs naive, over model size and prefix dimension.

The figures are :func:`revdistill.views.figures.scaling_figure` and
:func:`~revdistill.views.figures.prefix_figure` of the analysis' summary — the same figures the CLI
and the notebooks draw, with the protocol and the ladders in the caption.
"""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from .state import DashboardState
from .widgets import as_figure_widget, download_link, hint, replace_widgets, section_title

__all__ = ["ScalingPanel", "build_scaling_panel"]


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
        self.size_figure = as_figure_widget(go.Figure(layout={"height": 460, "title": {"text": "Spearman vs model size"}}))
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
        self.widget = widgets.VBox([
            section_title("5 · Scaling curves",
                          "Cross-validated ridge probe on pooled embeddings (the protocol below); bars and bands "
                          "are bootstrap intervals."),
            self.status, self.figures, self.caption,
            hint("Grey dashed: ProteinGym's published zero-shot ESM-2 Spearman (a different task, for scale). "
                 "PNG: the camera icon in each figure's toolbar."),
            widgets.HBox([self.prepare_html, self.downloads]),
        ])
        self.widget.add_class("rd-panel")
        state.on_analysis(self.update)

    def update(self, analysis: Any) -> None:
        """Draw a new analysis' curves and offer its tables."""
        from revdistill.views.figures import prefix_figure, scaling_figure  # noqa: PLC0415

        self.analysis = analysis
        old = (self.size_figure, self.prefix_figure)
        options = self.state.options
        figures = (scaling_figure(analysis.summary, data_dir=options.proteingym_dir,
                                  title=f"Spearman vs model size · {analysis.task.name}"),
                   prefix_figure(analysis.summary, title=f"Spearman vs prefix dimension · {analysis.task.name}"))
        # sized before they become widgets: a widget reaches the browser whole, a later change may not
        self.size_figure, self.prefix_figure = (as_figure_widget(figure.update_layout(height=460, width=580))
                                                for figure in figures)
        replace_widgets(self.figures, (self.size_figure, self.prefix_figure), old)
        table = analysis.table
        self.status.value = (f"<span class='rd-hint'>{len(table)} probes on {html.escape(analysis.task.name)} "
                             f"(target: {html.escape(analysis.task.target)}).</span>")
        self.caption.value = "<div class='rd-hint'>" + "<br>".join(
            html.escape(line) for line in analysis.caption().splitlines()) + "</div>"
        self.downloads.value = self._table_links(analysis)
        self.prepare_html.disabled = False

    @staticmethod
    def _table_links(analysis: Any) -> str:
        results = analysis.table.to_csv(index=False).encode()
        summary = analysis.summary.to_csv(index=False).encode()
        return (download_link(results, "revdistill-results.csv", "text/csv", "Download results (CSV)") + " · "
                + download_link(summary, "revdistill-summary.csv", "text/csv", "Download summary (CSV)"))

    def on_prepare_html(self, _button: Any = None) -> None:
        """Offer both figures as one standalone HTML file (plotly.js inlined: works offline)."""
        import plotly.graph_objects as go  # noqa: PLC0415

        if self.analysis is None:
            raise ValueError("press Compute first: there are no curves to export")
        caption = html.escape(self.analysis.caption()).replace("\n", "<br>")
        parts = [go.Figure(figure).to_html(include_plotlyjs=index == 0, full_html=False)
                 for index, figure in enumerate((self.size_figure, self.prefix_figure))]
        page = (f"<html><head><meta charset='utf-8'><title>revdistill scaling curves</title></head><body>"
                f"{''.join(parts)}<p style='font:12px sans-serif;color:#555'>{caption}</p></body></html>").encode()
        self.downloads.value = self._table_links(self.analysis) + " · " + download_link(
            page, "revdistill-scaling.html", "text/html", "Download figures (HTML)")


def build_scaling_panel(state: DashboardState) -> ScalingPanel:
    """Build the scaling curves panel (see :class:`ScalingPanel`)."""
    return ScalingPanel(state)
