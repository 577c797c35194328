"""Clients of the compute service: the raw request channel, the embedder, and the dashboard's backends.

:class:`ServiceClient` finds the server's one service through its runtime folder (:func:`~.protocol.service_dir`)
and starts it when none runs (``start.lock`` makes sure two kernels never start two). A request opens one
connection, sends its header and arrays, reads progress messages until the result comes, and can be
cancelled (``cancel``, a :class:`threading.Event`); a service that dies mid-request raises one
:class:`~.protocol.ServiceError` that says so, and the next request starts a new service.

:class:`WorkerEmbedder` has the interface of :class:`~revdistill.esm.runner.LocalEmbedder` and embeds
through the service (this process never imports fair-esm or torch). :class:`ServiceCompute` and
:class:`LocalCompute` are the two backends of the dashboard (:mod:`revdistill.service.results`): the same
operations, over the socket or in this process.

>>> embedder = make_embedder(EmbedOptions(), worker=False)        # the in-process LocalEmbedder
>>> type(embedder).__name__
'LocalEmbedder'
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from revdistill.io.files import LockBusyError, file_lock
from revdistill.esm.models.registry import parse_models
from revdistill.esm.runner import EmbedOptions, LocalEmbedder, ProgressCallback
from revdistill.service.protocol import (PROTOCOL, Cancelled, ServiceError, authkey, prepare_dir, raise_remote,
                                         receive, request_key, send, service_dir)

logger = logging.getLogger(__name__)

__all__ = ["ServiceClient", "WorkerEmbedder", "ServiceCompute", "LocalCompute", "make_embedder",
           "USE_SERVICE_ENV"]

#: "1"/"true"/"yes" makes :func:`make_embedder` (and the dashboard) use the service; "0"/"false"/"no" not.
USE_SERVICE_ENV = "REVDISTILL_SERVICE"
_UNREACHABLE = (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, EOFError)
#: The longest :meth:`ServiceClient.shutdown` waits for the stopped service's process to end (a running embedding
#: first commits its part).
SHUTDOWN_WAIT_S = 60.0
Reply = tuple[dict[str, Any], dict[str, np.ndarray]]
FractionProgress = Callable[[float, str], None]


def use_service_from_env() -> bool | None:
    """``$REVDISTILL_SERVICE`` as a bool, or None when unset."""
    value = os.environ.get(USE_SERVICE_ENV, "").strip().lower()
    if not value:
        return None
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise ValueError(f"${USE_SERVICE_ENV}={value!r} must be 1/true/yes or 0/false/no")


class ServiceClient:
    """The request channel to the server's compute service (started on demand).

    Parameters
    ----------
    runtime_dir : str or Path, optional
        The service's runtime folder (default :func:`~.protocol.service_dir`).
    visitor : str, optional
        Who asks (jobs are queued fairly by visitor); default one id per client.
    idle_timeout : float, default=600
        Seconds without jobs after which a service *started by this client* frees its models.
    exit_after : float, optional
        Seconds without jobs after which a service started by this client exits (default: never).
    threads : int, optional
        torch threads of an embedding job of a service started by this client.
    workers : int, default=2
        Jobs at once in a service started by this client.
    warm_up : bool, default=False
        A service started by this client compiles UMAP's code at once instead of on the first request for it
        (a server operator's ``python -m revdistill.service start``; a kernel asks for it anyway).
    start_timeout : float, default=120
        Seconds to wait for a new service to accept connections.
    """

    def __init__(self, runtime_dir: str | Path | None = None, *, visitor: str | None = None,
                 idle_timeout: float = 600.0, exit_after: float | None = None, threads: int | None = None,
                 workers: int = 2, warm_up: bool = False, start_timeout: float = 120.0) -> None:
        if float(idle_timeout) <= 0:
            raise ValueError(f"idle_timeout={idle_timeout!r} must be a positive number of seconds")
        if exit_after is not None and float(exit_after) < float(idle_timeout):
            raise ValueError(f"exit_after={exit_after!r} must be at least idle_timeout={idle_timeout!r}")
        if threads is not None and int(threads) < 1:
            raise ValueError(f"threads={threads!r} must be a positive integer")
        if int(workers) < 1:
            raise ValueError(f"workers={workers!r} must be a positive integer")
        self.directory = service_dir(runtime_dir)
        self.visitor = visitor or f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.idle_timeout, self.exit_after, self.threads = float(idle_timeout), exit_after, threads
        self.workers, self.warm_up, self.start_timeout = int(workers), bool(warm_up), float(start_timeout)

    @property
    def log(self) -> Path:
        return self.directory / "service.log"

    # -------------------------------------------------------------------- public
    def request(self, op: str, header: Mapping[str, Any] | None = None, arrays: Mapping[str, Any] | None = None,
                *, progress: FractionProgress | None = None, cancel: threading.Event | None = None) -> Reply:
        """Send one request and wait for its result; ``progress(fraction, message)`` as it streams.

        Raises
        ------
        Cancelled
            ``cancel`` was set (the job stops unless another visitor waits for the same one).
        ServiceError
            The service went away mid-request (the next request starts a new one).
        """
        connection = self._connect_or_start()
        with connection:
            try:
                send(connection, {**(header or {}), "op": op, "protocol": PROTOCOL, "visitor": self.visitor},
                     arrays)
                cancelled = False
                while True:
                    if cancel is not None and cancel.is_set() and not cancelled:
                        send(connection, {"op": "cancel"})
                        cancelled = True
                    if not connection.poll(0.1):
                        continue
                    reply, reply_arrays = receive(connection)
                    if reply.get("type") != "progress":
                        break
                    if progress is not None:
                        progress(float(reply["fraction"]), str(reply["message"]))
            except (EOFError, OSError) as error:
                raise ServiceError(f"the compute service went away during the request ({type(error).__name__}); "
                                   f"see {self.log}; the next request starts it again") from error
        if reply.get("type") == "error":
            raise_remote(reply, str(self.log))
        reply.pop("type", None)
        return reply, reply_arrays

    def status(self) -> dict[str, Any]:
        """The service's ``pid``, model ``loads``/``loaded`` per alias, job counts, queue; starts one if none runs."""
        return self.request("status")[0]

    def release(self) -> dict[str, Any]:
        """Ask the service to free its models now (after the running embedding); returns its status."""
        return self.request("release")[0]

    def shutdown(self) -> bool:
        """Stop the service if one runs; True if one was stopped.

        Waits for a service another client is starting (``start.lock``), so that one is stopped too rather than
        left running after this call.
        """
        if not self.directory.is_dir():
            return False
        with file_lock(self.directory / "start.lock"):
            try:
                connection = self._connect()
            except _UNREACHABLE:
                return False
            with connection:
                send(connection, {"op": "shutdown", "protocol": PROTOCOL})
                receive(connection)
            # Until its process ends, the stopping service still accepts connections (then drops them): a request
            # right after this call would get a broken pipe instead of a new service.
            deadline = time.monotonic() + SHUTDOWN_WAIT_S
            while _serving(self.directory) and time.monotonic() < deadline:
                time.sleep(0.05)
        return True

    # -------------------------------------------------------------------- internals
    def _connect(self) -> Connection:
        return Client(str(self.directory / "service.sock"), family="AF_UNIX", authkey=authkey(self.directory))

    def _connect_or_start(self) -> Connection:
        directory = prepare_dir(self.directory)
        with contextlib.suppress(*_UNREACHABLE):
            return self._connect()
        with file_lock(directory / "start.lock"):
            deadline, process = time.monotonic() + self.start_timeout, None
            while True:
                with contextlib.suppress(*_UNREACHABLE):  # maybe another client started one meanwhile
                    return self._connect()
                if process is None or process.poll() == 1:  # 1: a dying service still held serve.lock
                    process = self._start()
                elif process.poll() is not None:
                    raise ServiceError(f"the compute service exited with code {process.returncode} before "
                                       f"serving; its log: {self.log}\n{_tail(self.log)}")
                if time.monotonic() > deadline:
                    raise ServiceError(f"the compute service did not start within {self.start_timeout:.0f} s; "
                                       f"its log: {self.log}")
                time.sleep(0.05)

    def _start(self) -> subprocess.Popen:
        """Start a service (the caller holds ``start.lock`` and found no live one)."""
        package_parent = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent,
                                                                        os.environ.get("PYTHONPATH")])))
        command = [sys.executable, "-m", "revdistill.service", "serve", "--dir", str(self.directory),
                   "--idle-timeout", str(self.idle_timeout), "--workers", str(self.workers)]
        if self.exit_after is not None:
            command += ["--exit-after", str(float(self.exit_after))]
        if self.threads is not None:
            command += ["--threads", str(int(self.threads))]
        if self.warm_up:
            command.append("--warm-up")
        with open(self.log, "ab") as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True)
        logger.info("started the compute service (pid %d) in %s", process.pid, self.directory)
        return process


def _tail(path: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return ""


class WorkerEmbedder:
    """Embed records into stores through the server's compute service (started on demand).

    Same interface as :class:`~revdistill.esm.runner.LocalEmbedder` (``embed(store, records, models, ...)``);
    this process never loads ESM-2.

    Parameters
    ----------
    options : EmbedOptions, optional
        Sent with every job (``progress`` is ignored: progress comes back through ``on_progress``).
    **client_settings
        Keywords of :class:`ServiceClient` (``runtime_dir``, ``idle_timeout``, ``threads`` ...).
    """

    def __init__(self, options: EmbedOptions | None = None, **client_settings: Any) -> None:
        self.options = options or EmbedOptions()
        self.client = ServiceClient(**client_settings)
        self.directory = self.client.directory

    def embed(self, store: Any, records: Iterable[tuple[str, str]] | Mapping[str, str], models: Sequence[str] | str,
              *, per_residue: bool | Iterable[str] = False, on_progress: ProgressCallback | None = None) -> int:
        """Have the service embed the records ``store`` lacks with every model; return how many were added.

        Parameters and errors as :meth:`LocalEmbedder.embed <revdistill.esm.runner.LocalEmbedder.embed>`;
        an error raised in the service is raised here with the service's message.
        """
        from revdistill.esm.sequences import validate_records  # noqa: PLC0415

        aliases = parse_models(models)
        records = validate_records(records)
        wanted = per_residue if isinstance(per_residue, bool) else (
            [per_residue] if isinstance(per_residue, str) else [str(record_id) for record_id in per_residue])
        header = {"options": self.options.to_dict(), "store": str(Path(store.path).resolve()),
                  "records": records, "models": list(aliases), "per_residue": wanted}

        def progress(fraction: float, message: str) -> None:
            if on_progress is not None and message.startswith("embedded "):
                done, _, total = message.removeprefix("embedded ").partition(" of ")
                on_progress(int(done), int(total))

        return int(self.client.request("embed", header, progress=progress)[0]["added"])

    def status(self) -> dict[str, Any]:
        """The service's status (see :meth:`ServiceClient.status`)."""
        return self.client.status()

    def release(self) -> dict[str, Any]:
        return self.client.release()

    def shutdown(self) -> bool:
        return self.client.shutdown()


def make_embedder(options: EmbedOptions | None = None, *, worker: bool | None = None,
                  **client_settings: Any) -> LocalEmbedder | WorkerEmbedder:
    """A :class:`WorkerEmbedder` or an in-process :class:`LocalEmbedder`, by configuration.

    Parameters
    ----------
    options : EmbedOptions, optional
    worker : bool, optional
        Default: ``$REVDISTILL_SERVICE`` (unset: False).
    **client_settings
        Keywords of :class:`ServiceClient` (``runtime_dir``, ``idle_timeout`` ...).
    """
    if worker is None:
        worker = bool(use_service_from_env())
    if worker:
        return WorkerEmbedder(options, **client_settings)
    if client_settings:
        raise ValueError(f"service settings {sorted(client_settings)} need worker=True")
    return LocalEmbedder(options)


# ---------------------------------------------------------------------------------------------- backends
class ServiceCompute:
    """The dashboard's operations, run by the server's compute service (one per server)."""

    def __init__(self, client: ServiceClient | None = None) -> None:
        self.client = client or ServiceClient()

    def __call__(self, op: str, header: Mapping[str, Any], arrays: Mapping[str, Any] | None = None, *,
                 progress: FractionProgress | None = None, cancel: threading.Event | None = None) -> Reply:
        return self.client.request(op, header, arrays, progress=progress, cancel=cancel)


class LocalCompute:
    """The same operations in this process (scripts and tests; imports the compute stack here)."""

    def __init__(self, threads: int | None = None) -> None:
        from revdistill.service.jobs import Context  # noqa: PLC0415

        self.context = Context(threads=threads)

    def __call__(self, op: str, header: Mapping[str, Any], arrays: Mapping[str, Any] | None = None, *,
                 progress: FractionProgress | None = None, cancel: threading.Event | None = None) -> Reply:
        arrays = {name: np.asarray(value) for name, value in (arrays or {}).items()}
        header = dict(header)

        def report(fraction: float, message: str = "") -> None:
            if cancel is not None and cancel.is_set():
                raise Cancelled(f"{op} cancelled")
            if progress is not None:
                progress(fraction, message)

        return self.context.run(op, header, arrays, report, key=request_key(op, header, arrays))


def _serving(directory: Path) -> bool:
    """Whether a service process holds ``directory``'s ``serve.lock`` (it does for its lifetime)."""
    try:
        with file_lock(directory / "serve.lock", wait=False):
            return False
    except LockBusyError:
        return True
    except FileNotFoundError:  # the runtime folder was removed: the service exits too
        return False
