"""Panel 6, the mutational landscape: position × amino acid, measured beside the probe's predictions.

For a DMS task it draws :func:`revdistill.views.landscape.landscape_figure` from the experiment's own
out-of-fold predictions (``analysis.result.tasks[0].predictions``; no second probe): the representation
and CV scheme are chosen in dropdowns, and a second representation (by default what the smaller models
give alone, the reverse-distilled prefix at the previous level boundary) is compared position by position.
For a set of proteins (no mutants) the panel says it needs a DMS assay.
"""
from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from revdistill.views.style import SCHEME_LABELS

from .state import DashboardState
from .widgets import as_figure_widget, hint, replace_widgets, section_title, subsample_note

__all__ = ["LandscapePanel", "build_landscape_panel", "prediction_options", "default_keys"]

NEEDS_DMS = ("The mutational landscape needs a DMS assay (single mutants of one protein): choose a ProteinGym "
             "assay or upload a DMS CSV, then press Compute.")
ORDER = {"esm2": 0, "rd": 1, "naive": 2, "nested": 3, "truncated": 4}


def prediction_options(predictions: dict, scheme: str) -> list[tuple[str, tuple]]:
    """``(label, key without scheme)`` for every prediction of ``scheme``, grouped by representation."""
    from revdistill.views.landscape import prediction_label  # noqa: PLC0415

    keys = [key for key in predictions if key[0] == scheme]
    both = len({key[1] for key in keys if key[1]}) > 1
    keys.sort(key=lambda key: (ORDER.get(key[2], 9), key[1], key[4]))
    return [(prediction_label(key, both), key[1:]) for key in keys]


def default_keys(options: list[tuple[str, tuple]], boundaries: tuple[int, ...]) -> tuple[tuple, tuple | None]:
    """The largest reverse-distilled model, compared with the nested prefix at the previous level boundary."""
    keys = [key for _, key in options]
    rd = [key for key in keys if key[1] == "rd"]
    primary = max(rd, key=lambda key: key[3]) if rd else keys[-1]
    compare = None
    if len(boundaries) > 1:
        previous = [key for key in keys if key[1] == "nested" and key[0] == primary[0] and key[3] == boundaries[-2]]
        compare = previous[0] if previous else None
    return primary, compare


class LandscapePanel:
    """Mutational landscape.

    Attributes
    ----------
    widget : ipywidgets.VBox
    representation, compare, scheme : ipywidgets.Dropdown
        What predicted the middle heatmap, what to compare per position, which CV scheme's predictions.
    figure : plotly.graph_objects.FigureWidget or None
        Rebuilt with its data for every choice (None until a DMS analysis is shown).
    landscape : Landscape or None
        What the figure shows.
    """

    def __init__(self, state: DashboardState) -> None:
        self.state = state
        self.analysis: Any = None
        self.landscape: Any = None
        self.figure: Any = None
        self.scheme = widgets.Dropdown(options=[("—", "")], description="CV scheme", disabled=True,
                                       layout={"width": "260px"})
        self.representation = widgets.Dropdown(options=[("—", ())], description="Prediction", disabled=True,
                                               layout={"width": "520px"})
        self.compare = widgets.Dropdown(options=[("none", None)], description="Compare", disabled=True,
                                        layout={"width": "520px"})
        for dropdown, name in ((self.scheme, "scheme"), (self.representation, "representation"),
                               (self.compare, "compare")):
            dropdown.add_class(f"rd-landscape-{name}")
        self.message = widgets.HTML(f"<span class='rd-hint'>{html.escape(NEEDS_DMS)}</span>")
        self.message.add_class("rd-landscape-status")
        self.holder = widgets.Box([])
        self._filling = False  # set while the dropdowns are refilled: their callbacks then do nothing
        self.widget = widgets.VBox([
            section_title("6 · Mutational landscape",
                          "Measured score, the probe's out-of-fold prediction and their difference, per position "
                          "and amino acid (× = wild type); per-position Spearman along the sequence."),
            widgets.HBox([self.scheme]), self.representation, self.compare, self.message,
            hint("Hover a cell for the mutant, its score and its prediction. The lower curve asks: where does a "
                 "larger model's block help?"),
            self.holder,
        ])
        self.widget.add_class("rd-panel")
        self.scheme.observe(state.guard(self.on_scheme, "landscape scheme"), names="value")
        self.representation.observe(state.guard(self.on_choice, "landscape prediction"), names="value")
        self.compare.observe(state.guard(self.on_choice, "landscape comparison"), names="value")
        state.on_analysis(self.update)

    def update(self, analysis: Any) -> None:
        """New analysis: offer its predictions, or say that a protein set has no landscape."""
        self.analysis = analysis
        if not analysis.task.is_mutant_set:
            for dropdown in (self.scheme, self.representation, self.compare):
                dropdown.disabled = True
            self.message.value = f"<span class='rd-hint'>{html.escape(NEEDS_DMS)}</span>"
            self._replace_figure(None)
            return
        schemes = analysis.schemes
        self._filling = True
        try:
            self.scheme.options = [(SCHEME_LABELS.get(s, s), s) for s in schemes]
            self.scheme.value = schemes[0]
            self._fill_representations()
        finally:
            self._filling = False
        for dropdown in (self.scheme, self.representation, self.compare):
            dropdown.disabled = False
        self.show()

    def _fill_representations(self) -> None:
        predictions = self.analysis.predictions
        options = prediction_options(predictions, self.scheme.value)
        primary, compare = default_keys(options, tuple(self.analysis.boundaries))
        old_primary, old_compare = self.representation.value, self.compare.value
        self.representation.options = options
        self.compare.options = [("none", None)] + options
        keys = [key for _, key in options]
        self.representation.value = old_primary if old_primary in keys else primary
        self.compare.value = old_compare if old_compare in keys else compare

    def on_scheme(self, change: dict[str, Any]) -> None:
        """Another scheme: the same representations' predictions under it."""
        if self._filling or self.analysis is None:
            return
        self._filling = True
        try:
            self._fill_representations()
        finally:
            self._filling = False
        self.show()

    def on_choice(self, change: dict[str, Any]) -> None:
        """Another representation or comparison: redraw."""
        if self._filling or self.analysis is None or not self.representation.value:
            return
        self.show()

    def show(self) -> None:
        """Build the landscape of the chosen prediction and show it in a new figure."""
        from revdistill.views.landscape import landscape, landscape_figure, prediction_label  # noqa: PLC0415

        analysis, scheme = self.analysis, self.scheme.value
        predictions = analysis.predictions
        key = (scheme, *self.representation.value)
        table = analysis.task.table
        self.landscape = landscape(table, predictions[key])
        compare = None
        if self.compare.value is not None:
            compare = landscape(table, predictions[(scheme, *self.compare.value)])
        both = len({k[1] for k in predictions if k[1]}) > 1
        name = prediction_label(key, both)
        note = " · ".join(part for part in (
            f"{SCHEME_LABELS.get(scheme, scheme)} 5-fold CV, out-of-fold predictions of the experiment's ridge probe",
            subsample_note(analysis.task)) if part)
        compare_name = prediction_label((scheme, *self.compare.value), both) if compare is not None else ""
        figure = landscape_figure(self.landscape, prediction_name=name, compare=compare, compare_name=compare_name,
                                  title=f"Mutational landscape · {analysis.task.name}", note=note)
        self._replace_figure(as_figure_widget(figure))
        per = self.landscape.per_position["spearman"]
        self.message.value = (f"<span class='rd-hint'>{self.landscape.n_cells:,} measured (position, amino acid) "
                              f"cells over {len(self.landscape.positions):,} positions · per-position Spearman at "
                              f"{int(per.notna().sum()):,} positions, median {per.median():.3f}</span>")

    def _replace_figure(self, figure: Any) -> None:
        old, self.figure = self.figure, figure
        replace_widgets(self.holder, () if figure is None else (figure,), [old])


def build_landscape_panel(state: DashboardState) -> LandscapePanel:
    """Build the mutational landscape panel (see :class:`LandscapePanel`)."""
    return LandscapePanel(state)
