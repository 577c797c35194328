"""revdistill: reverse distillation of protein language models.

The core objects are importable from the package root; the embedding engine, ProteinGym tools,
plots and dashboard live in their own modules and import their heavy dependencies lazily.
"""
from revdistill.distill import NotFittedError, ReverseDistiller
from revdistill.ladder import DistillationLadder
from revdistill.moments import Moments
from revdistill.naive import NaiveConcatPCA
from revdistill.nested import NestedEmbedding
from revdistill.reference import load_reference_ladder, load_reference_scaler

__version__ = "0.1.0"

__all__ = [
    "DistillationLadder",
    "Moments",
    "NaiveConcatPCA",
    "NestedEmbedding",
    "NotFittedError",
    "ReverseDistiller",
    "load_reference_ladder",
    "load_reference_scaler",
    "__version__",
]
