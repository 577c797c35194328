"""On-disk embedding store (HDF5): pooled vectors per model, joint moments, resumable and crash-safe.

The store only stores; :class:`revdistill.esm.runner.LocalEmbedder` embeds records into it.

>>> import tempfile, pathlib
>>> from revdistill.esm.runner import LocalEmbedder
>>> store = EmbeddingStore(pathlib.Path(tempfile.mkdtemp()) / "demo.h5")
>>> LocalEmbedder().embed(store, [("ubq", "MQIFVKTLTGK"), ("p2", "MKVLAAGIVG")], ("tiny-32", "tiny-64"))
2
>>> ids, pooled = store.pooled("tiny-64")                    # list[str], (n, 64) float32
>>> ids, pooled.shape, store.moments().count                 # moments over every stored residue
(['ubq', 'p2'], (2, 64), 21)

Reading: ``store.ids()``, ``len(store)``, ``store.models()``, ``store.dims()``, ``store.lengths()``,
``store.sequence_hashes()``, ``store.pooled(model)``, ``store.moments()``, ``store.per_residue(model, id)``,
``store.per_residue_ids()``, ``store.info()``. Writing (used by the runner): ``store.missing(...)``,
``store.write_part(...)``, ``store.consolidate()``, ``store.writer_lock()``.

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
part being written, and rerunning the same command resumes from there. Writers hold an exclusive lock
on ``<path>.lock`` (:meth:`EmbeddingStore.writer_lock`), so concurrent writers (two dashboard
visitors, two shells) take turns and the later one finds the records already stored; the ranks of one
``torchrun`` job write disjoint parts and rank 0 merges them (one job per store). Readers never
write, so they may read while a run is going and see what the finished runs committed.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from revdistill._files import file_lock

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
        The HDF5 file (created on the first commit). Pending parts live in ``<path>.parts/``.

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
                                        f"rerun the embedding command to merge them")
            raise FileNotFoundError(f"store {self.path} does not exist yet; embed records into it first "
                                    f"(revdistill embed, or revdistill.esm.runner.LocalEmbedder)")
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
        from revdistill.core.moments import Moments

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
            The record's per-residue values were not kept (``LocalEmbedder.embed(..., per_residue=...)``).
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
        from revdistill.esm.models import get_spec

        return get_spec(model).alias

    @staticmethod
    def _check_model(handle, model: str) -> None:
        models = json.loads(handle.attrs["models"])
        if model not in models:
            raise ValueError(f"model {model!r} is not in this store; it holds {models}")

    # ------------------------------------------------------------------------------ writing
    def writer_lock(self):
        """Context manager holding the store's inter-process writer lock (``<path>.lock``).

        Writers (:meth:`revdistill.esm.runner.LocalEmbedder.embed`, :meth:`consolidate`) take turns
        under it; readers never need it.
        """
        return file_lock(self.path.with_name(self.path.name + ".lock"))

    def stored_residues(self) -> int:
        """Residues counted in the main file's moments (0 before the first commit)."""
        if not self.path.exists():
            return 0
        with _open_checked(self.path, "store") as handle:
            return int(handle["moments/count"][()])

    def missing(self, records: Sequence[tuple[str, str]], models: Sequence[str], dims: Sequence[int],
                storage_dtype: str) -> list[tuple[str, str, str]]:
        """The records not stored yet, as ``(id, sequence, sha256)``, in the given order.

        Raises
        ------
        ValueError
            The store holds other models or another storage dtype, or a stored id has another sequence.
        """
        stored = self._stored_hashes_checked(list(models), list(dims), storage_dtype)
        missing = []
        for record_id, sequence in records:
            digest = sequence_hash(sequence)
            if record_id in stored:
                if stored[record_id] != digest:
                    raise ValueError(f"record {record_id!r} is already stored in {self.path} with a different "
                                     f"sequence; use another store or another id")
                continue
            missing.append((record_id, sequence, digest))
        return missing

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

    def write_part(self, name: str, result, hashes: list[str], storage_dtype: str) -> Path:
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
        from revdistill.core.moments import Moments

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
