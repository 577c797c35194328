"""On-disk embedding store (HDF5): pooled vectors per model, joint moments, resumable and crash-safe.

API
---
>>> from revdistill.store import EmbeddingStore
>>> store = EmbeddingStore("demo.h5")
>>> store.embed(records, models=("tiny-32", "tiny-64"))     # computes only records not stored yet
>>> ids, pooled = store.pooled("tiny-64")                    # list[str], (n, 64) float32
>>> store.moments()                                          # Moments over every stored residue
>>> store.per_residue("tiny-64", "P0CG48")                   # (length, 64), if kept (per_residue=...)

``EmbeddingStore(path)``
    Open or prepare a store; nothing is written until :meth:`EmbeddingStore.embed`.
``store.embed(records, models=..., device="cpu", dtype="fp32", per_residue=False, storage_dtype="float32",
weights_dir=None, token_budget=None, long_sequences="window", flush_every=1024, progress=True) -> int``
    Embed the records not yet stored (by id; a stored id whose sequence changed is an error) with every
    model at once and return how many were added. Under ``torchrun`` records are sharded across ranks.
``store.ids()``, ``len(store)``, ``store.models()``, ``store.dims()``, ``store.lengths()``,
``store.sequence_hashes()``, ``store.pooled(model)``, ``store.moments()``, ``store.per_residue(model, id)``,
``store.per_residue_ids()``, ``store.info()``.

Layout and crash safety
-----------------------
``path`` is one HDF5 file::

    attrs: format="revdistill-embedding-store", version, models (JSON), dims (JSON), storage_dtype
    ids (n,) str, hashes (n,) sha256 hex, lengths (n,) int64, pooled/<model> (n, dim)
    moments/{meta,count,mean,scatter}           Moments.to_state() of every stored residue, all models
    per_residue/{ids,starts,lengths}, per_residue/<model> (total_residues, dim)
    absorbed (k,) str                           names of the part files merged into this file

While a run goes, every ``flush_every`` records are written as a complete part file in
``<path>.parts/`` (written under a temporary name, then renamed: atomic). At the end of a run, and at
the start of the next one, parts are merged into a new copy of the main file that replaces it with an
atomic ``os.replace``; the copy lists the parts it absorbed, so a crash between the replace and the
deletion of the parts cannot count them twice. ``kill -9`` at any moment therefore loses at most the
part being written, and rerunning the same command resumes from there (or call
:meth:`EmbeddingStore.consolidate` to merge the parts without embedding more). A single-process
:meth:`EmbeddingStore.embed` holds an exclusive lock on ``<path>.lock``, so concurrent writers (two
dashboard visitors, two shells) take turns and the later one finds the records already stored; the
ranks of one ``torchrun`` job write disjoint parts and rank 0 merges them (one job per store).
Readers never write, so they may read while a run is going and see what the finished runs committed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from revdistill._arrays import file_lock

logger = logging.getLogger(__name__)

__all__ = ["EmbeddingStore", "FORMAT_NAME", "FORMAT_VERSION", "sequence_hash"]

FORMAT_NAME = "revdistill-embedding-store"
FORMAT_VERSION = 1
_STORAGE_DTYPES = ("float32", "float16")


def sequence_hash(sequence: str) -> str:
    """SHA-256 hex digest of the upper-cased sequence."""
    return hashlib.sha256(sequence.upper().encode("ascii")).hexdigest()


def _h5py():
    import h5py

    return h5py


def _str_dtype():
    return _h5py().string_dtype(encoding="utf-8")


def _open_checked(path: Path, what: str):
    """Open an HDF5 file read-only and check it is a store (or a part) of this version."""
    h5py = _h5py()
    try:
        handle = h5py.File(path, "r")
    except (OSError, ValueError) as error:
        raise ValueError(f"{what} {path} is not a readable HDF5 file (corrupt or foreign): {error}") from error
    found = handle.attrs.get("format")
    if isinstance(found, bytes):
        found = found.decode()
    if found != FORMAT_NAME:
        handle.close()
        raise ValueError(f"{what} {path} is an HDF5 file but not a revdistill embedding store "
                         f"(format attribute {found!r}, expected {FORMAT_NAME!r})")
    version = int(handle.attrs.get("version", -1))
    if version != FORMAT_VERSION:
        handle.close()
        raise ValueError(f"{what} {path} has store format version {version}; this revdistill reads "
                         f"version {FORMAT_VERSION}")
    return handle


def _decode(values) -> list[str]:
    return [value.decode() if isinstance(value, bytes) else str(value) for value in values]


def _append(group, name: str, values: np.ndarray) -> None:
    """Append rows to a resizable dataset, creating it on first use."""
    values = np.asarray(values)
    if name not in group:
        maxshape = (None,) + values.shape[1:]
        chunks: tuple | bool = True
        if values.ndim == 2:  # about 1 MiB per chunk, whatever the first append's size
            rows = max(1, min(4096, (1 << 20) // (values.itemsize * max(1, values.shape[1]))))
            chunks = (rows, values.shape[1])
        kwargs = {"dtype": _str_dtype()} if values.dtype.kind in "OUS" else {}
        group.create_dataset(name, data=values, maxshape=maxshape, chunks=chunks, **kwargs)
        return
    dataset = group[name]
    start = dataset.shape[0]
    dataset.resize(start + len(values), axis=0)
    dataset[start:] = values


class EmbeddingStore:
    """A resumable HDF5 store of ESM-2 embeddings for one dataset.

    Parameters
    ----------
    path : str or Path
        The HDF5 file (created on the first :meth:`embed`). Pending parts live in ``<path>.parts/``.

    Raises
    ------
    ValueError
        ``path`` exists but is not a revdistill store (corrupt, foreign, other version).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.parts_dir = Path(str(self.path) + ".parts")
        if self.path.is_dir():
            raise ValueError(f"store path {self.path} is a directory; give a file name such as store.h5")
        if self.path.exists():
            _open_checked(self.path, "store").close()

    # ------------------------------------------------------------------------------ reading
    def exists(self) -> bool:
        """True once something has been stored (main file or pending parts)."""
        return self.path.exists() or bool(self._pending_parts())

    def _read(self):
        """Open the main file read-only. Readers never write: they see what finished runs committed."""
        if not self.path.exists():
            if self._pending_parts():
                raise FileNotFoundError(f"store {self.path} holds only part files of an interrupted run; "
                                        f"rerun embed() (or call consolidate()) to merge them")
            raise FileNotFoundError(f"store {self.path} does not exist yet; call embed() first")
        return _open_checked(self.path, "store")

    def info(self) -> dict:
        """Models, dims, storage dtype, number of records and residues."""
        with self._read() as handle:
            return {"path": str(self.path), "models": json.loads(handle.attrs["models"]),
                    "dims": json.loads(handle.attrs["dims"]), "storage_dtype": str(handle.attrs["storage_dtype"]),
                    "n_records": int(handle["ids"].shape[0]), "n_residues": int(handle["lengths"][:].sum())}

    def models(self) -> list[str]:
        """Model aliases in ladder order."""
        return list(self.info()["models"])

    def dims(self) -> dict[str, int]:
        """Embedding width per model."""
        info = self.info()
        return dict(zip(info["models"], info["dims"]))

    def ids(self) -> list[str]:
        """Record ids in stored order."""
        with self._read() as handle:
            return _decode(handle["ids"][:])

    def __len__(self) -> int:
        return self.info()["n_records"] if self.path.exists() else 0

    def lengths(self) -> np.ndarray:
        """Residues embedded per record, shape (n,)."""
        with self._read() as handle:
            return handle["lengths"][:]

    def sequence_hashes(self) -> dict[str, str]:
        """``{id: sha256 hex}`` of the stored sequences."""
        with self._read() as handle:
            return dict(zip(_decode(handle["ids"][:]), _decode(handle["hashes"][:])))

    def pooled(self, model: str) -> tuple[list[str], np.ndarray]:
        """Mean-pooled vectors of one model.

        Returns
        -------
        ids : list of str
        values : np.ndarray of shape (n_records, dim), float32
        """
        model = self._alias(model)
        with self._read() as handle:
            self._check_model(handle, model)
            return _decode(handle["ids"][:]), handle["pooled"][model][:].astype(np.float32)

    def moments(self, device: str = "cpu"):
        """Joint per-residue :class:`~revdistill.Moments` of every stored model (ladder order)."""
        from revdistill.moments import Moments

        with self._read() as handle:
            return Moments.from_state({key: handle["moments"][key][()] for key in handle["moments"]}, device=device)

    def per_residue_ids(self) -> list[str]:
        """Ids whose per-residue values are stored."""
        with self._read() as handle:
            return _decode(handle["per_residue/ids"][:]) if "per_residue/ids" in handle else []

    def per_residue(self, model: str, record_id: str) -> np.ndarray:
        """Per-residue values of one record, shape (length, dim), float32.

        Raises
        ------
        KeyError
            The record's per-residue values were not kept (``embed(..., per_residue=...)``).
        """
        model = self._alias(model)
        with self._read() as handle:
            self._check_model(handle, model)
            ids = _decode(handle["per_residue/ids"][:]) if "per_residue/ids" in handle else []
            if record_id not in ids:
                raise KeyError(f"no per-residue values stored for record {record_id!r}; embed with "
                               f"per_residue=True or per_residue=[ids] to keep them")
            index = ids.index(record_id)
            start = int(handle["per_residue/starts"][index])
            length = int(handle["per_residue/lengths"][index])
            return handle["per_residue"][model][start:start + length].astype(np.float32)

    @staticmethod
    def _alias(model: str) -> str:
        from revdistill.models import get_spec

        return get_spec(model).alias

    @staticmethod
    def _check_model(handle, model: str) -> None:
        models = json.loads(handle.attrs["models"])
        if model not in models:
            raise ValueError(f"model {model!r} is not in this store; it holds {models}")

    # ------------------------------------------------------------------------------ writing
    def embed(self, records: Iterable[tuple[str, str]] | Mapping[str, str], models: Sequence[str] | str = ("8M",), *,
              device: str = "cpu", dtype: str = "fp32", per_residue: bool | Iterable[str] = False,
              storage_dtype: str = "float32", weights_dir: str | Path | None = None, download: bool = False,
              token_budget: int | None = None, long_sequences: str = "window", flush_every: int = 1024,
              progress: bool = True, rank: int | None = None, world_size: int | None = None,
              on_part: Callable[[int, int], None] | None = None) -> int:
        """Embed the records that are not stored yet and append them.

        Parameters
        ----------
        records : sequence of (id, sequence) or mapping id -> sequence
        models : sequence of str or comma-separated str
            Aliases or fair-esm names, small to large (``("8M", "35M")``, ``"tiny-32,tiny-64"``).
            An existing store must be extended with the same models.
        device, dtype, token_budget, long_sequences
            Passed to :class:`~revdistill.embed.LadderEmbedder`.
        per_residue : bool or iterable of str, default=False
            Also keep per-residue values for all (True) or the given ids among the records computed now.
        storage_dtype : {"float32", "float16"}, default="float32"
            On-disk dtype of pooled and per-residue values, fixed when the store is created.
        weights_dir, download
            Passed to :func:`~revdistill.models.load_esm2`.
        flush_every : int, default=1024
            Records per atomic part file (the most a crash can lose).
        rank, world_size : int, optional
            Shard of this process; default from ``torch.distributed`` when it is initialised.
        on_part : callable, optional
            ``on_part(done, total)`` after each part file is written: records of this process's shard
            embedded so far, and the shard's size (for progress bars in applications).

        Returns
        -------
        int
            Records added by this call (on all ranks together).
        """
        from revdistill.embed import validate_records
        from revdistill.models import get_spec

        specs = [get_spec(name) for name in (models.split(",") if isinstance(models, str) else models)]
        aliases = [spec.alias for spec in specs]
        if not aliases or len(set(aliases)) != len(aliases):
            raise ValueError(f"models={list(models)} must name at least one model, each once")
        if storage_dtype not in _STORAGE_DTYPES:
            raise ValueError(f"storage_dtype={storage_dtype!r} must be one of {_STORAGE_DTYPES}")
        if int(flush_every) < 1:
            raise ValueError(f"flush_every={flush_every} must be a positive integer")
        rank, world_size = self._rank_world(rank, world_size)
        records = validate_records(records)
        if world_size > 1:
            return self._embed(records, specs, device, dtype, per_residue, storage_dtype, weights_dir,
                               download, token_budget, long_sequences, flush_every, progress, rank,
                               world_size, on_part)
        with file_lock(self.path.with_name(self.path.name + ".lock")):
            return self._embed(records, specs, device, dtype, per_residue, storage_dtype, weights_dir,
                               download, token_budget, long_sequences, flush_every, progress, rank,
                               world_size, on_part)

    def _embed(self, records, specs, device, dtype, per_residue, storage_dtype, weights_dir, download,
               token_budget, long_sequences, flush_every, progress, rank, world_size, on_part) -> int:
        from revdistill.embed import LadderEmbedder
        from revdistill.models import load_esm2

        aliases = [spec.alias for spec in specs]
        if rank == 0:
            self.consolidate()
        self._barrier(world_size)
        stored = self._stored_hashes_checked(aliases, [spec.dim for spec in specs], storage_dtype)
        missing = []
        for record_id, sequence in records:
            digest = sequence_hash(sequence)
            if record_id in stored:
                if stored[record_id] != digest:
                    raise ValueError(f"record {record_id!r} is already stored with a different sequence; "
                                     f"use another store or another id")
                continue
            missing.append((record_id, sequence, digest))
        total_new = len(missing)
        shard = missing[rank::world_size]
        stored_residues = self._stored_residues() if rank == 0 else 0
        run_moments = None
        if shard:
            loaded = {spec.alias: load_esm2(spec.alias, weights_dir=weights_dir, download=download)[0]
                      for spec in specs}
            engine = LadderEmbedder(loaded, device=device, dtype=dtype, token_budget=token_budget,
                                    long_sequences=long_sequences, progress=progress)
            keep = per_residue if isinstance(per_residue, (bool, str)) else {str(i) for i in per_residue}
            # part names sort by run start time, then rank and chunk number (stored order follows)
            run_name = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}-r{rank:04d}"
            bar = engine._progress_bar(sum(len(seq) for _, seq, _ in shard), leave=True)
            try:
                for number, start in enumerate(range(0, len(shard), int(flush_every))):
                    chunk = shard[start:start + int(flush_every)]
                    result = engine.run([(record_id, seq) for record_id, seq, _ in chunk], per_residue=keep,
                                        bar=bar)
                    self._write_part(f"part-{run_name}-{number:06d}", result, [d for _, _, d in chunk],
                                     storage_dtype)
                    run_moments = result.moments if run_moments is None else run_moments.merge(result.moments)
                    if on_part is not None:
                        on_part(min(start + int(flush_every), len(shard)), len(shard))
            finally:
                bar.close()
        self._barrier(world_size)
        if rank == 0:
            self.consolidate()
        if world_size > 1:
            self._check_distributed(run_moments, aliases, [spec.dim for spec in specs], stored_residues, rank)
        self._barrier(world_size)
        return total_new

    def _stored_residues(self) -> int:
        if not self.path.exists():
            return 0
        with _open_checked(self.path, "store") as handle:
            return int(handle["moments/count"][()])

    def _check_distributed(self, run_moments, aliases: list[str], dims: list[int], stored_before: int,
                           rank: int) -> None:
        """All-reduce the ranks' moments and check the merged store gained exactly those residues."""
        import torch.distributed as dist
        from revdistill.moments import Moments

        if not (dist.is_available() and dist.is_initialized()):
            return
        if run_moments is None:
            run_moments = Moments(aliases, dims)
        run_moments = run_moments.to("cpu") if dist.get_backend() == "gloo" else run_moments
        run_moments.all_reduce()
        if rank == 0:
            gained = self._stored_residues() - stored_before
            if gained != run_moments.count:
                raise RuntimeError(f"store {self.path} gained {gained} residues but the ranks embedded "
                                   f"{run_moments.count} (all-reduced); a part file was lost")
            logger.info("%d ranks embedded %d residues (all-reduced moments match the store)",
                        dist.get_world_size(), run_moments.count)

    # ------------------------------------------------------------------------------ internals
    @staticmethod
    def _rank_world(rank: int | None, world_size: int | None) -> tuple[int, int]:
        if rank is None or world_size is None:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                return dist.get_rank(), dist.get_world_size()
            return 0, 1
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"rank={rank} must be between 0 and world_size-1={int(world_size) - 1}")
        return int(rank), int(world_size)

    @staticmethod
    def _barrier(world_size: int) -> None:
        if world_size > 1:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.barrier()

    def _stored_hashes_checked(self, aliases: list[str], dims: list[int], storage_dtype: str) -> dict[str, str]:
        if not self.path.exists():
            return {}
        with _open_checked(self.path, "store") as handle:
            stored_models = json.loads(handle.attrs["models"])
            if stored_models != aliases:
                raise ValueError(f"store {self.path} holds models {stored_models}; asked for {aliases}. "
                                 f"Use the same models in the same order, or another store")
            stored_dtype = str(handle.attrs["storage_dtype"])
            if stored_dtype != storage_dtype:
                raise ValueError(f"store {self.path} was created with storage_dtype={stored_dtype!r}; "
                                 f"asked for {storage_dtype!r}")
            return dict(zip(_decode(handle["ids"][:]), _decode(handle["hashes"][:])))

    def _pending_parts(self) -> list[Path]:
        if not self.parts_dir.is_dir():
            return []
        return sorted(path for path in self.parts_dir.glob("part-*.h5"))

    def _write_part(self, name: str, result, hashes: list[str], storage_dtype: str) -> Path:
        """Write one complete part under a temporary name and rename it into place (atomic)."""
        h5py = _h5py()
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        final = self.parts_dir / f"{name}.h5"
        temporary = self.parts_dir / f".{name}.h5.tmp"
        models = list(result.pooled)
        with h5py.File(temporary, "w") as handle:
            self._write_header(handle, models, [result.pooled[m].shape[1] for m in models], storage_dtype)
            handle.create_dataset("ids", data=np.array(result.ids, dtype=object), dtype=_str_dtype())
            handle.create_dataset("hashes", data=np.array(hashes, dtype=object), dtype=_str_dtype())
            handle.create_dataset("lengths", data=result.lengths.astype(np.int64))
            for model in models:
                handle.create_dataset(f"pooled/{model}", data=result.pooled[model].astype(storage_dtype))
            for key, value in result.moments.to_state().items():
                handle.create_dataset(f"moments/{key}", data=value)
            kept = [record_id for record_id in result.ids if record_id in result.per_residue.get(models[0], {})]
            if kept:
                lengths = np.array([len(result.per_residue[models[0]][i]) for i in kept], dtype=np.int64)
                handle.create_dataset("per_residue/ids", data=np.array(kept, dtype=object), dtype=_str_dtype())
                handle.create_dataset("per_residue/starts", data=np.concatenate([[0], np.cumsum(lengths)[:-1]]))
                handle.create_dataset("per_residue/lengths", data=lengths)
                for model in models:
                    values = np.concatenate([result.per_residue[model][i] for i in kept]).astype(storage_dtype)
                    handle.create_dataset(f"per_residue/{model}", data=values)
        _fsync(temporary)
        os.replace(temporary, final)
        _fsync_dir(self.parts_dir)
        return final

    @staticmethod
    def _write_header(handle, models: list[str], dims: list[int], storage_dtype: str) -> None:
        handle.attrs["format"] = FORMAT_NAME
        handle.attrs["version"] = FORMAT_VERSION
        handle.attrs["models"] = json.dumps(models)
        handle.attrs["dims"] = json.dumps([int(d) for d in dims])
        handle.attrs["storage_dtype"] = storage_dtype

    def consolidate(self) -> int:
        """Merge pending part files into the main file (atomically); return how many were merged."""
        self._remove_stale_temporaries()
        parts = self._pending_parts()
        if not parts:
            return 0
        absorbed: set[str] = set()
        if self.path.exists():
            with _open_checked(self.path, "store") as handle:
                absorbed = set(_decode(handle["absorbed"][:])) if "absorbed" in handle else set()
        leftovers = [part for part in parts if part.name in absorbed]
        for part in leftovers:  # merged before a crash, not yet deleted
            part.unlink()
        parts = [part for part in parts if part.name not in absorbed]
        if not parts:
            return 0
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self._merge_into(temporary, parts)
            _fsync(temporary)
            os.replace(temporary, self.path)
            _fsync_dir(self.path.parent)
        finally:
            if temporary.exists():
                temporary.unlink()
        for part in parts:
            part.unlink()
        logger.info("merged %d part file(s) into %s", len(parts), self.path)
        return len(parts)

    def _remove_stale_temporaries(self) -> None:
        """Delete half-written files left by a killed writer (never renamed into place, so never read)."""
        stale = list(self.path.parent.glob(f".{self.path.name}.*.tmp"))
        if self.parts_dir.is_dir():
            stale += list(self.parts_dir.glob(".part-*.h5.tmp"))
        for path in stale:
            path.unlink(missing_ok=True)

    def _merge_into(self, target: Path, parts: list[Path]) -> None:
        from revdistill.moments import Moments

        h5py = _h5py()
        with h5py.File(target, "w") as out:
            moments = None
            ids: set[str] = set()
            if self.path.exists():
                with _open_checked(self.path, "store") as main:
                    for key, value in main.attrs.items():
                        out.attrs[key] = value
                    for key in main:
                        if key != "moments":
                            main.copy(main[key], out, name=key)
                    moments = Moments.from_state({k: main["moments"][k][()] for k in main["moments"]})
                    ids = set(_decode(main["ids"][:]))
            for part in parts:
                with _open_checked(part, "part file") as handle:
                    if "format" not in out.attrs:
                        for key, value in handle.attrs.items():
                            out.attrs[key] = value
                    elif handle.attrs["models"] != out.attrs["models"]:
                        raise ValueError(f"part file {part} holds models {handle.attrs['models']}, the store "
                                         f"{out.attrs['models']}; delete the part file")
                    part_ids = _decode(handle["ids"][:])
                    clash = ids.intersection(part_ids)
                    if clash:
                        raise ValueError(f"part file {part} repeats stored ids ({sorted(clash)[:5]}); two "
                                         f"writers used this store at once. Delete the part file and rerun")
                    ids.update(part_ids)
                    self._append_part(out, handle)
                    part_moments = Moments.from_state({k: handle["moments"][k][()] for k in handle["moments"]})
                    moments = part_moments if moments is None else moments.merge(part_moments)
                _append(out, "absorbed", np.array([part.name], dtype=object))
            if "moments" in out:
                del out["moments"]
            for key, value in moments.to_state().items():
                out.create_dataset(f"moments/{key}", data=value)

    @staticmethod
    def _append_part(out, part) -> None:
        models = json.loads(part.attrs["models"])
        for key in ("ids", "hashes", "lengths"):
            _append(out, key, part[key][:])
        for model in models:
            _append(out, f"pooled/{model}", part["pooled"][model][:])
        if "per_residue/ids" in part:
            offset = 0
            if "per_residue/lengths" in out:
                offset = int(out["per_residue/starts"][-1] + out["per_residue/lengths"][-1])
            _append(out, "per_residue/ids", part["per_residue/ids"][:])
            _append(out, "per_residue/starts", part["per_residue/starts"][:] + offset)
            _append(out, "per_residue/lengths", part["per_residue/lengths"][:])
            for model in models:
                _append(out, f"per_residue/{model}", part["per_residue"][model][:])


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
