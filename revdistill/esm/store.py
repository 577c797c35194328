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
``store.write_part(...)``, ``store.consolidate()``, ``store.writer_lock()``. ``store.verify()`` reads
everything back and checks it.

Layout and crash safety
-----------------------
``path`` is one HDF5 file::

    attrs: format="revdistill-embedding-store", version, models (JSON), dims (JSON), storage_dtype,
           numerics (JSON: precision and long-sequence handling; a rerun made another way is refused),
           header_sha256
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
``torchrun`` job write disjoint parts under rank 0's lock and rank 0 merges them (one job per store).
:meth:`EmbeddingStore.consolidate` takes the lock itself (re-entrant: a writer already holding it may
call it), so it never touches another writer's part in progress. Readers never write and never lock,
so they may read while a run is going (or from a read-only folder) and see what finished runs committed.

Integrity: datasets carry checksums verified on every read (see :mod:`revdistill.esm._hdf5`); damage
is a :class:`StoreDamagedError` naming the file and the dataset. A damaged part file is set aside
(renamed ``*.corrupt``, with a warning) when parts are merged, and its records are embedded again;
a damaged main file is reported and left alone. A full disk during a merge removes the partial copy
and leaves the store and its parts as they were, so the same command succeeds once space is freed.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import Sequence

import numpy as np

from revdistill.io.files import file_lock, fsync_dir, fsync_file
from revdistill.esm import _hdf5 as h5
from revdistill.esm import _parts as files
from revdistill.esm._hdf5 import FORMAT_NAME, FORMAT_VERSION, StoreDamagedError

logger = logging.getLogger(__name__)

__all__ = ["EmbeddingStore", "FORMAT_NAME", "FORMAT_VERSION", "StoreDamagedError", "sequence_hash"]

_STORAGE_DTYPES = ("float32", "float16")


def sequence_hash(sequence: str) -> str:
    """SHA-256 hex digest of the upper-cased sequence."""
    return hashlib.sha256(sequence.upper().encode("ascii")).hexdigest()


class EmbeddingStore:
    """A resumable HDF5 store of ESM-2 embeddings for one dataset.

    Parameters
    ----------
    path : str or Path
        The HDF5 file (created on the first commit). Pending parts live in ``<path>.parts/``.

    Raises
    ------
    ValueError
        ``path`` is a folder, or exists but is not a revdistill store (corrupt, foreign, other version).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.parts_dir = Path(os.path.realpath(self.path) + ".parts")  # beside the file a symlink points to
        if self.path.is_dir():
            raise ValueError(f"store path {self.path} is a directory; give a file name such as store.h5")
        if self.path.exists():
            h5.open_checked(self.path, "store").close()

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
        return h5.open_checked(self.path, "store")

    def info(self) -> dict:
        """Models, dims, storage dtype, number of records and residues."""
        with self._read() as handle:
            header = h5.read_header(handle, "store")
            return {"path": str(self.path), "models": header["models"], "dims": header["dims"],
                    "storage_dtype": header["storage_dtype"],
                    "numerics": files.recorded_numerics(header), "n_records": int(h5.shape(handle, "ids")[0]),
                    "n_residues": int(h5.load(handle, "lengths").sum())}

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
            return h5.load_strings(handle, "ids")

    def __len__(self) -> int:
        return self.info()["n_records"] if self.path.exists() else 0

    def lengths(self) -> np.ndarray:
        """Residues embedded per record, shape (n,)."""
        with self._read() as handle:
            return h5.load(handle, "lengths")

    def sequence_hashes(self) -> dict[str, str]:
        """``{id: sha256 hex}`` of the stored sequences."""
        with self._read() as handle:
            return dict(zip(h5.load_strings(handle, "ids"), h5.load_strings(handle, "hashes")))

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
            return h5.load_strings(handle, "ids"), h5.load(handle, f"pooled/{model}").astype(np.float32)

    def moments(self, device: str = "cpu"):
        """Joint per-residue :class:`~revdistill.Moments` of every stored model (ladder order)."""
        with self._read() as handle:
            return files.read_moments(handle, "store", device)

    def per_residue_ids(self) -> list[str]:
        """Ids whose per-residue values are stored."""
        with self._read() as handle:
            return h5.load_strings(handle, "per_residue/ids") if h5.has(handle, "per_residue/ids") else []

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
            ids = h5.load_strings(handle, "per_residue/ids") if h5.has(handle, "per_residue/ids") else []
            if record_id not in ids:
                raise KeyError(f"no per-residue values stored for record {record_id!r}; embed with "
                               f"per_residue=True or per_residue=[ids] to keep them")
            index = ids.index(record_id)
            start = int(h5.load(handle, "per_residue/starts")[index])
            length = int(h5.load(handle, "per_residue/lengths")[index])
            return h5.load(handle, f"per_residue/{model}", slice(start, start + length)).astype(np.float32)

    def verify(self) -> dict:
        """Read the whole main file back and check every checksum and shape; return :meth:`info`.

        Raises
        ------
        StoreDamagedError
            Names the file and the first damaged dataset.
        """
        with self._read():
            pass
        files.verify_file(self.path, "store")
        return self.info()

    @staticmethod
    def _alias(model: str) -> str:
        from revdistill.esm.models.registry import get_spec  # noqa: PLC0415

        return get_spec(model).alias

    @staticmethod
    def _check_model(handle, model: str) -> None:
        models = h5.read_header(handle, "store")["models"]
        if model not in models:
            raise ValueError(f"model {model!r} is not in this store; it holds {models}")

    # ------------------------------------------------------------------------------ writing
    def writer_lock(self, wait: bool = True):
        """Context manager holding the store's inter-process writer lock (``<path>.lock``).

        Writers (:meth:`revdistill.esm.runner.LocalEmbedder.embed`, :meth:`consolidate`) take turns
        under it; it is re-entrant within a thread. Readers never need it. In a folder this process
        cannot write, it is a no-op (nothing can be written there anyway; reading needs no lock).

        Parameters
        ----------
        wait : bool
            ``False``: raise :class:`revdistill.io.files.LockBusyError` if another writer holds it.
        """
        target = Path(os.path.realpath(self.path))  # one lock per store file, however it is reached
        return file_lock(target.with_name(target.name + ".lock"), wait=wait, read_only_ok=True)

    def stored_residues(self) -> int:
        """Residues counted in the main file's moments (0 before the first commit)."""
        if not self.path.exists():
            return 0
        with self._read() as handle:
            return int(h5.load(handle, "moments/count"))

    def missing(self, records: Sequence[tuple[str, str]], models: Sequence[str], dims: Sequence[int],
                storage_dtype: str, *, numerics: dict) -> list[tuple[str, str, str]]:
        """The records not stored yet, as ``(id, sequence, sha256)``, in the given order.

        ``numerics`` is how this run makes its vectors (:meth:`~revdistill.esm.runner.EmbedOptions.numerics`):
        like the models, it must be how the store's vectors were made.

        Raises
        ------
        ValueError
            The store holds other models, another storage dtype or vectors made another way (precision,
            long-sequence handling), or a stored id has another sequence.
        """
        stored = self._stored_hashes_checked(list(models), list(dims), storage_dtype, numerics)
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

    def _stored_hashes_checked(self, aliases: list[str], dims: list[int], storage_dtype: str,
                               numerics: dict) -> dict[str, str]:
        if not self.path.exists():
            return {}
        with self._read() as handle:
            header = h5.read_header(handle, "store")
            if header["models"] != aliases:
                raise ValueError(f"store {self.path} holds models {header['models']}; asked for {aliases}. "
                                 f"Use the same models in the same order, or another store")
            if header["storage_dtype"] != storage_dtype:
                raise ValueError(f"store {self.path} was created with storage_dtype={header['storage_dtype']!r}; "
                                 f"asked for {storage_dtype!r}")
            made = files.recorded_numerics(header)
            if made is not None and made != numerics:
                differs = sorted(key for key in set(made) | set(numerics) if made.get(key) != numerics.get(key))
                raise ValueError(f"store {self.path} holds vectors made with {files.describe_numerics(made)}; this "
                                 f"run makes them with {files.describe_numerics(numerics)} (differs: "
                                 f"{', '.join(differs)}). Vectors made two ways cannot share a store: use another "
                                 f"--store for these settings, or the store's settings")
            return dict(zip(h5.load_strings(handle, "ids"), h5.load_strings(handle, "hashes")))

    def _pending_parts(self) -> list[Path]:
        if not self.parts_dir.is_dir():
            return []
        return sorted(path for path in self.parts_dir.glob("part-*.h5"))

    def write_part(self, name: str, result, hashes: list[str], storage_dtype: str, *, numerics: dict) -> Path:
        """Write one complete part under a temporary name, check it, and rename it into place (atomic).

        Raises
        ------
        OSError
            The folder is not writable or the disk is full; no part file is left behind.
        """
        if storage_dtype not in _STORAGE_DTYPES:
            raise ValueError(f"storage_dtype={storage_dtype!r} must be one of {_STORAGE_DTYPES}")
        final = self.parts_dir / f"{name}.h5"
        temporary = self.parts_dir / f".{name}.h5.tmp"
        try:
            self.parts_dir.mkdir(parents=True, exist_ok=True)
            arrays = [*result.pooled.values(), *result.moments.to_state().values(), result.ids, hashes,
                      *(values for per_model in result.per_residue.values() for values in per_model.values())]
            h5.ensure_space(self.parts_dir, h5.space_for_arrays(arrays), f"part file {final.name}")
            with h5.writing(temporary) as handle:
                files.write_result(handle, result, hashes, storage_dtype, numerics)
            fsync_file(temporary)
            files.verify_file(temporary, "new part file")  # never rename a file that does not read back whole
            os.replace(temporary, final)
        except BaseException as error:
            with contextlib.suppress(OSError):  # never mask the error being reported
                temporary.unlink(missing_ok=True)
            friendly = _friendly_write_error(error, self.path, f"writing part file {final.name}")
            if friendly is error:
                raise
            raise friendly from error
        fsync_dir(self.parts_dir)
        return final

    def consolidate(self, *, wait: bool = True) -> int:
        """Merge pending part files into the main file (atomically); return how many were merged.

        Takes the writer lock (re-entrant, so a writer holding it may call this), so a part another
        process is writing is never touched. Damaged parts are set aside (``*.corrupt``, logged).

        Parameters
        ----------
        wait : bool
            ``False``: raise :class:`revdistill.io.files.LockBusyError` instead of waiting for a writer.

        Raises
        ------
        StoreDamagedError
            The main file is damaged (it is left as it is).
        OSError
            The disk filled up or the folder is not writable; the store and its parts are unchanged.
        """
        with self.writer_lock(wait=wait):
            return self._consolidate_unlocked()

    def _consolidate_unlocked(self) -> int:
        """:meth:`consolidate` for a caller that holds the writer lock.

        A store reached through a symbolic link is replaced where the link points (the link stays a link)."""
        target = Path(os.path.realpath(self.path))
        temporary = target.with_name(f".{target.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
        try:
            self._remove_stale_temporaries()
            parts = self._pending_parts()
            if not parts:
                return 0
            absorbed: set[str] = set()
            if self.path.exists():
                with self._read() as handle:
                    absorbed = set(h5.load_strings(handle, "absorbed")) if h5.has(handle, "absorbed") else set()
            for part in [part for part in parts if part.name in absorbed]:  # merged before a crash, not deleted
                part.unlink()
            parts = [part for part in parts if part.name not in absorbed and self._intact(part)]
            if not parts:
                return 0
            main = self.path if self.path.exists() else None
            with h5.open_checked(parts[0], "part file") as handle:
                dims = h5.read_header(handle, "part file")["dims"]
            h5.ensure_space(target.parent, h5.space_for_merge(main, parts, dims),
                            f"merging {len(parts)} part file(s)")
            files.merge(main, parts, temporary)
            fsync_file(temporary)
            files.verify_file(temporary, "merged copy", read_values=False)  # never install what does not read back
            os.replace(temporary, target)
        except BaseException as error:
            with contextlib.suppress(OSError):  # never mask the error being reported
                temporary.unlink(missing_ok=True)
            friendly = _friendly_write_error(error, self.path, "merging part files")
            if friendly is error:
                raise
            raise friendly from error
        fsync_dir(target.parent)
        for part in parts:
            part.unlink()
        logger.info("merged %d part file(s) into %s", len(parts), self.path)
        return len(parts)

    def _intact(self, part: Path) -> bool:
        """Verify a part; set a damaged one aside as ``<part>.corrupt`` (never deleted) and say so."""
        try:
            files.verify_file(part, "part file")
            return True
        except ValueError as error:
            aside = part.with_name(part.name + ".corrupt")
            os.replace(part, aside)
            logger.warning("%s; set aside as %s (its records will be embedded again)", error, aside.name)
            return False

    def _remove_stale_temporaries(self) -> None:
        """Delete half-written files left by a killed writer (never renamed into place, so never read).

        Called with the writer lock held: no other writer can be writing them.
        """
        target = Path(os.path.realpath(self.path))
        stale = list(target.parent.glob(f".{target.name}.*.tmp"))
        if self.parts_dir.is_dir():
            stale += list(self.parts_dir.glob(".part-*.h5.tmp"))
        for path in stale:
            path.unlink(missing_ok=True)


def _friendly_write_error(error: BaseException, store: Path, doing: str) -> BaseException:
    """A full disk or an unwritable folder as one clear OSError naming the store; other errors as they are."""
    if isinstance(error, OSError) and error.errno is not None and error.strerror != os.strerror(error.errno):
        return error  # already says what happened, in our words
    if h5.is_disk_full(error):
        return OSError(errno.ENOSPC, f"no space left on the device of store {store} while {doing}; nothing "
                                     f"was changed (the partial file was removed). Free some space and rerun "
                                     f"the same command", str(store))
    if isinstance(error, OSError) and error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return PermissionError(error.errno, f"store {store} is read-only here ({error.strerror}) while {doing}; "
                                            f"readers can still read it, but only its owner can add to it",
                               str(store))
    return error
