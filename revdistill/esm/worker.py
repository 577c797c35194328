"""One embedding worker per server: it owns the ESM-2 models on the device; kernels send it jobs.

Every Voila kernel is its own process, so a kernel that loads ESM-2 itself holds its own copy (15B in
bf16 is 30 GB per visitor). :class:`WorkerEmbedder` has the interface of
:class:`~revdistill.esm.runner.LocalEmbedder` but sends each job (records, models, options, store path)
to a single worker process, which embeds with a ``LocalEmbedder`` of its own (so the store's writer
lock, parts and resumption behave exactly the same), reports progress back, and frees the models after
``idle_timeout`` seconds without work. The kernel never imports fair-esm.

The worker is started on demand by the first client and found by the others through a runtime folder
(``runtime_dir``, else ``$REVDISTILL_WORKER_DIR``, else ``$XDG_RUNTIME_DIR/revdistill-worker``, else
``<cache>/worker``; mode 0700) holding:

* ``worker.sock``: a Unix socket served by :class:`multiprocessing.connection.Listener`;
* ``authkey``: a random key (mode 0600) that clients prove they know (HMAC challenge);
* ``start.lock``: taken by a client while it checks for and starts a worker (two kernels never start two);
* ``serve.lock``: held by the live worker for its lifetime; a socket whose ``serve.lock`` is free is stale;
* ``worker.log``: the worker's log.

Messages are JSON objects sent with ``send_bytes`` (never pickle). Requests: ``{"op": "embed", ...}``,
``{"op": "status"}``, ``{"op": "release"}``, ``{"op": "shutdown"}``. An embed job answers with
``{"type": "progress", "done", "total"}`` messages, then ``{"type": "result", "added"}`` or
``{"type": "error", "error_type", "message"}``; errors are raised in the client with the worker's message.
Jobs run one at a time (one device); a second kernel's job waits for the first.

>>> embedder = make_embedder(EmbedOptions(), worker=False)        # the in-process LocalEmbedder
>>> type(embedder).__name__
'LocalEmbedder'
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import subprocess
import sys
import time
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from revdistill.io.files import file_lock
from revdistill.esm.models.registry import parse_models
from revdistill.esm.runner import EmbedOptions, LocalEmbedder, ProgressCallback

logger = logging.getLogger(__name__)

__all__ = ["WORKER_ENV", "WorkerEmbedder", "WorkerError", "make_embedder", "worker_dir"]

#: Environment variable naming the runtime folder of the worker.
WORKER_ENV = "REVDISTILL_WORKER_DIR"
#: Environment variable that makes :func:`make_embedder` return a :class:`WorkerEmbedder` ("1", "true", "yes").
USE_WORKER_ENV = "REVDISTILL_EMBED_WORKER"
PROTOCOL = 1
_MAX_MESSAGE = 1 << 31
_SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
_UNREACHABLE = (FileNotFoundError, ConnectionRefusedError, ConnectionResetError, EOFError)
_ERRORS = {error.__name__: error for error in (ValueError, FileNotFoundError, RuntimeError, TypeError, KeyError,
                                               OSError, MemoryError, PermissionError)}


class WorkerError(RuntimeError):
    """The worker failed in a way that has no ordinary Python exception (it died, it is unreachable ...)."""


def worker_dir(runtime_dir: str | Path | None = None) -> Path:
    """The worker's runtime folder (see the module docstring); not created here."""
    if runtime_dir is not None:
        return Path(runtime_dir).expanduser()
    if os.environ.get(WORKER_ENV):
        return Path(os.environ[WORKER_ENV]).expanduser()
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "revdistill-worker"
    from revdistill.io.paths import cache_dir

    return cache_dir("worker")


def _send(connection: Connection, message: Mapping[str, Any]) -> None:
    connection.send_bytes(json.dumps(message).encode("utf-8"))


def _receive(connection: Connection) -> dict[str, Any]:
    message = json.loads(connection.recv_bytes(_MAX_MESSAGE).decode("utf-8"))
    if not isinstance(message, dict):
        raise ValueError(f"worker protocol: expected a JSON object, got {type(message).__name__}")
    return message


# ---------------------------------------------------------------------------------------------- the worker
def _prepare_dir(directory: Path) -> Path:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    socket_path = directory / "worker.sock"
    if len(str(socket_path)) > _SOCKET_PATH_MAX:
        raise ValueError(f"runtime_dir={str(directory)!r} is too long for a Unix socket path "
                         f"({len(str(socket_path))} > {_SOCKET_PATH_MAX} characters); set ${WORKER_ENV} "
                         f"to a shorter folder")
    return directory


def _authkey(directory: Path) -> bytes:
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
        raise ValueError(f"{path} is not a valid worker key (too short, or readable by others); delete it")
    return key


# ---------------------------------------------------------------------------------------------- the client
class WorkerEmbedder:
    """Embed records into stores through the server's embedding worker (started on demand).

    Same interface as :class:`~revdistill.esm.runner.LocalEmbedder` (``embed(store, records, models, ...)``);
    this process never loads ESM-2.

    Parameters
    ----------
    options : EmbedOptions, optional
        Sent with every job (``progress`` is ignored: progress comes back through ``on_progress``).
    runtime_dir : str or Path, optional
        The worker's runtime folder (default :func:`worker_dir`).
    idle_timeout : float, default=600
        Seconds without jobs after which a worker *started by this client* frees its models.
    exit_after : float, optional
        Seconds without jobs after which a worker started by this client exits (default: never).
    threads : int, optional
        ``torch.set_num_threads`` of a worker started by this client.
    start_timeout : float, default=120
        Seconds to wait for a new worker to accept connections.
    """

    def __init__(self, options: EmbedOptions | None = None, *, runtime_dir: str | Path | None = None,
                 idle_timeout: float = 600.0, exit_after: float | None = None, threads: int | None = None,
                 start_timeout: float = 120.0) -> None:
        if float(idle_timeout) <= 0:
            raise ValueError(f"idle_timeout={idle_timeout!r} must be a positive number of seconds")
        if exit_after is not None and float(exit_after) < float(idle_timeout):
            raise ValueError(f"exit_after={exit_after!r} must be at least idle_timeout={idle_timeout!r}")
        if threads is not None and int(threads) < 1:
            raise ValueError(f"threads={threads!r} must be a positive integer")
        self.options = options or EmbedOptions()
        self.directory = worker_dir(runtime_dir)
        self.idle_timeout, self.exit_after, self.threads = float(idle_timeout), exit_after, threads
        self.start_timeout = float(start_timeout)

    # -------------------------------------------------------------------- public
    def embed(self, store: Any, records: Iterable[tuple[str, str]] | Mapping[str, str], models: Sequence[str] | str,
              *, per_residue: bool | Iterable[str] = False, on_progress: ProgressCallback | None = None) -> int:
        """Have the worker embed the records ``store`` lacks with every model; return how many were added.

        Parameters and errors as :meth:`LocalEmbedder.embed <revdistill.esm.runner.LocalEmbedder.embed>`;
        an error raised in the worker is raised here with the worker's message.
        """
        from revdistill.esm.sequences import validate_records

        aliases = parse_models(models)
        records = validate_records(records)
        wanted = per_residue if isinstance(per_residue, bool) else (
            [per_residue] if isinstance(per_residue, str) else [str(record_id) for record_id in per_residue])
        request = {"op": "embed", "options": self.options.to_dict(), "store": str(Path(store.path).resolve()),
                   "records": records, "models": list(aliases), "per_residue": wanted}
        return int(self._request(request, on_progress)["added"])

    def status(self) -> dict[str, Any]:
        """The worker's ``pid``, ``loads`` (model loads per alias since it started), ``loaded`` (copies in
        memory per alias), ``busy`` jobs (``peak_busy``: the most at once), ``jobs_done`` and ``idle_timeout``.

        Starts a worker if none runs.
        """
        return {key: value for key, value in self._request({"op": "status"}).items() if key != "type"}

    def release(self) -> dict[str, Any]:
        """Ask the worker to free its models now (after the running job); returns its status."""
        return self._request({"op": "release"})

    def shutdown(self) -> bool:
        """Stop the worker if one runs (it finishes the running job first); True if one was stopped."""
        try:
            connection = self._connect()
        except _UNREACHABLE:
            return False
        with connection:
            _send(connection, {"op": "shutdown", "protocol": PROTOCOL})
            _receive(connection)
        return True

    # -------------------------------------------------------------------- internals
    def _request(self, request: dict[str, Any], on_progress: ProgressCallback | None = None) -> dict[str, Any]:
        connection = self._connect_or_start()
        with connection:
            try:
                _send(connection, {**request, "protocol": PROTOCOL})
                while True:
                    message = _receive(connection)
                    if message["type"] != "progress":
                        break
                    if on_progress is not None and message["total"] >= 0:
                        on_progress(int(message["done"]), int(message["total"]))
            except (EOFError, OSError) as error:
                raise WorkerError(f"the embedding worker ({self.directory}) went away during the request "
                                  f"({error!r}); see {self.directory / 'worker.log'}; the next call starts a new "
                                  f"one, and an embedding job resumes from its last committed part") from error
        if message["type"] == "error":
            kind = _ERRORS.get(message.get("error_type"), WorkerError)
            error = kind(message["message"])
            if kind is WorkerError:
                error = WorkerError(f"{message.get('error_type')}: {message['message']}")
            error.add_note(f"raised in the embedding worker; its log: {self.directory / 'worker.log'}")
            raise error
        return message

    def _connect(self) -> Connection:
        return Client(str(self.directory / "worker.sock"), family="AF_UNIX", authkey=_authkey(self.directory))

    def _connect_or_start(self) -> Connection:
        directory = _prepare_dir(self.directory)
        with contextlib.suppress(*_UNREACHABLE):
            return self._connect()
        with file_lock(directory / "start.lock"):
            deadline, process = time.monotonic() + self.start_timeout, None
            while True:
                with contextlib.suppress(*_UNREACHABLE):  # maybe another client started one meanwhile
                    return self._connect()
                if process is None or process.poll() == 1:  # 1: a dying worker still held serve.lock
                    process = self._start()
                elif process.poll() is not None:
                    raise WorkerError(f"the embedding worker exited with code {process.returncode} before "
                                      f"serving; its log: {directory / 'worker.log'}\n{_tail(directory)}")
                if time.monotonic() > deadline:
                    raise WorkerError(f"the embedding worker did not start within {self.start_timeout:.0f} s; "
                                      f"its log: {directory / 'worker.log'}")
                time.sleep(0.05)

    def _start(self) -> subprocess.Popen:
        """Start a worker (the caller holds ``start.lock`` and found no live one)."""
        package_parent = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent,
                                                                        os.environ.get("PYTHONPATH")])))
        command = [sys.executable, "-m", "revdistill.esm.worker", "serve", "--dir", str(self.directory),
                   "--idle-timeout", str(self.idle_timeout)]
        if self.exit_after is not None:
            command += ["--exit-after", str(float(self.exit_after))]
        if self.threads is not None:
            command += ["--threads", str(int(self.threads))]
        with open(self.directory / "worker.log", "ab") as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                       env=env, start_new_session=True)
        logger.info("started the embedding worker (pid %d) in %s", process.pid, self.directory)
        return process


def _tail(directory: Path, lines: int = 15) -> str:
    with contextlib.suppress(OSError):
        return "\n".join((directory / "worker.log").read_text(errors="replace").splitlines()[-lines:])
    return ""


def make_embedder(options: EmbedOptions | None = None, *, worker: bool | None = None,
                  **worker_settings: Any) -> LocalEmbedder | WorkerEmbedder:
    """A :class:`WorkerEmbedder` or an in-process :class:`LocalEmbedder`, by configuration.

    Parameters
    ----------
    options : EmbedOptions, optional
    worker : bool, optional
        Default: True when ``$REVDISTILL_EMBED_WORKER`` is ``1``, ``true`` or ``yes``.
    **worker_settings
        Keywords of :class:`WorkerEmbedder` (``runtime_dir``, ``idle_timeout`` ...).
    """
    if worker is None:
        worker = os.environ.get(USE_WORKER_ENV, "").strip().lower() in ("1", "true", "yes")
    if worker:
        return WorkerEmbedder(options, **worker_settings)
    if worker_settings:
        raise ValueError(f"worker settings {sorted(worker_settings)} need worker=True")
    return LocalEmbedder(options)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m revdistill.esm.worker serve|status|stop [--dir D] ...``."""
    parser = argparse.ArgumentParser(prog="python -m revdistill.esm.worker", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=("serve", "status", "stop"))
    parser.add_argument("--dir", default=None, help=f"runtime folder (default ${WORKER_ENV} or the cache)")
    parser.add_argument("--idle-timeout", type=float, default=600.0, help="free the models after this idle time (s)")
    parser.add_argument("--exit-after", type=float, default=None, help="exit after this idle time (s)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads of the worker")
    args = parser.parse_args(argv)
    if args.command == "serve":
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s")
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        from revdistill.esm.worker_server import serve  # noqa: PLC0415

        return serve(args.dir, idle_timeout=args.idle_timeout, exit_after=args.exit_after)
    client = WorkerEmbedder(runtime_dir=args.dir)
    if args.command == "status":
        print(json.dumps(client.status(), indent=1))
        return 0
    print("stopped" if client.shutdown() else "no worker was running")
    return 0


if __name__ == "__main__":
    sys.exit(main())
