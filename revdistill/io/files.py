"""File helpers shared by every layer: pickle-free npz files with JSON metadata, atomic writes, file digests,
a re-entrant inter-process lock. No network here (downloads live in :mod:`revdistill.io.download`)."""
from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import threading
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

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


def save_npz_together(files: Sequence[tuple[str | Path, Mapping[str, np.ndarray]]]) -> list[Path]:
    """Write several npz files so that all of them change or none does (e.g. a ladder and its naive sidecar).

    Every file is first written in full to a temporary file beside its target and flushed to disk; only
    then are they renamed into place, one after the other. If a rename fails (or anything before it),
    the files already renamed are put back as they were (from a hard-linked backup kept until the end;
    a file that did not exist before is removed) and the temporary files are deleted.

    Parameters
    ----------
    files : sequence of (path, arrays)
        Targets (``.npz`` is added if missing) and their arrays, as for :func:`save_npz`.

    Returns
    -------
    list of Path
        The targets.

    Raises
    ------
    OSError
        From the file system, after every target was restored; a full disk says that nothing was changed.
    """
    targets = []
    for path, arrays in files:
        path = Path(path)
        targets.append(path if path.suffix == ".npz" else path.with_name(path.name + ".npz"))
        for key, value in arrays.items():
            if np.asarray(value).dtype == object:
                raise ValueError(f"refusing to save object array {key!r} in {path}: files must hold plain arrays")
    temporaries: list[Path] = []
    backups: dict[Path, Path] = {}
    replaced: list[Path] = []
    try:
        for path, (_, arrays) in zip(targets, files):
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                raise IsADirectoryError(errno.EISDIR, f"{path} is a directory; give a file name", str(path))
            descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(descriptor)
            temporaries.append(Path(name))
            with open(name, "wb") as stream:
                np.savez(stream, **{key: np.asarray(value) for key, value in arrays.items()})
            fsync_file(name)
        for path in targets:
            if path.exists():
                backup = path.with_name(f".{path.name}.{os.getpid()}.backup")
                backup.unlink(missing_ok=True)
                try:
                    os.link(path, backup)
                except OSError:  # a file system without hard links
                    shutil.copy2(path, backup)
                backups[path] = backup
        for path, temporary in zip(targets, temporaries):
            os.replace(temporary, path)
            replaced.append(path)
    except BaseException as error:
        unrestored = []
        for path in replaced:
            try:
                if path in backups:
                    os.replace(backups.pop(path), path)
                else:
                    path.unlink(missing_ok=True)
            except OSError:  # never mask the error being reported; say what could not be put back
                unrestored.append(f"{path} (its previous content is kept in {backups.pop(path, 'no backup')})")
        for leftover in [*temporaries, *backups.values()]:
            with contextlib.suppress(OSError):
                leftover.unlink(missing_ok=True)
        if unrestored:
            raise OSError(getattr(error, "errno", None) or errno.EIO,
                          f"writing {', '.join(map(str, targets))} failed ({error}) and could not be undone for "
                          f"{'; '.join(unrestored)}: restore it by hand") from error
        names = " and ".join(path.name for path in targets)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on the device holding {targets[0].parent} while writing "
                                        f"{names}; nothing was changed (neither file)", str(targets[0])) from error
        if isinstance(error, OSError) and error.errno is not None:
            failed = error.filename or (targets[len(replaced)] if len(replaced) < len(targets) else targets[-1])
            raise OSError(error.errno, f"could not write {failed} ({os.strerror(error.errno)}); {names} are "
                                       f"written together, so nothing was changed (neither file)",
                          str(failed)) from error
        raise
    for backup in backups.values():
        with contextlib.suppress(OSError):
            backup.unlink(missing_ok=True)
    for folder in {path.parent for path in targets}:
        fsync_dir(folder)
    return targets


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


#: An entry may expand to at most this many times its compressed size (deflate of real arrays: ~1.1x;
#: of a zip bomb: ~1000x) once it declares more than :data:`_SMALL_ENTRY` bytes.
MAX_EXPANSION = 50
_SMALL_ENTRY = 4 << 20
_DEFLATE_LIMIT = 1100  # deflate expands at most ~1032x
_MAX_META_BYTES = 16 << 20


def _memory_limit() -> int:
    """Bytes this process may allocate at most: physical memory, or a lower address-space limit."""
    limit = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 1 << 62
    try:
        import resource  # noqa: PLC0415 - POSIX only

        soft = resource.getrlimit(resource.RLIMIT_AS)[0]
        if soft != resource.RLIM_INFINITY:
            limit = min(limit, soft)
    except (ImportError, ValueError, OSError):  # pragma: no cover - not POSIX
        pass
    return int(limit)


def _size(n: int) -> str:
    for unit, scale in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def check_npz_entries(path: Path, archive: zipfile.ZipFile, limit: int | None = None) -> dict[str, int]:
    """Check what every entry of an open npz DECLARES before any entry is read; return ``{key: bytes}``.

    Each entry must be an ``.npy`` array whose header (dtype and shape, read from its first bytes) agrees
    with the size the zip record declares, holds no Python objects, fits in the file (stored entries)
    or expands at most :data:`MAX_EXPANSION` times (compressed entries), and all of them together must
    fit in ``limit`` bytes (default: this machine's memory, or the process's address-space limit).

    Raises
    ------
    ValueError
        Naming ``path`` and the entry: a zip bomb, a header that disagrees with its record, an object
        array, or more than ``limit`` bytes in all.
    """
    limit = _memory_limit() if limit is None else limit
    file_size = path.stat().st_size
    declared: dict[str, int] = {}
    for info in archive.infolist():
        key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
        where = f"{path}: entry {key!r}"
        if not info.filename.endswith(".npy"):
            raise ValueError(f"{where} is not an .npy array; an .npz holds only .npy entries")
        if info.compress_type == zipfile.ZIP_STORED and info.compress_size > file_size:
            raise ValueError(f"{where} declares {_size(info.compress_size)} stored in a file of {_size(file_size)}; "
                             f"the archive is damaged or forged")
        if (info.compress_type != zipfile.ZIP_STORED and info.file_size > _SMALL_ENTRY
                and info.file_size > MAX_EXPANSION * max(1, info.compress_size)):
            raise ValueError(f"{where} declares {_size(info.file_size)} that compress to {_size(info.compress_size)} "
                             f"(more than {MAX_EXPANSION}x, a zip bomb?); refusing to expand it. Arrays written "
                             f"by revdistill are not compressed")
        if info.file_size > limit:
            raise ValueError(f"{where} declares {_size(info.file_size)}, more than the {_size(limit)} of memory "
                             f"this process may use; refusing to read it")
        try:
            with archive.open(info) as stream:
                version = np.lib.format.read_magic(stream)
                if version not in ((1, 0), (2, 0)):
                    raise ValueError(f"unsupported .npy format version {version} (revdistill writes 1.0 and 2.0)")
                reader = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                          else np.lib.format.read_array_header_2_0)
                shape, _, dtype = reader(stream, max_header_size=10000)
                header_bytes = stream.tell()
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            raise ValueError(f"{path} is damaged (entry {key!r}): {error}") from error
        except ValueError as error:
            raise ValueError(f"{where} is not a readable .npy array: {error}") from error
        if dtype.hasobject:
            raise ValueError(f"{path} holds pickled objects in entry {key!r}; revdistill only reads plain "
                             f"arrays (allow_pickle=False)")
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if header_bytes + nbytes != info.file_size:
            raise ValueError(f"{where}: its header declares shape {tuple(shape)} of {dtype} ({_size(nbytes)}) but "
                             f"the archive declares {_size(info.file_size - header_bytes)}; the file is damaged or "
                             f"forged")
        declared[key] = nbytes
    total = sum(declared.values())
    if total > limit:
        raise ValueError(f"{path} declares {_size(total)} of arrays in all, more than the {_size(limit)} of memory "
                         f"this process may use; refusing to read it")
    return declared


def _open_npz(path: Path) -> zipfile.ZipFile:
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
    try:
        return zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, zlib.error, ValueError) as error:
        raise ValueError(f"{path} is not a readable .npz file: {error}") from error


def load_npz(path: str | Path, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Read the arrays of an npz safely: the one reader of every npz the package opens.

    What each entry declares is checked first (:func:`check_npz_entries`: no zip bombs, no sizes
    beyond memory, headers that agree with the archive, no pickles), then the entries are read.

    Parameters
    ----------
    path : str or Path
    keys : sequence of str, optional
        Read only these entries (those present); default all.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Not an npz (a folder, a pickle, another file), a damaged archive (bad CRC, truncated), an entry
        holding pickled objects or declaring more than it can hold; the message names the file (and the entry).
    """
    path = Path(path)
    arrays: dict[str, np.ndarray] = {}
    key = None
    with _open_npz(path) as archive:
        declared = check_npz_entries(path, archive)
        wanted = [name for name in declared if keys is None or name in keys]
        try:
            for key in wanted:
                with archive.open(f"{key}.npy") as stream:
                    arrays[key] = np.lib.format.read_array(stream, allow_pickle=False)
        except ValueError as error:
            if "pickle" in str(error).lower():
                raise ValueError(f"{path} holds pickled objects in entry {key!r}; revdistill only reads plain "
                                 f"arrays (allow_pickle=False)") from error
            raise ValueError(f"{path}: entry {key!r} is not a readable array: {error}") from error
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            where = "" if key is None else f" (entry {key!r})"
            raise ValueError(f"{path} is damaged{where}: {error}") from error
    return arrays


def read_npz_meta(path: str | Path) -> dict[str, Any] | None:
    """The JSON ``meta`` entry of a revdistill npz, read safely; ``None`` if the file has none or is not one."""
    try:
        state = load_npz(path, keys=("meta",))
        if "meta" not in state or state["meta"].nbytes > _MAX_META_BYTES:
            return None
        meta = json.loads(np.asarray(state["meta"], dtype=np.uint8).tobytes().decode("utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def open_zip(path: str | Path, what: str) -> zipfile.ZipFile:
    """Open a zip archive (e.g. a ProteinGym download) for reading; a file that is not one is a clear error.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        ``path`` is a folder, not a zip archive, or a damaged one; the message names ``what`` and the file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    if path.is_dir():
        raise ValueError(f"{what} {path} is a folder, not a zip archive")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError) as error:
        raise ValueError(f"{what} {path} is not a readable zip archive ({error}); an interrupted or failed "
                         f"download? Delete it and download it again") from error


def read_zip_member(archive: zipfile.ZipFile, member: str, what: str) -> bytes:
    """The bytes of one member of an open zip, its declared size checked first and its CRC-32 checked as read.

    Raises
    ------
    ValueError
        Naming the archive and the member: no such member, a declared size beyond memory or beyond what
        deflate can produce from the compressed size, or data that fail to decompress or to match their CRC-32.
    """
    where = f"{what} {archive.filename}!{member}"
    try:
        info = archive.getinfo(member)
    except KeyError:
        raise ValueError(f"{where}: no such member in the archive") from None
    # Text members (CSV rows repeating one long sequence) may deflate 100x or more, so only what deflate
    # cannot do at all (more than ~1032x) is refused here, beside sizes beyond memory.
    if (info.compress_type != zipfile.ZIP_STORED and info.file_size > _SMALL_ENTRY
            and info.file_size > _DEFLATE_LIMIT * max(1, info.compress_size)):
        raise ValueError(f"{where} declares {_size(info.file_size)} that compress to {_size(info.compress_size)}, "
                         f"more than deflate can expand; the archive is forged or damaged")
    if info.file_size > _memory_limit():
        raise ValueError(f"{where} declares {_size(info.file_size)}, more than the memory this process may use")
    try:
        return archive.read(info)
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, NotImplementedError, RuntimeError) as error:
        raise ValueError(f"{where} is damaged: it fails to decompress ({error}); delete the archive and download "
                         f"it again") from error


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
