"""HDF5 plumbing of the embedding store: checksummed datasets, verified reads, safe writes.

Integrity (store format version 2, and 3 which adds the ``numerics`` header attribute: how the vectors
were made, :meth:`revdistill.esm.runner.EmbedOptions.numerics`, part of the store's identity):

- files are written with HDF5's 1.10 file format (``libver=("v110", "latest")``), whose superblock,
  object headers and chunk indexes carry checksums; header attributes are fixed-length strings kept
  inside the (checksummed) root object header, plus a SHA-256 of the header;
- every array of one or more dimensions, strings included, is chunked with the ``fletcher32`` filter,
  so HDF5 checks each chunk when it is read. Strings are fixed-length UTF-8 bytes: variable-length
  strings live in HDF5's unchecked global heap, where one flipped byte made reads hang forever;
- strings and scalars also carry a SHA-256 attribute checked whenever they are read whole;
- a file is self-contained (:func:`check_self_contained`, on every open): no external or soft links, no
  external raw storage, no virtual datasets, and every array keeps its fletcher32 filter (also checked
  on every dataset read), so a store can neither read bytes from elsewhere nor skip its checksums.

Writes go through :func:`writing` (HDF5 failures, such as a full disk, raise instead of leaving a
broken file) after :func:`ensure_space` (refuse to start when the disk is too full).

Any damage found (a failed checksum, a missing dataset, an unreadable file) is a
:class:`StoreDamagedError` naming the file and the dataset. Version-1 stores (no checksums) are
still read; the next consolidation rewrites them as version 2.
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

FORMAT_NAME = "revdistill-embedding-store"
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
LIBVER = ("v110", "latest")
_HEADER_KEYS = ("format", "version", "models", "dims", "storage_dtype")
_NUMERICS_KEY = "numerics"  # version 3: how the vectors were made (EmbedOptions.numerics())
_CHUNK_BYTES = 1 << 20
_COPY_BYTES = 64 << 20


class StoreDamagedError(ValueError):
    """A store or part file failed an integrity check; the message names the file and the dataset."""

    def __init__(self, path: str | Path, what: str, dataset: str, detail: str) -> None:
        self.path = Path(path)
        self.dataset = dataset
        super().__init__(f"{what} {path} is damaged: {dataset}: {detail}")


def h5py_module():
    import h5py  # noqa: PLC0415 - imported on first use

    return h5py


def open_checked(path: Path, what: str):
    """Open an HDF5 file read-only and check it is a store (or part) of a readable version.

    Raises
    ------
    ValueError
        Not HDF5, not a revdistill store, another version; :class:`StoreDamagedError` for a bad header.
    """
    h5py = h5py_module()
    try:
        handle = h5py.File(path, "r", locking=False)  # files are replaced, never written in place
    except (OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"{what} {path} is not a readable HDF5 file (corrupt, truncated or foreign): "
                         f"{_first_line(error)}") from error
    try:
        header = read_header(handle, what)
    except BaseException:
        handle.close()
        raise
    if header["format"] != FORMAT_NAME:
        handle.close()
        raise ValueError(f"{what} {path} is an HDF5 file but not a revdistill embedding store "
                         f"(format attribute {header['format']!r}, expected {FORMAT_NAME!r})")
    if header["version"] not in READABLE_VERSIONS:
        handle.close()
        raise ValueError(f"{what} {path} has store format version {header['version']}; this revdistill reads "
                         f"version {' or '.join(map(str, READABLE_VERSIONS))}")
    try:
        check_self_contained(handle, what)
    except BaseException:
        handle.close()
        raise
    return handle


def check_self_contained(handle, what: str) -> None:
    """Refuse a file that reaches outside itself or could be read unchecked.

    A store holds only its own datasets, reached by hard links: no external links, no soft links, no
    dataset whose raw data lives in other files (external storage) or is assembled from other files
    (virtual datasets); and (version 2 and later) every non-empty array keeps its fletcher32 filter,
    so the checksum promise does not depend on the file's own flags.

    Raises
    ------
    ValueError
        Naming the file and the dataset or link, and what a store may hold.
    """
    h5py = h5py_module()
    version = _version(handle)
    found: list[tuple[str, str]] = []

    def visit(name: str, link) -> None:
        if isinstance(link, h5py.ExternalLink):
            found.append((name, f"is an external link to {link.filename}:{link.path}"))
        elif isinstance(link, h5py.SoftLink):
            found.append((name, f"is a soft link to {link.path}"))
        else:
            problem = _dataset_problem(handle.get(name), version)
            if problem is not None:
                found.append((name, problem))

    try:
        handle.visititems_links(visit)
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        raise StoreDamagedError(handle.filename, what, "links", _first_line(error)) from error
    if found:
        name, problem = found[0]
        raise ValueError(f"{what} {handle.filename}: {name} {problem}; a store may only hold its own checksummed "
                         f"datasets (no external or soft links, external storage or virtual datasets). Refusing "
                         f"to read it")


def _dataset_problem(item, version: int) -> str | None:
    """Why a dataset cannot be part of a store (None if it can, or if it is a group)."""
    h5py = h5py_module()
    if not isinstance(item, h5py.Dataset):
        return None
    if item.is_virtual:
        return "is a virtual dataset (its data comes from other files)"
    if item.external:
        return f"keeps its data in external file(s) {[entry[0] for entry in item.external][:3]}"
    if version >= 2 and item.ndim >= 1 and item.size > 0 and not item.fletcher32:
        return "has lost its fletcher32 checksum filter (every array of a store is checksummed)"
    return None


@contextlib.contextmanager
def writing(path: Path):
    """``h5py.File(path, "w")`` that raises if HDF5 could not write everything (e.g. the disk filled up).

    HDF5 may swallow a failed write and keep a file open in a broken state (which crashed the
    interpreter at exit, and could make a half-written file look whole when reopened). So the file is
    flushed while errors are still ours to report, a failed file is abandoned (its descriptor pointed at
    ``/dev/null`` so HDF5 can finish closing it without writing), and a file HDF5 did not let go of
    counts as failed. The caller deletes the file after any error; it is never opened again.
    """
    h5py = h5py_module()
    handle = h5py.File(path, "w", libver=LIBVER, locking=False)
    try:
        yield handle
        handle.flush()
    except BaseException:
        _abandon(handle.id)
        raise
    handle.close()
    name = os.path.abspath(path)
    leftovers = [file_id for file_id in h5py.h5f.get_obj_ids(h5py.h5f.OBJ_ALL, h5py.h5f.OBJ_FILE)
                 if os.path.abspath(os.fsdecode(file_id.name)) == name]
    for file_id in leftovers:
        _abandon(file_id)
    if leftovers:
        raise OSError(errno.EIO, f"HDF5 could not finish writing {path} (a full disk?)", str(path))


def _abandon(file_id) -> None:
    """Close a file HDF5 failed to write, sending whatever it still wants to write to /dev/null."""
    try:
        descriptor = file_id.get_vfd_handle()
        null = os.open(os.devnull, os.O_RDWR)
        try:
            os.dup2(null, descriptor)
        finally:
            os.close(null)
    except Exception:  # noqa: BLE001 - best effort: another driver, or already closed
        pass
    try:
        while file_id.valid:
            file_id.close()
    except Exception:  # noqa: BLE001 - already reported by the caller's error
        pass


def ensure_space(folder: Path, needed: int, doing: str) -> None:
    """Refuse to start writing ``needed`` bytes into ``folder`` if the file system has less free space.

    Checked before HDF5 writes anything, because HDF5 does not recover cleanly from a full disk.
    """
    stats = os.statvfs(folder)
    free = (stats.f_bfree if os.geteuid() == 0 else stats.f_bavail) * stats.f_frsize
    if free < needed:
        raise OSError(errno.ENOSPC, f"not enough free space in {folder} for {doing}: it needs about "
                                    f"{needed / 1e6:.1f} MB and {free / 1e6:.1f} MB are free; nothing was changed. "
                                    f"Free some space and rerun the same command", str(folder))


def space_for_merge(main: Path | None, parts: list[Path], dims: list[int]) -> int:
    """Bytes a merge may write: the main file and the parts, less the parts' own moments, plus slack."""
    scatter = 8 * sum(dims) ** 2
    total = (main.stat().st_size if main is not None else scatter) + sum(max(0, p.stat().st_size - scatter)
                                                                         for p in parts)
    return int(total * 1.02) + (64 << 10)


def space_for_arrays(arrays: list) -> int:
    """Bytes a part holding ``arrays`` may take, plus slack."""
    total = sum(np.asarray(a).nbytes if np.asarray(a).dtype.kind not in "OUS" else 96 * len(a) for a in arrays)
    return int(total * 1.02) + (64 << 10)


def read_header(handle, what: str) -> dict[str, Any]:
    """``{format, version, models, dims, storage_dtype}`` of an open file, its digest checked (version 2)."""
    try:
        raw = {key: _text(handle.attrs[key]) for key in (*_HEADER_KEYS, _NUMERICS_KEY) if key in handle.attrs}
        if raw.get("format") != FORMAT_NAME:
            return {"format": raw.get("format"), "version": None}
        version = int(raw.get("version", -1))
        if version not in READABLE_VERSIONS:
            return {"format": raw["format"], "version": version}
        missing = [key for key in _HEADER_KEYS + ((_NUMERICS_KEY,) if version >= 3 else ()) if key not in raw]
        if missing:
            raise ValueError(f"header attribute(s) {missing} missing")
        if version >= 2:
            expected = _text(handle.attrs["header_sha256"]) if "header_sha256" in handle.attrs else None
            if expected != _header_digest(raw):
                raise ValueError("header attributes do not match their SHA-256")
        header = {"format": raw["format"], "version": version, "models": json.loads(raw["models"]),
                  "dims": json.loads(raw["dims"]), "storage_dtype": raw["storage_dtype"],
                  "numerics": json.loads(raw[_NUMERICS_KEY]) if version >= 3 else None}
        if version >= 3 and not isinstance(header["numerics"], dict):
            raise ValueError(f"numerics {header['numerics']!r} is not a JSON object")
        if (not isinstance(header["models"], list) or not isinstance(header["dims"], list)
                or len(header["models"]) != len(header["dims"])):
            raise ValueError(f"models {header['models']!r} and dims {header['dims']!r} do not match")
        return header
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as error:
        raise StoreDamagedError(handle.filename, what, "header attributes", _first_line(error)) from error


def write_header(handle, models: list[str], dims: list[int], storage_dtype: str, numerics: dict[str, Any]) -> None:
    """Header attributes as fixed-length strings (kept in the checksummed object header) and their digest.

    ``numerics`` is how the vectors were made (:meth:`revdistill.esm.runner.EmbedOptions.numerics`:
    precision, long-sequence handling): part of the store's identity, like the models."""
    if not isinstance(numerics, dict) or not numerics:
        raise ValueError(f"numerics={numerics!r}: a store records how its vectors were made (a non-empty dict)")
    raw = {"format": FORMAT_NAME, "version": str(FORMAT_VERSION), "models": json.dumps(list(models)),
           "dims": json.dumps([int(d) for d in dims]), "storage_dtype": str(storage_dtype),
           _NUMERICS_KEY: json.dumps(numerics, sort_keys=True)}
    for key, value in raw.items():
        handle.attrs[key] = np.bytes_(value.encode("utf-8"))
    handle.attrs["header_sha256"] = np.bytes_(_header_digest(raw).encode("ascii"))


def _header_digest(raw: dict[str, str]) -> str:
    keys = _HEADER_KEYS + ((_NUMERICS_KEY,) if _NUMERICS_KEY in raw else ())
    text = json.dumps({key: str(raw[key]) for key in keys}, sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _text(value) -> str:
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def digest(values: np.ndarray | list) -> str:
    """SHA-256 of a dataset's content: strings one by one (length-prefixed), numbers as dtype, shape, bytes."""
    sha = hashlib.sha256()
    array = np.asarray(values, dtype=object) if isinstance(values, list) else np.asarray(values)
    if array.dtype.kind in "OUS":
        for value in array.reshape(-1):
            data = value if isinstance(value, bytes) else str(value).encode("utf-8")
            sha.update(len(data).to_bytes(8, "little"))
            sha.update(data)
        return sha.hexdigest()
    array = np.ascontiguousarray(array)
    sha.update(f"{array.dtype.str}{array.shape}".encode("ascii"))
    sha.update(array.tobytes())
    return sha.hexdigest()


def _is_text(values: np.ndarray) -> bool:
    return values.dtype.kind in "OUS"


def _chunks(values: np.ndarray, resizable: bool) -> tuple[int, ...]:
    """About 1 MiB per chunk at most; no more rows than the data has (at least 64 when it may grow), so a
    small store stays small. Each merge rewrites the file, so chunks grow with the store."""
    row_bytes = values.itemsize * int(np.prod(values.shape[1:], dtype=np.int64) or 1)
    rows = max(1, min(1 << 16, _CHUNK_BYTES // max(1, row_bytes), values.shape[0]))
    if resizable:
        rows = max(rows, min(64, _CHUNK_BYTES // max(1, row_bytes)))
    return (rows,) + tuple(max(1, d) for d in values.shape[1:])


def create(group, name: str, values, *, resizable: bool = False) -> None:
    """A checksummed dataset: fletcher32 chunks (strings as fixed-length UTF-8), a SHA-256 attribute for
    strings and scalars. Strings cannot be appended to (create them once, whole)."""
    values = np.asarray(values)
    text = _is_text(values)
    if text:
        encoded = [_text(value).encode("utf-8") for value in values.reshape(-1)]
        data = np.array(encoded, dtype=f"S{max([1, *map(len, encoded)])}").reshape(values.shape)
    else:
        data = values
    # fixed-length strings are marked UTF-8 (record ids and file names may be any text)
    dtype = h5py_module().string_dtype("utf-8", data.dtype.itemsize) if text else None
    data = data.astype(dtype) if text else data
    if data.ndim == 0 or data.size == 0 and not resizable:
        dataset = group.create_dataset(name, data=data, dtype=dtype)
    else:
        dataset = group.create_dataset(name, data=data, dtype=dtype, chunks=_chunks(data, resizable), fletcher32=True,
                                       maxshape=(None,) + data.shape[1:] if resizable and not text else None)
    if text or data.ndim == 0:
        dataset.attrs["sha256"] = np.bytes_(digest(values).encode("ascii"))
    dataset.flush()  # write it now: a failed write raises here instead of vanishing when HDF5 evicts it


def append(group, name: str, values) -> None:
    """Append rows to a resizable checksummed numeric dataset, creating it on first use."""
    values = np.asarray(values)
    if name not in group:
        create(group, name, values, resizable=True)
        return
    dataset = group[name]
    start = dataset.shape[0]
    dataset.resize(start + len(values), axis=0)
    dataset[start:] = values
    dataset.flush()  # write the chunk cache now: a failed write raises here instead of vanishing later


def load(handle, name: str, rows: slice | None = None, what: str = "store") -> np.ndarray:
    """Read a dataset (or a row range of it), checking its checksums; strings come back as ``str`` objects.

    Raises
    ------
    StoreDamagedError
        The dataset is missing, unreadable or fails its checksum.
    """
    try:
        dataset = handle[name]
        problem = _dataset_problem(dataset, _version(handle))
        if problem is not None:
            raise ValueError(f"{problem}; refusing to read it")
        string = h5py_module().check_string_dtype(dataset.dtype)
        if string is not None and string.length is None:  # version 1: variable-length
            dataset = dataset.asstr()
        values = dataset[()] if dataset.shape == () else dataset[rows if rows is not None else slice(None)]
        text = isinstance(values, np.ndarray) and values.dtype.kind in "OS"
        if text:
            values = np.array([_text(value) for value in values.reshape(-1)], dtype=object).reshape(values.shape)
        expected = handle[name].attrs.get("sha256")
        if expected is not None and rows is None:
            if digest(values) != _text(expected):
                raise ValueError("content does not match its SHA-256")
        elif (text or np.ndim(values) == 0) and rows is None and _version(handle) >= 2:
            raise ValueError("its SHA-256 attribute is missing")
        return values
    except StoreDamagedError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError, IndexError, UnicodeDecodeError) as error:
        raise StoreDamagedError(handle.filename, what, name, _first_line(error)) from error


def has(handle, name: str, what: str = "store") -> bool:
    """Whether ``name`` exists; a damaged group on the way is a :class:`StoreDamagedError`, not a KeyError."""
    try:
        return name in handle
    except (OSError, KeyError, ValueError, RuntimeError) as error:
        raise StoreDamagedError(handle.filename, what, name, _first_line(error)) from error


def shape(handle, name: str, what: str = "store") -> tuple[int, ...] | None:
    """A dataset's shape, ``None`` if it does not exist; damage is a :class:`StoreDamagedError`."""
    if not has(handle, name, what):
        return None
    try:
        return tuple(handle[name].shape)
    except (OSError, KeyError, ValueError, RuntimeError, AttributeError) as error:
        raise StoreDamagedError(handle.filename, what, name, _first_line(error)) from error


def load_strings(handle, name: str, what: str = "store") -> list[str]:
    """A string dataset as a list of ``str``, checked."""
    return [str(value) for value in load(handle, name, what=what)]


def _version(handle) -> int:
    try:
        return int(_text(handle.attrs["version"]))
    except (KeyError, ValueError, OSError):  # pragma: no cover - checked when opened
        return -1


def copy_rows(out, handle, name: str, what: str) -> None:
    """Append a whole numeric dataset of ``handle`` to ``out`` in blocks of about 64 MiB, checking each."""
    found = shape(handle, name, what)
    if found is None:
        raise StoreDamagedError(handle.filename, what, name, "dataset missing")
    row_bytes = 8 * int(np.prod(found[1:], dtype=np.int64) or 1)  # at most 8 bytes per value
    step = max(1, _COPY_BYTES // max(1, row_bytes))
    for start in range(0, found[0], step):
        append(out, name, load(handle, name, slice(start, start + step), what=what))


def is_disk_full(error: BaseException) -> bool:
    """True for ENOSPC / EDQUOT, including HDF5's errors that only say so in their message."""
    if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(error)
    return "No space left on device" in text or "errno = 28" in text or "Disk quota exceeded" in text


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return " ".join(text.split())
