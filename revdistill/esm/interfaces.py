"""Typed interfaces between the layers: what an embedding store and an embedder offer (``typing.Protocol``).

They are structural: :class:`~revdistill.esm.store.EmbeddingStore` is an :class:`EmbeddingStoreLike`,
:class:`~revdistill.esm.runner.LocalEmbedder` and the embedding worker's client are :class:`Embedder` s,
without inheriting from them; so is anything else with the same methods. Callers that take "a store"
or "an embedder" annotate with these instead of ``Any`` (the experiment, the reference ladders, the
dashboard's estimates, the command line). Nothing heavy is imported here.

>>> import tempfile, pathlib
>>> from revdistill.esm.runner import LocalEmbedder
>>> from revdistill.esm.store import EmbeddingStore
>>> isinstance(EmbeddingStore(pathlib.Path(tempfile.mkdtemp()) / "s.h5"), EmbeddingStoreLike)
True
>>> isinstance(LocalEmbedder(), Embedder)
True
"""
from __future__ import annotations

from pathlib import Path
from typing import (TYPE_CHECKING, Any, Callable, ContextManager, Iterable, Mapping, Protocol, Sequence,
                    runtime_checkable)

if TYPE_CHECKING:
    import numpy as np

    from revdistill.core.moments import Moments
    from revdistill.esm.embed import EmbeddingResult

__all__ = ["EmbeddingStoreLike", "EmbedSettings", "Embedder", "ProgressCallback"]

#: ``on_progress(done, total)``: records of this process's share embedded so far, and that share's size.
ProgressCallback = Callable[[int, int], None]


@runtime_checkable
class EmbeddingStoreLike(Protocol):
    """An embedding store as its readers (the experiment, ladders) and writers (the embedders) use it.

    Reading: :meth:`ids`, :meth:`pooled`, :meth:`moments`. Writing, one writer at a time under
    :meth:`writer_lock`: :meth:`missing` says what to embed, :meth:`write_part` commits a part,
    :meth:`consolidate` merges the parts. See :class:`~revdistill.esm.store.EmbeddingStore`.
    """

    @property
    def path(self) -> Path:
        """The store's file (an embedder in another process opens the store by it)."""
        ...

    def exists(self) -> bool:
        """True once something has been stored."""
        ...

    def ids(self) -> list[str]:
        """Record ids in stored order."""
        ...

    def pooled(self, model: str) -> tuple[list[str], np.ndarray]:
        """``(ids, values)``: mean-pooled vectors of one model, shape (n_records, dim)."""
        ...

    def moments(self, device: str = "cpu") -> Moments:
        """Joint per-residue moments of every stored model (ladder order)."""
        ...

    def writer_lock(self, wait: bool = True) -> ContextManager[Any]:
        """The inter-process writer lock (re-entrant)."""
        ...

    def stored_residues(self) -> int:
        """Residues counted in the committed moments."""
        ...

    def missing(self, records: Sequence[tuple[str, str]], models: Sequence[str], dims: Sequence[int],
                storage_dtype: str) -> list[tuple[str, str, str]]:
        """Records not stored yet, as ``(id, sequence, sha256)``, in the given order."""
        ...

    def write_part(self, name: str, result: EmbeddingResult, hashes: list[str], storage_dtype: str) -> Path:
        """Commit one part atomically; return its file."""
        ...

    def consolidate(self, *, wait: bool = True) -> int:
        """Merge pending parts into the main file; return how many were merged."""
        ...


@runtime_checkable
class EmbedSettings(Protocol):
    """What callers read of an embedder's settings (:class:`~revdistill.esm.runner.EmbedOptions` is one)."""

    @property
    def device(self) -> str:
        ...

    @property
    def long_sequences(self) -> str:
        """``"window"``, ``"truncate"`` or ``"error"`` (see :mod:`revdistill.esm.batching`)."""
        ...

    def numerics(self) -> dict[str, Any]:
        """The settings that change the numbers an embedding has (part of a ladder's identity)."""
        ...


@runtime_checkable
class Embedder(Protocol):
    """Embeds records into a store with a ladder of models (:class:`~revdistill.esm.runner.LocalEmbedder`,
    the embedding worker's client)."""

    @property
    def options(self) -> EmbedSettings:
        ...

    def embed(self, store: EmbeddingStoreLike, records: Iterable[tuple[str, str]] | Mapping[str, str],
              models: Sequence[str] | str, *, per_residue: bool | Iterable[str] = False,
              on_progress: ProgressCallback | None = None) -> int:
        """Embed the records ``store`` lacks with every model; return how many were added."""
        ...
