"""One palette and one set of labels for every figure (CLI exports, notebooks and the dashboard)."""
from __future__ import annotations

from revdistill.experiment.protocol import REPRESENTATIONS, SCHEME_LABELS

__all__ = ["COLOURS", "PAIRED_COLOURS", "DASH", "FIT_ON_LABELS", "METRIC_LABELS", "SCHEME_LABELS", "series_name",
           "TEMPLATE"]

TEMPLATE = "plotly_white"
#: One colour per representation (the zero-shot reference is grey).
COLOURS = {"esm2": "#1b6ca8", "rd": "#c2492d", "naive": "#5c9e31", "nested": "#c2492d", "truncated": "#1b6ca8",
           "zero_shot": "#767676"}
#: Colour of a paired difference: the colour of what reverse distillation is compared with.
PAIRED_COLOURS = {"rd-esm2": COLOURS["esm2"], "rd-naive": COLOURS["naive"], "prefix-truncated": COLOURS["truncated"]}
#: Line style per fit convention; ``truncated`` is dotted.
DASH = {"": "solid", "nested": "solid", "raw": "dash", "truncated": "dot"}
FIT_ON_LABELS = {"nested": "our fit", "raw": "released fit"}
METRIC_LABELS = {"spearman": "Spearman ρ", "mse": "MSE (standardized)"}


def series_name(representation: str, fit_on: str = "", both: bool = False) -> str:
    """Legend name of a curve; the convention is named only when both conventions are shown."""
    name = REPRESENTATIONS.get(representation, representation)
    return f"{name} ({FIT_ON_LABELS.get(fit_on, fit_on)})" if both and fit_on else name
