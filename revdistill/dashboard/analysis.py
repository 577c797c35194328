"""What the visitor chooses, without widgets: models, ladder convention, corpus, device.

The computation itself runs in the compute service (:mod:`revdistill.service.analysis`); the panels read
the typed :class:`~revdistill.service.results.AnalysisResult` it returns. Nothing heavy is imported here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

__all__ = ["Choices", "LADDER_CORPORA", "FIT_ON_CHOICES", "ModelChoice", "default_models", "WEIGHTS_HELP"]

WEIGHTS_HELP = (
    "To use real ESM-2 weights, put fair-esm checkpoints (e.g. esm2_t6_8M_UR50D.pt and "
    "esm2_t6_8M_UR50D-contact-regression.pt) in ~/.cache/torch/hub/checkpoints/ or in a folder named by "
    "$REVDISTILL_WEIGHTS, or download them once with `revdistill weights download 8M,35M,150M`, then reload "
    "this page."
)
LADDER_CORPORA = {"proteingym": "ProteinGym v1.3 wild types (the reference corpus)",
                  "data": "this data set's own sequences (explicit choice)"}
FIT_ON_CHOICES = {"nested": "ours: each step fitted on the input it is applied to",
                  "raw": "released: fitted on raw embeddings, applied to nested",
                  "both": "both, to compare"}


@dataclass(frozen=True)
class Choices:
    """What the visitor chose in the models panel."""

    models: tuple[str, ...]
    fit_on: str = "nested"
    corpus: str = "proteingym"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.fit_on not in FIT_ON_CHOICES:
            raise ValueError(f"fit_on={self.fit_on!r}; choose from {list(FIT_ON_CHOICES)}")
        if self.corpus not in LADDER_CORPORA:
            raise ValueError(f"corpus={self.corpus!r}; choose from {list(LADDER_CORPORA)}")
        if len(self.models) < 2:
            raise ValueError(f"tick at least two model sizes for a ladder (got {list(self.models) or 'none'})")


@dataclass(frozen=True)
class ModelChoice:
    """One checkbox of the models panel: a model and why it cannot be chosen, if it cannot."""

    alias: str
    label: str
    available: bool
    reason: str = ""


def default_models(choices: list[ModelChoice]) -> tuple[str, ...]:
    """The registry's default ladder (8M -> 35M -> 150M) when its weights are present, else the tiny family."""
    from revdistill.esm.models.registry import DEFAULT_LADDER, TINY_MODELS  # noqa: PLC0415

    available = {choice.alias for choice in choices if choice.available}
    if all(alias in available for alias in DEFAULT_LADDER):
        return DEFAULT_LADDER
    return tuple(spec.alias for spec in TINY_MODELS)
