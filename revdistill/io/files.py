"""File helpers shared by every layer: pickle-free npz files with JSON metadata, atomic writes, file digests,
a re-entrant inter-process lock. No network here (downloads live in :mod:`revdistill.io.download`)."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
import threading
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np


def encode_meta(meta: Mapping[str, Any]) -> np.ndarray:
    """JSON metadata as a uint8 array (npz-safe, no pickle)."""
    return np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8).copy()


def read_meta(state: Mapping[str, np.ndarray], format_name: str, version: int | tuple[int, ...]) -> dict[str, Any]:
    """Decode the ``meta`` array of a saved state and check its format name and version (or versions)."""
    versions = (version,) if isinstance(version, int) else tuple(version)
    if "meta" not in state:
        raise ValueError(f"not a {format_name} file: it has no 'meta' entry (keys: {sorted(state)[:8]})")
    try:
        meta = json.loads(np.asarray(state["meta"], dtype=np.uint8).tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"not a {format_name} file: its metadata is not valid JSON") from error
    if not isinstance(meta, dict):
        raise ValueError(f"not a {format_name} file: its metadata is not a JSON object")
    if meta.get("format") != format_name:
        raise ValueError(f"not a {format_name} file: its metadata says format={meta.get('format')!r}")
    if meta.get("version") not in versions:
        raise ValueError(
            f"{format_name} file version {meta.get('version')!r} is not supported by this revdistill "
            f"(which reads version {' or '.join(map(str, versions))}); refit or convert it"
        )
    return meta


def save_npz(path: str | Path, arrays: Mapping[str, np.ndarray]) -> Path:
    """Write an uncompressed npz atomically (temporary file, fsync, then rename; see :func:`write_atomically`)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise ValueError(f"refusing to save object array {key!r}: files must hold plain arrays")

    def write(temporary: Path) -> None:
        with open(temporary, "wb") as stream:
            np.savez(stream, **{key: np.asarray(value) for key, value in arrays.items()})

    return write_atomically(path, write)


def write_atomically(path: str | Path, write_fn: Callable[[Path], Any]) -> Path:
    """Write ``path`` all at once or not at all.

    ``write_fn(temporary)`` writes the content to a temporary file in the same folder (so the final
    rename stays on one file system); the file is then flushed to disk (``fsync``) and renamed over
    ``path`` with :func:`os.replace`, and the folder is synced. On any error (including a full disk
    or Ctrl-C) the temporary file is removed and ``path`` is left as it was.

    Parameters
    ----------
    path : str or Path
        The file to create or replace. Its folder must exist.
    write_fn : callable
        Called once with the temporary :class:`~pathlib.Path`; must create and close it.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    OSError
        From ``write_fn`` or the file system; a full disk is re-raised as ``OSError(ENOSPC)`` whose
        message names ``path`` and says that nothing was changed.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, f"{path} is a directory; give a file name", str(path))
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    temporary = Path(name)
    try:
        write_fn(temporary)
        fsync_file(temporary)
        os.replace(temporary, path)
    except BaseException as error:
        with contextlib.suppress(OSError):  # never mask the error being reported
            temporary.unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on the device holding {path.parent} while writing "
                                        f"{path.name}; nothing was changed (the partial copy was removed)",
                          str(path)) from error
        raise
    fsync_dir(path.parent)
    return path


def sha256_of(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Return the hex SHA-256 digest of a file, read in chunks of ``chunk_size`` bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_file(path: str | Path) -> None:
    """Flush a closed file's content to disk."""
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: str | Path) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where folders cannot be opened."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(descriptor)
    except OSError:  # pragma: no cover - file systems that refuse fsync on folders
        pass
    finally:
        os.close(descriptor)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read every array of an npz with ``allow_pickle=False``.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not an npz (a folder, a pickle, another file), a damaged archive (bad CRC, truncated), or an
        entry holding pickled objects; the message names the file (and the entry).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if path.is_dir():
        raise ValueError(f"{path} is a folder, not an .npz file")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as stream:
            head = stream.read(2)
        if head[:1] == b"\x80":
            raise ValueError(f"{path} is a pickle; revdistill only reads plain arrays (allow_pickle=False)")
        raise ValueError(f"{path} is not a readable .npz file (not a zip archive)")
    arrays: dict[str, np.ndarray] = {}
    key = None
    try:
        with np.load(path, allow_pickle=False) as archive:
            for key in archive.files:
                arrays[key] = archive[key]
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise ValueError(f"{path} holds pickled objects in entry {key!r}; revdistill only reads plain "
                             f"arrays (allow_pickle=False)") from error
        raise ValueError(f"{path}: entry {key!r} is not a readable array: {error}") from error
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
        where = "" if key is None else f" (entry {key!r})"
        raise ValueError(f"{path} is damaged{where}: {error}") from error
    return arrays


class LockBusyError(RuntimeError):
    """The lock is held by another process (raised by :func:`file_lock` with ``wait=False``)."""


# Locks held by this process: (device, inode) of the lock file -> (owning thread id, depth). flock
# locks belong to an open file description, so the owning thread re-entering must not open the file
# again (it would wait for itself); other threads open their own description and wait their turn.
_HELD: dict[tuple[int, int], list[int]] = {}
_HELD_GUARD = threading.Lock()


@contextlib.contextmanager
def file_lock(path: Path, *, wait: bool = True, read_only_ok: bool = False):
    """Hold an exclusive ``flock`` on ``path`` (across processes, e.g. several dashboard kernels).

    Used so that dashboard kernels warm up UMAP one after another, and so that two processes never
    write one embedding store at once. The lock is re-entrant within a thread: code already holding
    it may call a function that takes it again. Other threads of the process wait like other processes.
    Without ``fcntl`` (not POSIX) the lock is a no-op.

    Parameters
    ----------
    path : Path
        The lock file (created if missing, never deleted).
    wait : bool
        ``False``: raise :class:`LockBusyError` at once when another process or thread holds it.
    read_only_ok : bool
        When the lock file cannot be created or opened for writing (a read-only folder or file
        system), lock it opened read-only, or, if it does not exist, go on without a lock: whoever
        cannot write there cannot write the files it protects either, and reading needs no lock.
    """
    try:
        import fcntl  # noqa: PLC0415
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path = Path(path)
    handle = _open_lock_file(path, read_only_ok)
    if handle is None:
        yield
        return
    with handle:
        key = (os.fstat(handle.fileno()).st_dev, os.fstat(handle.fileno()).st_ino)
        me = threading.get_ident()
        with _HELD_GUARD:
            held = _HELD.get(key)
            if held is not None and held[0] == me:
                held[1] += 1
                reentered = True
            else:
                reentered = False
        if reentered:
            try:
                yield
            finally:
                with _HELD_GUARD:
                    _HELD[key][1] -= 1
            return
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockBusyError(f"{path} is held by another process (or thread): someone else is writing; "
                                f"try again when it has finished") from None
        with _HELD_GUARD:
            _HELD[key] = [me, 1]
        try:
            yield
        finally:
            with _HELD_GUARD:
                del _HELD[key]
            fcntl.flock(handle, fcntl.LOCK_UN)


def _open_lock_file(path: Path, read_only_ok: bool):
    """The lock file opened for locking, or None (read-only place without a lock file, read_only_ok)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a")
    except OSError as error:
        if not read_only_ok or error.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
    try:
        return open(path, "r")
    except FileNotFoundError:
        return None
