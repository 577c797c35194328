"""The method: moments, one reverse-distillation step, the ladder (both fit conventions), the nested
embedding, the naive baseline and the import of the authors' scaler files. Numpy/torch only."""
from revdistill.core.base import NotFittedError, check_is_fitted
from revdistill.core.distill import ReverseDistiller
from revdistill.core.ladder import FIT_CONVENTIONS, DistillationLadder
from revdistill.core.moments import Moments
from revdistill.core.naive import NaiveConcatPCA
from revdistill.core.nested import NestedEmbedding
from revdistill.core.reference import load_reference_ladder, load_reference_scaler

__all__ = [
    "DistillationLadder", "FIT_CONVENTIONS", "Moments", "NaiveConcatPCA", "NestedEmbedding", "NotFittedError",
    "ReverseDistiller", "check_is_fitted", "load_reference_ladder", "load_reference_scaler",
]
