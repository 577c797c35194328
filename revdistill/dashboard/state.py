"""Shared dashboard state: the current analysis, its listeners, errors and background tasks.

No widgets here: panels subscribe to :class:`DashboardState` and render what it holds; the app's
error box subscribes to its errors. Every callback a panel registers is wrapped by
:meth:`DashboardState.guard`, so an exception is logged (with traceback, for the operator) and shown
in the app (type and message only, for the visitor) instead of being lost.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
ProgressCallback = Callable[[float, str], None]

DEFAULT_MAX_UPLOAD_BYTES = 20_000_000


@dataclass
class DashboardOptions:
    """Where the dashboard finds and keeps things.

    Attributes
    ----------
    cache_dir : Path or None
        Cache root (embedding stores, reference ladders, corpora, UMAP coordinates); default
        :func:`revdistill.io.paths.cache_root` (``$REVDISTILL_CACHE`` or ``~/.cache/revdistill``).
    weights_dir : Path or None
        Folder holding ESM-2 checkpoints; default the torch-hub cache.
    proteingym_dir : Path or None
        Local ProteinGym folder (``reference_files/``, ``assays/``).
    max_upload_bytes : int
        Size limit for uploaded FASTA / DMS CSV files.
    background : bool or None
        Run expensive work in a thread pool (True), inline (False), or decide by whether an event
        loop is running (None: inside a kernel yes, in a plain script no).
    cpu_threads : int or None
        torch threads of an embedding job computed in this process (``service=False``; 1 by default;
        None leaves torch's setting alone).
    service : bool or None
        Compute in the server's one compute service (True), in this process (False), or decide (None:
        ``$REVDISTILL_SERVICE`` when set, else the service inside a kernel and this process in a plain
        script). The service is started by the first kernel that needs it.
    """

    cache_dir: Path | None = None
    weights_dir: Path | None = None
    proteingym_dir: Path | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    background: bool | None = None
    cpu_threads: int | None = 1
    service: bool | None = None

    @classmethod
    def from_env(cls) -> "DashboardOptions":
        """Options from ``REVDISTILL_CACHE``, ``REVDISTILL_PROTEINGYM_DIR`` and ``REVDISTILL_MAX_UPLOAD_MB``
        (each optional; ``REVDISTILL_WEIGHTS`` is read where weights are, by :mod:`revdistill.esm.models.weights`)."""
        def path(name: str) -> Path | None:
            value = os.environ.get(name)
            return Path(value).expanduser() if value else None

        limit = os.environ.get("REVDISTILL_MAX_UPLOAD_MB")
        try:
            max_bytes = int(float(limit) * 1e6) if limit else DEFAULT_MAX_UPLOAD_BYTES
        except ValueError:
            raise ValueError(f"REVDISTILL_MAX_UPLOAD_MB={limit!r} must be a number of megabytes") from None
        return cls(cache_dir=path("REVDISTILL_CACHE"), proteingym_dir=path("REVDISTILL_PROTEINGYM_DIR"),
                   max_upload_bytes=max_bytes)


@dataclass
class ErrorRecord:
    """One error shown to the visitor: where it happened, its one-line message, and whether it was expected.

    Expected conditions (:func:`revdistill.errors.describe_error` classifies them: offline, unknown id, missing
    weights, bad upload …) are shown as plain messages saying what to do; only bugs point to the server log.
    """

    where: str
    message: str
    expected: bool = True


class DashboardState:
    """Shared state of one dashboard session.

    Parameters
    ----------
    options : DashboardOptions, optional
        Paths and limits.

    Attributes
    ----------
    analysis : Analysis or None
        The computed analysis (experiment results, ladders, views), or None before Compute.
    protocol : Protocol
        The probe protocol every computation of this session uses (shown in captions).
    errors : list of ErrorRecord
        Errors reported so far, newest last.
    """

    def __init__(self, options: DashboardOptions | None = None) -> None:
        from revdistill.experiment.protocol import Protocol  # noqa: PLC0415

        self.options = options or DashboardOptions()
        self.protocol = Protocol()
        self.analysis: Any = None
        self.errors: list[ErrorRecord] = []
        self._analysis_listeners: list[Callable[[Any], None]] = []
        self._compute: Any = None
        self.visitor = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._error_listeners: list[Callable[[ErrorRecord], None]] = []
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    # -- listeners -------------------------------------------------------------------------------
    def on_analysis(self, callback: Callable[[Any], None]) -> None:
        """Call ``callback(analysis)`` whenever a new analysis is set (guarded)."""
        self._analysis_listeners.append(self.guard(callback, where=_name_of(callback)))

    def on_error(self, callback: Callable[[ErrorRecord], None]) -> None:
        """Call ``callback(record)`` for each reported error."""
        self._error_listeners.append(callback)

    def set_analysis(self, analysis: Any) -> None:
        """Store ``analysis`` and notify every panel."""
        self.analysis = analysis
        for listener in list(self._analysis_listeners):
            listener(analysis)

    @property
    def compute(self) -> Any:
        """The session's :class:`~revdistill.service.results.DashboardCompute` (chosen on first use).

        With the service (``make dashboard``, Voila, JupyterLab) the kernel sends its work to the server's
        one compute service, which owns the models and compiles UMAP once for every visitor; otherwise the
        work runs in this process.
        """
        from revdistill.service.client import ServiceClient, ServiceCompute, use_service_from_env  # noqa: PLC0415
        from revdistill.service.results import DashboardCompute  # noqa: PLC0415

        with self._lock:
            if self._compute is None:
                service = self.options.service
                if service is None:
                    service = use_service_from_env()
                if service is None:
                    service = self.event_loop() is not None
                if service:
                    backend: Any = ServiceCompute(ServiceClient(visitor=self.visitor))
                else:
                    from revdistill.service.client import LocalCompute  # noqa: PLC0415

                    backend = LocalCompute(threads=self.options.cpu_threads)
                self._compute = DashboardCompute(backend, cache_dir=self.options.cache_dir,
                                                 weights_dir=self.options.weights_dir)
            return self._compute

    # -- errors ----------------------------------------------------------------------------------
    def report_error(self, where: str, error: BaseException) -> ErrorRecord:
        """Log ``error`` with its traceback and show its message in the app.

        Parameters
        ----------
        where : str
            Which action failed (shown to the visitor).
        error : BaseException
            The exception.

        Returns
        -------
        ErrorRecord
        """
        from revdistill.errors import describe_error  # noqa: PLC0415

        logger.error("dashboard callback %s failed", where, exc_info=error)
        expected = describe_error(error)
        message = expected if expected is not None else (
            f"internal error: {type(error).__name__}: {error}")  # the error box says where the details are
        record = ErrorRecord(where=where, message=message, expected=expected is not None)
        self.errors.append(record)
        for listener in list(self._error_listeners):
            try:
                listener(record)
            except Exception:  # noqa: BLE001 - never let the error display raise
                logger.exception("error listener failed")
        return record

    def guard(self, callback: Callable[..., Any], where: str | None = None) -> Callable[..., Any]:
        """Wrap a widget callback so that exceptions are reported, not raised.

        Parameters
        ----------
        callback : callable
            The handler (``on_click``, ``observe`` ...).
        where : str, optional
            Label for error messages; default the callback's name.

        Returns
        -------
        callable
            The wrapped handler; it returns None when the callback raised.
        """
        label = where or _name_of(callback)

        @functools.wraps(callback)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return callback(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - shown in the app and logged
                self.report_error(label, error)
                return None

        return guarded

    # -- background work -------------------------------------------------------------------------
    def run_task(
        self,
        where: str,
        work: Callable[[], T],
        done: Callable[[T], None],
        *,
        finally_: Callable[[], None] | None = None,
    ) -> concurrent.futures.Future | None:
        """Run ``work()`` off the kernel's event loop, then ``done(result)`` on it.

        In a kernel (a running asyncio loop and ``options.background`` not False) the work runs in a
        one-thread pool so widgets stay responsive, and ``done`` / ``finally_`` run back on the
        loop's thread. Otherwise everything runs inline (scripts, in-process tests).

        Parameters
        ----------
        where : str
            Label for error messages.
        work : callable
            The expensive part; no widget updates inside (use a progress callback that posts).
        done : callable
            Receives the result; updates widgets.
        finally_ : callable, optional
            Always called at the end (re-enable buttons ...).

        Returns
        -------
        concurrent.futures.Future or None
            The pending work, or None when it ran inline.
        """
        loop = self.event_loop()
        if loop is None:
            try:
                result = work()
            except Exception as error:  # noqa: BLE001
                self.report_error(where, error)
            else:
                self.guard(done, where)(result)
            finally:
                if finally_ is not None:
                    self.guard(finally_, where)()
            return None
        future = self._pool().submit(work)

        def deliver(finished: concurrent.futures.Future) -> None:
            try:
                error = finished.exception()
                if error is not None:
                    self.report_error(where, error)
                else:
                    self.guard(done, where)(finished.result())
            finally:
                if finally_ is not None:
                    self.guard(finally_, where)()

        future.add_done_callback(lambda finished: loop.call_soon_threadsafe(deliver, finished))
        return future

    def call_soon(self, callback: Callable[..., Any], *args: Any) -> None:
        """Call ``callback(*args)`` on the kernel's loop thread (from any thread); inline otherwise."""
        loop = getattr(self, "_loop", None)
        if loop is not None and loop.is_running() and threading.current_thread() is not threading.main_thread():
            loop.call_soon_threadsafe(self.guard(callback), *args)
        else:
            self.guard(callback)(*args)

    def event_loop(self) -> asyncio.AbstractEventLoop | None:
        """The running asyncio loop to hand results back to, or None to run inline."""
        if self.options.background is False:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            if self.options.background:
                raise RuntimeError(
                    "options.background=True needs a running asyncio event loop (a Jupyter kernel)"
                ) from None
            return None
        self._loop = loop
        return loop

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="revdistill-dashboard"
                )
            return self._executor


def _name_of(callback: Callable[..., Any]) -> str:
    """Readable name of a callback for error messages."""
    return getattr(callback, "__qualname__", None) or getattr(callback, "__name__", None) or repr(callback)
