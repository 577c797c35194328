"""The embedding worker's server side: one process per server owning the ESM-2 models.

Started by :class:`revdistill.esm.worker.WorkerEmbedder` (``python -m revdistill.esm.worker serve``);
see :mod:`revdistill.esm.worker` for the protocol. Each job runs with a
:class:`~revdistill.esm.runner.LocalEmbedder` of the worker's own, one at a time (one device); the
models are freed after ``idle_timeout`` seconds without work.
"""
from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
import time
import weakref
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Any, Mapping, Sequence

from revdistill.esm.runner import EmbedOptions, LocalEmbedder
from revdistill.esm.worker import PROTOCOL, _authkey, _prepare_dir, _receive, _send, worker_dir

logger = logging.getLogger(__name__)

__all__ = ["serve"]


class _Server:
    """The worker's state: a LocalEmbedder for the current (device, dtype, weights, download), one job at a time."""

    def __init__(self, directory: Path, idle_timeout: float, exit_after: float | None) -> None:
        self.directory, self.idle_timeout, self.exit_after = directory, float(idle_timeout), exit_after
        self.embedders: dict[tuple, LocalEmbedder] = {}
        self.loads: dict[str, int] = {}
        self.modules: dict[str, list[weakref.ref]] = {}  # alias -> every module loaded (alive while in memory)
        self.device_lock = threading.Lock()
        self.guard = threading.Lock()
        self.busy, self.peak_busy, self.jobs_done, self.last_active = 0, 0, 0, time.monotonic()
        self.stop = threading.Event()

    # -------------------------------------------------------------------- requests
    def handle(self, connection: Connection) -> None:
        with connection:
            try:
                request = _receive(connection)
                if request.get("protocol") != PROTOCOL:
                    raise ValueError(f"worker protocol {request.get('protocol')!r} is not {PROTOCOL}; "
                                     f"restart the worker (it is from another revdistill version)")
                operation = request.get("op")
                if operation == "embed":
                    _send(connection, {"type": "result", "added": self.embed(connection, request)})
                elif operation == "status":
                    _send(connection, {"type": "status", **self.status()})
                elif operation == "release":
                    with self.device_lock:
                        self.release()
                    _send(connection, {"type": "status", **self.status()})
                elif operation == "shutdown":
                    self.stop.set()
                    _send(connection, {"type": "bye", "pid": os.getpid()})
                else:
                    raise ValueError(f"op={operation!r} must be one of 'embed', 'status', 'release', 'shutdown'")
            except Exception as error:  # noqa: BLE001 - every error goes back to the client
                logger.exception("request failed")
                with contextlib.suppress(OSError, ValueError):
                    _send(connection, {"type": "error", "error_type": type(error).__name__, "message": str(error)})

    def embed(self, connection: Connection, request: Mapping[str, Any]) -> int:
        from revdistill.esm.store import EmbeddingStore

        options = dict(request["options"], progress=False)
        weights_dir = options.get("weights_dir")
        options = EmbedOptions(**{**options, "weights_dir": Path(weights_dir) if weights_dir else None})
        store = EmbeddingStore(request["store"])
        records = [(str(record_id), str(sequence)) for record_id, sequence in request["records"]]
        client_alive = [True]

        def on_progress(done: int, total: int) -> None:
            if client_alive[0]:  # a client that went away does not stop the job: its work is committed
                try:
                    _send(connection, {"type": "progress", "done": done, "total": total})
                except OSError:
                    client_alive[0] = False

        with self.guard:
            self.busy += 1
            self.peak_busy = max(self.peak_busy, self.busy)
        try:
            if self.device_lock.locked():
                on_progress(0, -1)  # queued behind another job
            with self.device_lock:
                embedder = self._embedder(options)
                return embedder.embed(store, records, request["models"], per_residue=request["per_residue"],
                                      on_progress=on_progress)
        finally:
            with self.guard:
                self.busy -= 1
                self.jobs_done += 1
                self.last_active = time.monotonic()

    def _embedder(self, options: EmbedOptions) -> LocalEmbedder:
        """The embedder of this configuration; another configuration's models are freed first (one copy)."""
        key = (options.device, options.dtype, str(options.weights_dir), options.download)
        if key not in self.embedders:
            self.release()
            self.embedders[key] = _CountingEmbedder(options, self)
        embedder = self.embedders[key]
        embedder.options = options  # token budget, flush size ... may differ from job to job
        return embedder

    def count_loads(self, modules: Mapping[str, Any]) -> None:
        """Count the modules that were not loaded before (a new object for an alias is a new load)."""
        with self.guard:
            for alias, module in modules.items():
                known = self.modules.setdefault(alias, [])
                if not any(ref() is module for ref in known):
                    self.loads[alias] = self.loads.get(alias, 0) + 1
                    known[:] = [ref for ref in known if ref() is not None] + [weakref.ref(module)]

    def status(self) -> dict[str, Any]:
        with self.guard:
            loaded = {alias: n for alias, refs in self.modules.items() if (n := sum(r() is not None for r in refs))}
            return {"pid": os.getpid(), "loads": dict(self.loads), "loaded": loaded, "busy": self.busy,
                    "peak_busy": self.peak_busy, "jobs_done": self.jobs_done, "idle_timeout": self.idle_timeout}

    def release(self) -> None:
        """Drop every model and return the memory (the caller holds the device lock)."""
        if not self.embedders:
            return
        for embedder in self.embedders.values():
            embedder.release()
        self.embedders.clear()
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        logger.info("released the models (%.0f s since the last job)", time.monotonic() - self.last_active)

    def watch_idle(self) -> None:
        """Free the models after ``idle_timeout`` s without jobs; stop after ``exit_after`` s, if set."""
        interval = max(0.05, min(1.0, self.idle_timeout / 4))
        while not self.stop.wait(interval):
            with self.guard:
                idle = 0.0 if self.busy else time.monotonic() - self.last_active
            if idle >= self.idle_timeout and self.device_lock.acquire(blocking=False):
                try:
                    self.release()
                finally:
                    self.device_lock.release()
            if self.exit_after is not None and idle >= self.exit_after:
                logger.info("no job for %.0f s: the worker stops", idle)
                self.stop.set()


class _CountingEmbedder(LocalEmbedder):
    """A LocalEmbedder that tells the server which models it had to load."""

    def __init__(self, options: EmbedOptions, server: _Server) -> None:
        super().__init__(options)
        self._server = server

    def models(self, aliases: Sequence[str]) -> dict[str, Any]:
        modules = super().models(aliases)
        self._server.count_loads(modules)
        return modules


def _hold_serve_lock(directory: Path):
    """Take ``serve.lock`` for this process's lifetime; None if another worker holds it."""
    import fcntl

    handle = open(directory / "serve.lock", "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def serve(runtime_dir: str | Path | None = None, *, idle_timeout: float = 600.0,
          exit_after: float | None = None) -> int:
    """Run the worker in this process until a ``shutdown`` request (or ``exit_after`` s without jobs).

    Returns 0, or 1 when another worker already serves ``runtime_dir``.
    """
    directory = _prepare_dir(worker_dir(runtime_dir))
    lock = _hold_serve_lock(directory)
    if lock is None:
        logger.warning("another worker already serves %s", directory)
        return 1
    address = str(directory / "worker.sock")
    Path(address).unlink(missing_ok=True)  # stale: its worker no longer holds serve.lock
    server = _Server(directory, idle_timeout, exit_after)
    authkey = _authkey(directory)
    with lock, Listener(address, family="AF_UNIX", backlog=64, authkey=authkey) as listener:
        os.chmod(address, 0o600)
        threading.Thread(target=server.watch_idle, daemon=True).start()
        threading.Thread(target=_wake_on_stop, args=(server.stop, address, authkey), daemon=True).start()
        logger.info("embedding worker %d serving %s", os.getpid(), address)
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
        with server.device_lock:  # let a running job commit its last part
            logger.info("embedding worker %d stops", os.getpid())
    return 0


def _wake_on_stop(stop: threading.Event, address: str, authkey: bytes) -> None:
    """Unblock ``listener.accept()`` once ``stop`` is set (a connection to ourselves)."""
    stop.wait()
    with contextlib.suppress(OSError, EOFError):
        Client(address, family="AF_UNIX", authkey=authkey).close()
