"""revdistill: reverse distillation of protein language models.

The data flow, one sub-package per stage: :mod:`revdistill.esm` (sequences -> embeddings, stored)
-> :mod:`revdistill.core` (moments -> ladder fit -> nested embeddings) -> :mod:`revdistill.experiment`
(reference ladders, protocol, features, probe, aggregation) -> :mod:`revdistill.views` (projections,
figures) -> :mod:`revdistill.dashboard` (widgets). :mod:`revdistill.proteingym` reads the benchmark,
:mod:`revdistill.cli` is the command line. The core objects are importable from the package root.
"""
from revdistill.core import (
    FIT_CONVENTIONS,
    DistillationLadder,
    Moments,
    NaiveConcatPCA,
    NestedEmbedding,
    NotFittedError,
    ReverseDistiller,
    load_reference_ladder,
    load_reference_scaler,
)

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
