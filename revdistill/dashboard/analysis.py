"""What the visitor chooses, without widgets: models, ladder convention, corpus, device.

The computation itself runs in the compute service (:mod:`revdistill.service.analysis`); the panels read
the typed :class:`~revdistill.service.results.AnalysisResult` it returns. Nothing heavy is imported here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

logger = logging.getLogger(__name__)

__all__ = ["Choices", "LADDER_CORPORA", "FIT_ON_CHOICES", "ModelChoice", "default_models", "REAL_MODELS",
           "TINY_FAMILY", "WEIGHTS_HELP", "ordered_models"]

REAL_MODELS = ("8M", "35M", "150M", "650M", "3B", "15B")
TINY_FAMILY = ("tiny-32", "tiny-48", "tiny-64")
DEFAULT_REAL = ("8M", "35M", "150M")
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


def ordered_models(models: tuple[str, ...]) -> tuple[str, ...]:
    """Aliases sorted by width; equal widths are an error."""
    from revdistill.esm.models import get_spec  # noqa: PLC0415

    specs = sorted((get_spec(name) for name in models), key=lambda spec: spec.dim)
    dims = [spec.dim for spec in specs]
    if any(b <= a for a, b in zip(dims, dims[1:])):
        raise ValueError(f"model widths must strictly increase along the ladder, got "
                         f"{dict((spec.alias, spec.dim) for spec in specs)}")
    return tuple(spec.alias for spec in specs)


@dataclass(frozen=True)
class ModelChoice:
    """One checkbox of the models panel: a model and why it cannot be chosen, if it cannot."""

    alias: str
    label: str
    available: bool
    reason: str = ""


def default_models(choices: list[ModelChoice]) -> tuple[str, ...]:
    """8M -> 35M -> 150M when their weights are present, else the tiny family."""
    available = {choice.alias for choice in choices if choice.available}
    if all(alias in available for alias in DEFAULT_REAL):
        return DEFAULT_REAL
    return TINY_FAMILY
