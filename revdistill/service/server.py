"""The compute service's server: one process per server, shared by every visitor's kernel.

Started by :class:`~revdistill.service.client.ServiceClient` on demand (``python -m revdistill.service serve``)
or by ``make dashboard``. Each connection carries one request (see :mod:`.protocol`): ``{"op", "visitor",
...}`` and arrays. Compute operations (:data:`~.jobs.OPERATIONS`) become jobs of the fair
:class:`~.scheduler.Scheduler`; while one waits or runs the connection streams ``{"type": "progress",
"fraction", "message"}`` messages and listens: ``{"op": "cancel"}`` or a closed connection (the kernel shut
down or crashed) withdraws this visitor from the job. Then ``{"type": "result", ...}`` with arrays, or
``{"type": "error", "error_type", "message"}``. ``status``, ``release``, ``shutdown`` and the light
:data:`IMMEDIATE` operations answer at once.

``NUMBA_CACHE_DIR`` is set here, for this process only (UMAP's compiled code is kept in the cache folder and
compiled once per server); nothing in the package sets it at import.
"""
from __future__ import annotations

import contextlib
import logging
import os
import threading
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any

from revdistill.io.files import LockBusyError, file_lock
from revdistill.service.jobs import OPERATIONS, Context
from revdistill.service.protocol import (PROTOCOL, Cancelled, authkey, package_root, prepare_dir, receive,
                                         request_key, send, service_dir)
from revdistill.service.scheduler import Job, Scheduler

logger = logging.getLogger(__name__)

__all__ = ["serve"]

_POLL_S = 0.1
#: Operations answered in the connection's own thread: what a page asks while the visitor changes a control.
IMMEDIATE = ("environment", "estimate", "warm_up")


class _Server:
    """Requests in, jobs out; models freed after ``idle_timeout`` s without jobs."""

    def __init__(self, directory: Path, idle_timeout: float, exit_after: float | None, workers: int,
                 threads: int | None) -> None:
        self.directory, self.idle_timeout, self.exit_after = directory, float(idle_timeout), exit_after
        self.context = Context(threads=threads)
        self.scheduler = Scheduler(self._run, workers=workers)
        self.stop = threading.Event()
        self.connections, self.peak_connections = 0, 0
        self.guard = threading.Lock()

    def _run(self, job: Job) -> Any:
        return self.context.run(job.op, job.header, job.arrays, job.progress, key=job.key)

    # -------------------------------------------------------------------- requests
    def handle(self, connection: Connection) -> None:
        with self.guard:
            self.connections += 1
            self.peak_connections = max(self.peak_connections, self.connections)
        try:
            with connection:
                self._handle(connection)
        finally:
            with self.guard:
                self.connections -= 1

    def _handle(self, connection: Connection) -> None:
        try:
            header, arrays = receive(connection)
            if header.get("protocol") != PROTOCOL:
                raise ValueError(f"service protocol {header.get('protocol')!r} is not {PROTOCOL}; restart the "
                                 f"service (it is from another revdistill version)")
            operation = header.pop("op", None)
            header.pop("protocol")
            visitor = str(header.pop("visitor", "anonymous"))
            if operation in IMMEDIATE:  # a few file reads: answered at once, never queued behind long jobs
                reply, reply_arrays = self.context.run(operation, header, arrays, lambda *_: None,
                                                       key=request_key(operation, header, arrays))
                send(connection, {"type": "result", **reply}, reply_arrays)
            elif operation in OPERATIONS:
                self._job(connection, operation, visitor, header, arrays)
            elif operation == "status":
                send(connection, {"type": "status", **self.status()})
            elif operation == "release":
                self.context.release()
                send(connection, {"type": "status", **self.status()})
            elif operation == "shutdown":
                self.stop.set()
                send(connection, {"type": "bye", "pid": os.getpid()})
            else:
                raise ValueError(f"op={operation!r} must be one of {[*OPERATIONS, 'status', 'release', 'shutdown']}")
        except Exception as error:  # noqa: BLE001 - every error goes back to the client
            if not isinstance(error, (Cancelled, EOFError, BrokenPipeError)):
                logger.exception("request failed")
            with contextlib.suppress(OSError, ValueError):
                send(connection, {"type": "error", "error_type": type(error).__name__, "message": str(error)})

    def _job(self, connection: Connection, operation: str, visitor: str, header: dict, arrays: dict) -> None:
        job = self.scheduler.submit(visitor, request_key(operation, header, arrays), operation, header, arrays)
        seen, waiting = -1, True
        try:
            while not job.done.wait(_POLL_S):
                if connection.poll(0):
                    try:
                        message, _ = receive(connection)
                    except (EOFError, OSError):
                        message = {"op": "leave"}
                    waiting = False
                    self.scheduler.leave(job, "cancelled" if message.get("op") == "cancel" else "left")
                    if message.get("op") != "cancel":
                        return  # the visitor is gone: nobody to answer
                    break
                if job.updates != seen:
                    seen = job.updates
                    fraction, text = job.status
                    send(connection, {"type": "progress", "fraction": fraction, "message": text, "state": job.state})
        except (EOFError, OSError):
            if waiting:
                self.scheduler.leave(job, "left")
            return
        if not waiting:
            send(connection, {"type": "error", "error_type": "Cancelled", "message": f"{operation} cancelled"})
            return
        if job.updates != seen and job.state == "done":  # the last progress point, then the result
            fraction, text = job.status
            send(connection, {"type": "progress", "fraction": fraction, "message": text, "state": job.state})
        if job.error is not None:
            raise job.error
        reply, reply_arrays = job.result
        send(connection, {"type": "result", **reply}, reply_arrays)

    def status(self) -> dict[str, Any]:
        from revdistill.views.umap_engine import umap_ready  # noqa: PLC0415

        context = self.context
        return {"pid": os.getpid(), "code": package_root(), "umap_ready": umap_ready(), "loads": dict(context.loads),
                "loaded": context.loaded(),
                "computed": dict(context.computed), "requests": dict(context.requests),
                "analyses": len(context.analyses),
                "connections": self.connections, "peak_connections": self.peak_connections,
                "idle_timeout": self.idle_timeout, **self.scheduler.status()}

    def watch_idle(self) -> None:
        """Free the models after ``idle_timeout`` s without jobs; stop after ``exit_after`` s, if set."""
        interval = max(0.05, min(1.0, self.idle_timeout / 4))
        while not self.stop.wait(interval):
            idle = self.scheduler.status()["idle_s"]
            if idle >= self.idle_timeout and self.context.embedders and self.context.device_lock.acquire(False):
                try:
                    self.context._release()
                finally:
                    self.context.device_lock.release()
            if self.exit_after is not None and idle >= self.exit_after:
                logger.info("no job for %.0f s: the service stops", idle)
                self.stop.set()
            if not (self.directory / "service.sock").exists() and not self.stop.is_set():
                self._exit_orphaned()

    def _exit_orphaned(self) -> None:
        """Stop once the socket file is gone (its runtime folder removed): no client can reach this service again,
        and the next client starts another (:func:`_wake_on_stop` then finds no socket and ends the process)."""
        logger.warning("%s was removed: no client can reach this service; it stops", self.directory / "service.sock")
        self.stop.set()

    def exit_unreachable(self) -> None:
        """End the process when ``accept()`` cannot be woken (the socket file is gone): after a running embedding
        has committed its part, at once."""
        self.scheduler.stop()
        with self.context.device_lock:
            logger.info("compute service %d stops", os.getpid())
            logging.shutdown()
            os._exit(0)


def serve(runtime_dir: str | Path | None = None, *, idle_timeout: float = 600.0, exit_after: float | None = None,
          workers: int = 2, threads: int | None = None, warm_up: bool = False) -> int:
    """Run the service in this process until a ``shutdown`` request (or ``exit_after`` s without jobs).

    Parameters
    ----------
    runtime_dir : path, optional
        See :func:`~.protocol.service_dir`.
    idle_timeout : float
        Free the models after this many seconds without jobs.
    exit_after : float, optional
        Stop after this many seconds without jobs.
    workers : int
        Jobs that run at once (a small one runs while a long one does).
    threads : int, optional
        torch threads of an embedding job.
    warm_up : bool, default=False
        Compile UMAP's code at once, in a low-priority thread (``python -m revdistill.service start``, which
        ``make dashboard`` runs; numba's cache in the cache folder makes it quick after the first start);
        ``status()["umap_ready"]`` says when it is done.

    Returns
    -------
    int
        0, or 1 when another service already serves ``runtime_dir``.
    """
    directory = prepare_dir(service_dir(runtime_dir))
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(file_lock(directory / "serve.lock", wait=False))  # for this process's lifetime
        except LockBusyError:
            logger.warning("another service already serves %s", directory)
            return 1
        address = str(directory / "service.sock")
        Path(address).unlink(missing_ok=True)  # stale: its service no longer holds serve.lock
        server = _Server(directory, idle_timeout, exit_after, workers, threads)
        key = authkey(directory)
        with Listener(address, family="AF_UNIX", backlog=128, authkey=key) as listener:
            os.chmod(address, 0o600)
            threading.Thread(target=server.watch_idle, daemon=True).start()
            threading.Thread(target=_wake_on_stop, args=(server, address, key), daemon=True).start()
            if warm_up:
                from revdistill.views.umap_engine import start_warm_up  # noqa: PLC0415

                start_warm_up()  # before the first visitor asks: a class meets a compiled UMAP
            logger.info("compute service %d serving %s", os.getpid(), address)
            while not server.stop.is_set():
                try:
                    connection = listener.accept()
                except (OSError, EOFError) as error:  # includes a client failing the authkey challenge
                    logger.warning("refused a connection: %s", error)
                    continue
                if server.stop.is_set():
                    connection.close()
                    break
                threading.Thread(target=server.handle, args=(connection,), daemon=True).start()
            server.scheduler.stop()
            with server.context.device_lock:  # let a running embedding commit its last part
                logger.info("compute service %d stops", os.getpid())
    return 0


def _wake_on_stop(server: _Server, address: str, key: bytes) -> None:
    """Unblock ``listener.accept()`` once ``server.stop`` is set (a connection to ourselves); when the socket file
    is gone (the runtime folder was removed, even just after a shutdown request), nothing can wake it: the
    process ends here."""
    server.stop.wait()
    try:
        Client(address, family="AF_UNIX", authkey=key).close()
    except (OSError, EOFError):
        if not Path(address).exists():
            server.exit_unreachable()


def configure_process(cache: str | Path | None = None) -> None:
    """Settings of the service process (called by ``python -m revdistill.service serve`` only).

    ``NUMBA_CACHE_DIR`` points to ``<cache>/numba`` unless set: UMAP's compiled code survives restarts.
    """
    if not os.environ.get("NUMBA_CACHE_DIR"):
        from revdistill.io.paths import cache_dir  # noqa: PLC0415

        os.environ["NUMBA_CACHE_DIR"] = str(cache_dir("numba", cache))
