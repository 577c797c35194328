"""The compute service's wire format and runtime folder (no pickle anywhere).

A message is one JSON header sent with ``send_bytes``, followed by one raw buffer per array the header
lists under ``"arrays"`` as ``[name, dtype, shape]`` (little-endian numeric dtypes only, C order). Data
frames travel as :func:`encode_frame` specs (numeric columns as arrays, the others as JSON lists), tasks as
:func:`encode_task`.

The runtime folder (``runtime_dir``, else ``$REVDISTILL_SERVICE_DIR``, else
``$XDG_RUNTIME_DIR/revdistill-service``, else ``<cache>/service``; mode 0700) holds ``service.sock`` (a Unix
socket), ``authkey`` (mode 0600; clients prove they know it), ``start.lock`` (taken by a client that starts
the service), ``serve.lock`` (held by the live service) and ``service.log``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from dataclasses import fields
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Mapping

import numpy as np

__all__ = ["SERVICE_ENV", "PROTOCOL", "Cancelled", "ServiceError", "service_dir", "prepare_dir", "authkey",
           "package_root", "send", "receive", "encode_frame", "decode_frame", "encode_task", "decode_task",
           "request_key", "raise_remote"]

#: Environment variable naming the service's runtime folder.
SERVICE_ENV = "REVDISTILL_SERVICE_DIR"
PROTOCOL = 2
MAX_MESSAGE = 1 << 31
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
_ARRAY_KINDS = "biuf"
_ERRORS = {error.__name__: error for error in (ValueError, FileNotFoundError, RuntimeError, TypeError, KeyError,
                                               LookupError, OSError, MemoryError, PermissionError)}


class ServiceError(RuntimeError):
    """The service failed in a way that has no ordinary Python exception (it died, it is unreachable ...)."""


class Cancelled(RuntimeError):  # noqa: N818 - the wire's error_type; CancelledError is asyncio's
    """The job was cancelled by every visitor who asked for it (raised at a progress point)."""


def package_root() -> str:
    """The folder of the revdistill package this process runs (a service reports it in its status, so that
    ``python -m revdistill.service start`` from another checkout or version replaces it)."""
    return str(Path(__file__).resolve().parents[1])


def service_dir(runtime_dir: str | Path | None = None) -> Path:
    """The service's runtime folder (see the module docstring); not created here."""
    if runtime_dir is not None:
        return Path(runtime_dir).expanduser()
    if os.environ.get(SERVICE_ENV):
        return Path(os.environ[SERVICE_ENV]).expanduser()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "revdistill-service"
    from revdistill.io.paths import cache_dir  # noqa: PLC0415

    return cache_dir("service")


def prepare_dir(directory: Path) -> Path:
    """Create the runtime folder (mode 0700); raise ``ValueError`` if its socket path is too long."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    socket_path = directory / "service.sock"
    if len(str(socket_path)) > _SOCKET_PATH_MAX:
        raise ValueError(f"runtime_dir={str(directory)!r} is too long for a Unix socket path "
                         f"({len(str(socket_path))} > {_SOCKET_PATH_MAX} characters); set ${SERVICE_ENV} "
                         f"to a shorter folder")
    return directory


def authkey(directory: Path) -> bytes:
    """The shared key in ``authkey`` (mode 0600), created on first use."""
    path = directory / "authkey"
    if not path.exists():  # written whole under another name, then linked: readers never see half a key
        draft = directory / f".authkey-{os.getpid()}-{secrets.token_hex(4)}"
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as stream:
            stream.write(secrets.token_hex(32).encode("ascii"))
        with contextlib.suppress(FileExistsError):
            os.link(draft, path)
        draft.unlink()
    key = path.read_bytes().strip()
    if len(key) < 32 or path.stat().st_mode & 0o077:
        raise ValueError(f"{path} is not a valid service key (too short, or readable by others); delete it")
    return key


# ---------------------------------------------------------------------------------------------- messages
def _wire_array(name: str, value: Any) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in _ARRAY_KINDS:
        raise TypeError(f"array {name!r} has dtype {array.dtype}; only bool, integer and float arrays travel")
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def send(connection: Connection, header: Mapping[str, Any], arrays: Mapping[str, Any] | None = None) -> None:
    """Send ``header`` (JSON) and ``arrays`` (raw little-endian buffers, listed in the header)."""
    wired = {name: _wire_array(name, value) for name, value in (arrays or {}).items()}
    listed = [[name, array.dtype.str, list(array.shape)] for name, array in wired.items()]
    connection.send_bytes(json.dumps({**header, "arrays": listed}).encode("utf-8"))
    for array in wired.values():
        connection.send_bytes(memoryview(array).cast("B") if array.size else b"")


def receive(connection: Connection) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """One message: ``(header, arrays)``; raises ``ValueError`` on a malformed one."""
    header = json.loads(connection.recv_bytes(MAX_MESSAGE).decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError(f"service protocol: expected a JSON object, got {type(header).__name__}")
    arrays = {}
    for name, dtype, shape in header.pop("arrays", []):
        kind = np.dtype(dtype)
        if kind.kind not in _ARRAY_KINDS or kind.byteorder == ">":
            raise ValueError(f"service protocol: array {name!r} has dtype {dtype!r}; allowed: little-endian "
                             f"bool, integer and float")
        data = connection.recv_bytes(MAX_MESSAGE)
        expected = int(np.prod(shape, dtype=np.int64)) * kind.itemsize
        if len(data) != expected:
            raise ValueError(f"service protocol: array {name!r} declares shape {shape} of {dtype} "
                             f"({expected} bytes) but {len(data)} bytes came")
        arrays[name] = np.frombuffer(data, dtype=kind).reshape(shape)
    return header, arrays


def raise_remote(header: Mapping[str, Any], where: str) -> None:
    """Raise the error an ``{"type": "error"}`` header describes, as its own type when it is a common one."""
    name, message = header.get("error_type"), str(header.get("message"))
    if name == "Cancelled":
        raise Cancelled(message)
    kind = _ERRORS.get(name)
    error = kind(message) if kind is not None else ServiceError(f"{name}: {message}")
    error.add_note(f"raised in the compute service; its log: {where}")
    raise error


def request_key(op: str, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> str:
    """Digest of a request (operation, header, array bytes): identical requests share one job."""
    digest = hashlib.sha256(op.encode())
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(memoryview(array).cast("B") if array.size else b"")
    return digest.hexdigest()[:32]


# ---------------------------------------------------------------------------------------------- frames and tasks
def encode_frame(frame: Any, prefix: str) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A pandas DataFrame as ``(spec, arrays)``: numeric columns as arrays, the others as JSON lists."""
    spec: dict[str, Any] = {"columns": [], "n_rows": int(len(frame))}
    arrays = {}
    for index, column in enumerate(frame.columns):
        values = frame[column]
        if values.dtype.kind in _ARRAY_KINDS:
            name = f"{prefix}:{index}"
            arrays[name] = values.to_numpy()
            spec["columns"].append([str(column), "array", name])
        else:
            listed = [None if value is None or (isinstance(value, float) and value != value) else value
                      for value in values.astype(object).tolist()]
            spec["columns"].append([str(column), "list", listed])
    return spec, arrays


def decode_frame(spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Any:
    """The DataFrame :func:`encode_frame` encoded."""
    import pandas as pd  # noqa: PLC0415

    data = {}
    for column, kind, value in spec["columns"]:
        if kind == "array":
            data[column] = np.array(arrays[value])
        elif kind == "list":
            data[column] = pd.Series(value)
        else:
            raise ValueError(f"service protocol: column {column!r} has kind {kind!r}; allowed: 'array', 'list'")
    return pd.DataFrame(data, index=pd.RangeIndex(int(spec["n_rows"])))


def encode_task(task: Any) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A :class:`~revdistill.experiment.tasks.Task` as ``(spec, arrays)``."""
    table, arrays = encode_frame(task.table, "task.table")
    spec = {"table": table, "folds": sorted(task.folds)}
    arrays["task.scores"] = np.asarray(task.scores)
    for scheme, folds in task.folds.items():
        arrays[f"task.folds:{scheme}"] = np.asarray(folds)
    for item in fields(task):
        if item.name not in ("table", "folds", "scores"):
            spec[item.name] = getattr(task, item.name)
    return spec, arrays


def decode_task(spec: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Any:
    """The Task :func:`encode_task` encoded."""
    from revdistill.experiment.tasks import Task  # noqa: PLC0415

    values = {key: value for key, value in spec.items() if key not in ("table", "folds")}
    values["records"] = [(str(record_id), str(sequence)) for record_id, sequence in values["records"]]
    return Task(**values, table=decode_frame(spec["table"], arrays), scores=np.array(arrays["task.scores"]),
                folds={scheme: np.array(arrays[f"task.folds:{scheme}"]) for scheme in spec["folds"]})
