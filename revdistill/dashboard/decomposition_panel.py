"""Panel 2, decomposition: what each ladder step regressed, kept and added."""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets
import numpy as np

from .state import DashboardState
from .widgets import figure_widget, replace_widgets, section_title

__all__ = ["DecompositionPanel", "build_decomposition_panel"]

ORTHOGONAL_TOLERANCE = 1e-6


def _configure_axes(figure: Any) -> None:
    figure.update_yaxes(range=[0, 1.02], row=1, col=1)
    figure.update_yaxes(type="log", title_text="max |correlation| (log)", row=1, col=2)


class DecompositionPanel:
    """Per step: regression R², PCR components, residual variance explained, orthogonality check.

    Attributes
    ----------
    widget : ipywidgets.VBox
    figure : plotly.graph_objects.FigureWidget
        Bars: R² and residual variance explained per step (left), block-vs-prefix correlation (right).
    table : ipywidgets.HTML
    """

    def __init__(self, state: DashboardState) -> None:
        self.state = state
        self.figure = self._make_figure(state.analysis)
        self.table = widgets.HTML(self._table_html(state.analysis))
        self.widget = widgets.VBox([
            section_title("2 · Decomposition",
                          "Each step regresses the larger model on the smaller one (the nested one with our fit, "
                          "the raw one with the released fit), keeps the residual's top principal components "
                          "and appends them."),
            self.table, self.figure,
        ])
        self.widget.add_class("rd-panel")
        state.on_analysis(self.update)

    @classmethod
    def _make_figure(cls, analysis: Any) -> Any:
        """The bars of ``analysis`` (empty for None), built with all their data."""
        import plotly.graph_objects as go  # noqa: PLC0415

        steps, r2, residual, fitted_corr, pooled_corr = cls._values(analysis)
        return figure_widget(
            [(go.Bar(name="R² of the regression", x=steps, y=r2, marker_color="#4C78A8"), 1, 1),
             (go.Bar(name="residual variance kept by PCA", x=steps, y=residual, marker_color="#F58518"), 1, 1),
             (go.Bar(name="max |corr| block vs prefix (fitting residues)", x=steps, y=fitted_corr,
                     marker_color="#54A24B"), 1, 2),
             (go.Bar(name="max |corr| block vs prefix (pooled rows)", x=steps, y=pooled_corr,
                     marker_color="#B279A2"), 1, 2)],
            {"height": 340, "barmode": "group", "legend": {"orientation": "h", "y": -0.25}},
            rows=1, cols=2, subplot_titles=("What each step explains", "Is each new block orthogonal?"),
            configure=_configure_axes,
        )

    @staticmethod
    def _values(analysis: Any) -> tuple[list[str], list[float], list[float], list[float], list[float]]:
        if analysis is None:
            return [], [], [], [], []
        rows = analysis.ladder.diagnostics
        steps = [f"{row['small']}→{row['large']}" for row in rows]
        r2 = [float(row["r2"]) for row in rows]
        residual = [float(row["residual_explained_variance_ratio"]) for row in rows]
        fitted = [max(abs(float(row["max_abs_corr_prefix"])), 1e-17) for row in rows]
        pooled = [max(value, 1e-17) for value in analysis.block_correlations]
        return steps, r2, residual, fitted, pooled

    @staticmethod
    def _table_html(analysis: Any) -> str:
        if analysis is None:
            return "<span class='rd-hint'>Press Compute to fit a ladder.</span>"
        pooled = analysis.block_correlations
        ladder = analysis.ladder
        lines = ["<table class='rd-table'><tr><th>step</th><th>dims</th><th>regressor</th><th>R²</th>"
                 "<th>PCR components kept</th><th>residual variance kept</th>"
                 "<th>max |corr| with prefix (fit / pooled)</th><th>orthogonal</th></tr>"]
        for row, pooled_corr in zip(ladder.diagnostics, pooled):
            fitted = abs(float(row["max_abs_corr_prefix"]))
            components = row.get("n_regression_components")
            if not np.isfinite(fitted):
                ok = "unknown (imported scaler files)"
            elif fitted < ORTHOGONAL_TOLERANCE:
                ok = "✓"
            elif row["fit_on"] == "raw":  # fitted on the raw input, applied to the nested one
                ok = "✗ (fitted on raw inputs)"
            elif row["regressor"] == "pcr":  # uncorrelated with the kept input PCs, not the discarded ones
                ok = f"✓ to the {components} kept PCs"
            else:
                ok = "✗"
            lines.append(
                f"<tr><td>{html.escape(row['small'])} → {html.escape(row['large'])}</td>"
                f"<td>{row['d_small']} → {row['d_large']} (+{row['n_residual_components']})</td>"
                f"<td>{html.escape(str(row['regressor']))}</td><td>{float(row['r2']):.3f}</td>"
                f"<td>{'—' if components is None else int(components)} of {row['d_small']}</td>"
                f"<td>{float(row['residual_explained_variance_ratio']):.1%}</td>"
                f"<td>{fitted:.1e} / {pooled_corr:.2f}</td><td>{ok}</td></tr>")
        lines.append("</table>")
        lines.append(f"<div class='rd-hint rd-ladder-id'>{html.escape(ladder.describe())}. Correlations: on the "
                     f"ladder's fitting residues (from its moments) / on the pooled rows shown.</div>")
        return "".join(lines)

    def update(self, analysis: Any) -> None:
        """Show a new analysis: a new figure built with its data replaces the old one.

        Not changed in place, as in the other panels (:func:`~.widgets.replace_widgets`).
        """
        old, self.figure = self.figure, self._make_figure(analysis)
        replace_widgets(self.widget, (*self.widget.children[:-1], self.figure), [old])
        self.table.value = self._table_html(analysis)


def build_decomposition_panel(state: DashboardState) -> DecompositionPanel:
    """Build the decomposition panel (see :class:`DecompositionPanel`)."""
    return DecompositionPanel(state)
