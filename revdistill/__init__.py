"""revdistill: reverse distillation of protein language models.

The data flow, one sub-package per stage: :mod:`revdistill.esm` (sequences -> embeddings, stored)
-> :mod:`revdistill.core` (moments -> ladder fit -> nested embeddings) -> :mod:`revdistill.experiment`
(reference ladders, protocol, features, probe, aggregation) -> :mod:`revdistill.views` (projections,
figures) -> :mod:`revdistill.dashboard` (widgets). :mod:`revdistill.proteingym` reads the benchmark,
:mod:`revdistill.cli` is the command line. The core objects are importable from the package root
(imported on first use: ``import revdistill.dashboard`` does not load torch).
"""
import importlib
from typing import Any


__version__ = "0.2.0"

__all__ = [
    "DistillationLadder",
    "FIT_CONVENTIONS",
    "Moments",
    "NaiveConcatPCA",
    "NestedEmbedding",
    "NotFittedError",
    "ReverseDistiller",
    "load_reference_ladder",
    "load_reference_scaler",
    "__version__",
]


def __getattr__(name: str) -> Any:
    """The core objects, imported from :mod:`revdistill.core` on first use (PEP 562)."""
    if name in __all__ and name != "__version__":
        return getattr(importlib.import_module("revdistill.core"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
