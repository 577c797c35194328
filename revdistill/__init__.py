"""revdistill: reverse distillation of protein language models.

The data flow, one sub-package per stage: :mod:`revdistill.esm` (sequences -> embeddings, stored)
-> :mod:`revdistill.core` (moments -> ladder fit -> nested embeddings) -> :mod:`revdistill.experiment`
(reference ladders, protocol, features, probe, aggregation) -> :mod:`revdistill.views` (projections,
figures) -> :mod:`revdistill.dashboard` (widgets). :mod:`revdistill.proteingym` reads the benchmark,
:mod:`revdistill.cli` is the command line. Under them all, :mod:`revdistill.io` (cache folders, files,
downloads). The core objects are importable from the package root.
"""
import importlib

#: The core objects importable from the package root, each from its home in :mod:`revdistill.core`.
#: Loaded on first use (PEP 562), so ``import revdistill.io.paths`` or the model registry pulls in no torch.
_CORE_EXPORTS = (
    "DistillationLadder",
    "FIT_CONVENTIONS",
    "Moments",
    "NaiveConcatPCA",
    "NestedEmbedding",
    "NotFittedError",
    "ReverseDistiller",
    "load_reference_ladder",
    "load_reference_scaler",
)

__version__ = "0.2.0"

__all__ = [*_CORE_EXPORTS, "__version__"]


def __getattr__(name: str):
    if name in _CORE_EXPORTS:
        return getattr(importlib.import_module("revdistill.core"), name)
    raise AttributeError(f"module 'revdistill' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_CORE_EXPORTS))
