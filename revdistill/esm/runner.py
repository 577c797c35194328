"""Embedding records into a store: load the models once, embed what is missing, commit atomic parts.

The store (:class:`~revdistill.esm.store.EmbeddingStore`) only stores; this module decides what to
embed and drives the :class:`~revdistill.esm.embed.LadderEmbedder`. :class:`EmbedOptions` groups
every setting that is not the data or the models; :class:`LocalEmbedder` keeps loaded models for
its lifetime, so a corpus and an assay embedded one after the other load each model once.

Under ``torchrun`` (an initialised ``torch.distributed`` group) the missing records are sharded
across ranks; each rank writes its own parts and rank 0 merges them.

>>> import tempfile, pathlib
>>> from revdistill.esm.store import EmbeddingStore
>>> store = EmbeddingStore(pathlib.Path(tempfile.mkdtemp()) / "demo.h5")
>>> LocalEmbedder().embed(store, [("ubq", "MQIFVKTLTGK")], ("tiny-32", "tiny-48"))
1
>>> LocalEmbedder().embed(store, [("ubq", "MQIFVKTLTGK")], ("tiny-32", "tiny-48"))   # already stored
0
"""
from __future__ import annotations

import logging
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from revdistill.esm.batching import LONG_MODES
from revdistill.esm.interfaces import EmbeddingStoreLike, ProgressCallback
from revdistill.esm.models.registry import get_spec, parse_models

logger = logging.getLogger(__name__)

__all__ = ["EmbedOptions", "LocalEmbedder", "ProgressCallback", "DTYPE_BYTES", "default_dtype"]

#: Bytes per weight in each numerics (what a model occupies on its device).
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
_DTYPES = tuple(DTYPE_BYTES)
_STORAGE_DTYPES = ("float32", "float16")


def default_dtype(device: str) -> str:
    """The numerics used on ``device`` unless asked otherwise: ``"bf16"`` on CUDA, ``"fp32"`` elsewhere."""
    return "bf16" if str(device).startswith("cuda") else "fp32"


@dataclass(frozen=True)
class EmbedOptions:
    """How records are embedded (everything but the data and the models).

    Attributes
    ----------
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
    dtype : {"fp32", "bf16", "fp16"}
        Weights and activations; rotary tables and pooling stay float32, moments float64.
    token_budget : int or None
        Max padded tokens per batch (default 16384 on CUDA, 4096 otherwise).
    long_sequences : {"window", "truncate", "error"}
        Records over 1022 residues (see :mod:`revdistill.esm.embed`).
    weights_dir : Path or None
        Folder of ESM-2 checkpoints (default fair-esm's torch-hub cache).
    download : bool
        Let a missing checkpoint be downloaded (see :mod:`revdistill.esm.models.weights`).
    storage_dtype : {"float32", "float16"}
        On-disk dtype of stored vectors, fixed when a store is created.
    flush_every : int
        Records per atomic part file (the most a crash can lose).
    progress : bool
        Show a tqdm bar in residues/s.
    """

    device: str = "cpu"
    dtype: str = "fp32"
    token_budget: int | None = None
    long_sequences: str = "window"
    weights_dir: Path | None = None
    download: bool = False
    storage_dtype: str = "float32"
    flush_every: int = 1024
    progress: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype={self.dtype!r} must be one of {_DTYPES}")
        if self.long_sequences not in LONG_MODES:
            raise ValueError(f"long_sequences={self.long_sequences!r} must be one of {LONG_MODES}")
        if self.storage_dtype not in _STORAGE_DTYPES:
            raise ValueError(f"storage_dtype={self.storage_dtype!r} must be one of {_STORAGE_DTYPES}")
        if isinstance(self.flush_every, bool) or not isinstance(self.flush_every, int) or self.flush_every < 1:
            raise ValueError(f"flush_every={self.flush_every!r} must be a positive integer")
        if self.token_budget is not None and (isinstance(self.token_budget, bool) or int(self.token_budget) < 3):
            raise ValueError(f"token_budget={self.token_budget!r} must be an integer of at least 3 tokens")
        if not isinstance(self.device, str) or self.device.split(":")[0] not in ("cpu", "cuda", "mps"):
            raise ValueError(f"device={self.device!r} must be 'cpu', 'cuda', 'cuda:<n>' or 'mps'")

    def numerics(self) -> dict[str, Any]:
        """The settings that change the numbers an embedding has (part of a ladder's identity)."""
        return {"dtype": self.dtype, "long_sequences": self.long_sequences}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable settings."""
        values = asdict(self)
        values["weights_dir"] = None if self.weights_dir is None else str(self.weights_dir)
        return values


class LocalEmbedder:
    """Embed records into stores with models loaded in this process (once, then kept).

    Parameters
    ----------
    options : EmbedOptions, optional
    """

    def __init__(self, options: EmbedOptions | None = None) -> None:
        self.options = options or EmbedOptions()
        self._models: dict[str, Any] = {}

    def models(self, aliases: Sequence[str]) -> dict[str, Any]:
        """The loaded modules of ``aliases`` (loading the ones not loaded yet), in the given order."""
        from revdistill.esm.models.loading import load_esm2  # noqa: PLC0415

        for alias in aliases:
            if alias not in self._models:
                self._models[alias] = load_esm2(alias, weights_dir=self.options.weights_dir,
                                                download=self.options.download)[0]
        return {alias: self._models[alias] for alias in aliases}

    def release(self) -> None:
        """Drop the loaded models (and free their memory)."""
        self._models.clear()

    def embed(self, store: EmbeddingStoreLike, records: Iterable[tuple[str, str]] | Mapping[str, str],
              models: Sequence[str] | str, *, per_residue: bool | Iterable[str] = False,
              on_progress: ProgressCallback | None = None, rank: int | None = None,
              world_size: int | None = None) -> int:
        """Embed the records ``store`` lacks with every model and commit them; return how many were added.

        Parameters
        ----------
        store : EmbeddingStore
        records : sequence of (id, sequence) or mapping id -> sequence
            A stored id whose sequence changed is an error.
        models : sequence of str or comma-separated str
            Small to large; an existing store must be extended with the same models.
        per_residue : bool or iterable of str
            Also keep per-residue values for all (True) or the given ids among the records computed now.
        on_progress : callable, optional
            ``on_progress(done, total)`` after each committed part.
        rank, world_size : int, optional
            This process's shard; default from ``torch.distributed`` when initialised.

        Returns
        -------
        int
            Records added (by all ranks together).
        """
        from revdistill.esm.embed import keep_ids  # noqa: PLC0415
        from revdistill.esm.sequences import validate_records  # noqa: PLC0415

        aliases = parse_models(models)
        records = validate_records(records)
        keep = keep_ids(records, per_residue, strict=True)
        rank, world_size = _rank_world(rank, world_size)
        # One writer at a time: a single process, or rank 0 of a torchrun job on behalf of its ranks (they
        # write parts only between the barriers around rank 0's consolidations). The lock is re-entrant,
        # so store.consolidate(), which takes it too, may be called under it.
        if world_size > 1 and rank != 0:
            return self._embed(store, records, aliases, keep, on_progress, rank, world_size)
        with store.writer_lock():
            return self._embed(store, records, aliases, keep, on_progress, rank, world_size)

    def _embed(self, store, records, aliases, keep, on_progress, rank, world_size) -> int:
        from revdistill.esm.embed import LadderEmbedder  # noqa: PLC0415

        options = self.options
        dims = [get_spec(alias).dim for alias in aliases]
        if rank == 0:
            store.consolidate()
        _barrier(world_size)
        missing = store.missing(records, aliases, dims, options.storage_dtype, numerics=options.numerics())
        shard = missing[rank::world_size]
        stored_before = store.stored_residues() if rank == 0 else 0
        run_moments = None
        if shard:
            engine = LadderEmbedder(self.models(aliases), device=options.device, dtype=options.dtype,
                                    token_budget=options.token_budget, long_sequences=options.long_sequences,
                                    progress=options.progress)
            # part names sort by run start time, then rank and chunk number (stored order follows)
            run_name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}-r{rank:04d}"
            bar = engine._progress_bar(sum(len(sequence) for _, sequence, _ in shard), leave=True)
            try:
                for number, start in enumerate(range(0, len(shard), options.flush_every)):
                    chunk = shard[start:start + options.flush_every]
                    result = engine.run([(record_id, sequence) for record_id, sequence, _ in chunk],
                                        per_residue=keep & {record_id for record_id, _, _ in chunk}, bar=bar)
                    store.write_part(f"part-{run_name}-{number:06d}", result, [digest for _, _, digest in chunk],
                                     options.storage_dtype, numerics=options.numerics())
                    run_moments = result.moments if run_moments is None else run_moments.merge(result.moments)
                    if on_progress is not None:
                        on_progress(min(start + options.flush_every, len(shard)), len(shard))
            finally:
                bar.close()
        _barrier(world_size)
        if rank == 0:
            store.consolidate()
        if world_size > 1:
            _check_distributed(store, run_moments, aliases, dims, stored_before, rank)
        _barrier(world_size)
        return len(missing)


def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is None or world_size is None:
        from revdistill.esm.distributed import rank_world  # noqa: PLC0415

        return rank_world()
    if not 0 <= int(rank) < int(world_size):
        raise ValueError(f"rank={rank} must be between 0 and world_size-1={int(world_size) - 1}")
    return int(rank), int(world_size)


def _barrier(world_size: int) -> None:
    if world_size > 1:
        import torch.distributed as dist  # noqa: PLC0415

        if dist.is_available() and dist.is_initialized():
            dist.barrier()


def _check_distributed(store, run_moments, aliases: Sequence[str], dims: Sequence[int], stored_before: int,
                       rank: int) -> None:
    """All-reduce the ranks' moments and check the merged store gained exactly those residues."""
    import torch.distributed as dist  # noqa: PLC0415

    from revdistill.core.moments import Moments  # noqa: PLC0415

    if not (dist.is_available() and dist.is_initialized()):
        return
    if run_moments is None:
        run_moments = Moments(aliases, dims)
    run_moments = run_moments.to("cpu") if dist.get_backend() == "gloo" else run_moments
    run_moments.all_reduce()
    if rank == 0:
        gained = store.stored_residues() - stored_before
        if gained != run_moments.count:
            raise RuntimeError(f"store {store.path} gained {gained} residues but the ranks embedded "
                               f"{run_moments.count} (all-reduced); a part file was lost")
        logger.info("%d ranks embedded %d residues (all-reduced moments match the store)",
                    dist.get_world_size(), run_moments.count)
