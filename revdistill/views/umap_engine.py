"""The UMAP engine: importing umap-learn, and compiling its numba code ahead of the first real fit.

``umap-learn``'s first import compiles numba code (about 25 s) and each fresh process pays about a minute
more on its first fits. :func:`start_warm_up` runs :func:`warm_up_umap` on a tiny input in a background
thread (lowered priority) once per process, so that the first real UMAP is fast; :func:`umap_ready` and
:func:`on_warm_up_done` tell the dashboard when it is. :mod:`revdistill.views.projection` re-exports them.
"""
from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np

from revdistill.io.files import file_lock

logger = logging.getLogger(__name__)

__all__ = ["warm_up_umap", "on_warm_up_done", "start_warm_up", "umap_ready"]

_WARM_UP_DONE = threading.Event()
_WARM_UP_LOCK = threading.Lock()
_WARM_UP_THREAD: threading.Thread | None = None


def _import_umap():
    """Import umap-learn lazily (its first import compiles numba code)."""
    try:
        import umap  # noqa: PLC0415
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "UMAP views need umap-learn: pip install 'revdistill[dashboard]' (or umap-learn)"
        ) from error
    return umap


def warm_up_umap(n_samples: int = 300, n_features: int = 16) -> float:
    """Compile UMAP's numba code paths on a tiny random input.

    Runs both the exact neighbour search (used below 4,096 points) and the approximate one
    (pynndescent, used above), then the layout optimisation, and ``transform`` after an approximate
    fit (how a subsampled fit places the other points), so the first real fit is fast.

    Parameters
    ----------
    n_samples, n_features : int
        Size of the random warm-up input.

    Nothing global is changed: no warning filters, no switches on umap-learn's or numba's internals
    (each kernel compiles its own code, in the background, before visitors need it).

    Returns
    -------
    float
        Seconds spent.
    """
    start = time.perf_counter()
    umap = _import_umap()
    rng = np.random.default_rng(0)
    data = rng.standard_normal((n_samples, n_features)).astype(np.float32)
    for force_approximation in (True, False):
        reducer = umap.UMAP(
            n_neighbors=15, random_state=0, n_jobs=1, low_memory=True, n_epochs=20,
            force_approximation_algorithm=force_approximation,
        ).fit(data)
        if force_approximation:  # the path a subsampled fit takes to place the other points
            reducer.transform(data[:50])
    _WARM_UP_DONE.set()
    seconds = time.perf_counter() - start
    logger.info("UMAP warm-up took %.1f s", seconds)
    return seconds


_WARM_UP_CALLBACKS: list = []


def on_warm_up_done(callback) -> None:
    """Call ``callback()`` once UMAP is warm: now if it already is, else from the warm-up thread."""
    with _WARM_UP_LOCK:
        if not _WARM_UP_DONE.is_set():
            _WARM_UP_CALLBACKS.append(callback)
            return
    callback()


def _run_warm_up_callbacks() -> None:
    with _WARM_UP_LOCK:
        callbacks = list(_WARM_UP_CALLBACKS)
        _WARM_UP_CALLBACKS.clear()
    for callback in callbacks:
        try:
            callback()
        except Exception:  # noqa: BLE001 - a listener's failure must not stop the others
            logger.exception("UMAP warm-up callback failed")


def _warm_up_in_background(nice: int) -> None:
    """Thread body: lower this thread's CPU priority, then warm up; log failures."""
    if nice and hasattr(os, "setpriority"):
        try:  # On Linux, priority is per thread: only the warm-up yields to interactive work.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), nice)
        except OSError:  # pragma: no cover - platform dependent
            pass
    try:
        from revdistill.io.paths import cache_dir  # noqa: PLC0415

        with file_lock(cache_dir("umap") / ".warm-up.lock"):
            warm_up_umap()
        _run_warm_up_callbacks()
    except Exception:  # noqa: BLE001 - a failed warm-up must not kill the kernel; UMAP reports later
        logger.exception("UMAP warm-up failed")


def start_warm_up(nice: int = 19) -> threading.Thread:
    """Start :func:`warm_up_umap` in a daemon thread (once per process).

    Parameters
    ----------
    nice : int, default=19
        Niceness added to the warm-up thread on Linux, so interactive work keeps the CPU.

    Returns
    -------
    threading.Thread
        The warm-up thread (the same one on repeated calls).
    """
    global _WARM_UP_THREAD
    with _WARM_UP_LOCK:
        if _WARM_UP_THREAD is None:
            _WARM_UP_THREAD = threading.Thread(
                target=_warm_up_in_background, args=(nice,), name="revdistill-umap-warm-up", daemon=True
            )
            _WARM_UP_THREAD.start()
        return _WARM_UP_THREAD


def umap_ready() -> bool:
    """Whether :func:`warm_up_umap` has finished in this process."""
    return _WARM_UP_DONE.is_set()
