"""File helpers shared by every layer: pickle-free npz files with JSON metadata, atomic writes, an inter-process lock."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Mapping

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
    """Write an uncompressed npz atomically (temporary file, then rename)."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    for key, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise ValueError(f"refusing to save object array {key!r}: files must hold plain arrays")
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez(stream, **{key: np.asarray(value) for key, value in arrays.items()})
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return path


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read every array of an npz with ``allow_pickle=False``; pickled payloads raise a clear error."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such file: {path}")
    if not zipfile.is_zipfile(path):
        with open(path, "rb") as stream:
            head = stream.read(2)
        if head[:1] == b"\x80":
            raise ValueError(f"{path} is a pickle; revdistill only reads plain arrays (allow_pickle=False)")
        raise ValueError(f"{path} is not a readable .npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as error:
        if "pickle" in str(error).lower():
            raise ValueError(
                f"{path} holds pickled objects; revdistill only reads plain arrays (allow_pickle=False)"
            ) from error
        raise
    except (OSError, EOFError) as error:
        raise ValueError(f"{path} is not a readable .npz file: {error}") from error


@contextlib.contextmanager
def file_lock(path: Path):
    """Hold an exclusive ``flock`` on ``path`` (across processes, e.g. several dashboard kernels).

    Used so that dashboard kernels warm up UMAP one after another, and so that two processes never
    write one embedding store at once.
    Without ``fcntl`` (not POSIX) the lock is a no-op.
    """
    try:
        import fcntl  # noqa: PLC0415
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
