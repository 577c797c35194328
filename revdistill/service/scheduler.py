"""Fair job queue of the compute service: round-robin by visitor, shared identical jobs, cancellation.

Every request becomes a :class:`Job` keyed by :func:`~.protocol.request_key`. A request whose key matches a
queued or running job subscribes to it instead (one computation, every page gets the result). Queued jobs
wait in one queue per visitor; the workers (a small thread pool) take the next job of the visitor served least
recently, so a classmate's small request does not wait behind a long one, and a free worker can run it while
another worker is busy. A job whose last subscriber cancels or leaves is dropped from its queue, or, when it
runs, stops at its next progress point (:meth:`Job.progress` raises :class:`~.protocol.Cancelled`).
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from revdistill.service.protocol import Cancelled

logger = logging.getLogger(__name__)

__all__ = ["Job", "Scheduler"]

Runner = Callable[["Job"], tuple[dict[str, Any], dict[str, np.ndarray]]]


class Job:
    """One computation and the visitors waiting for it.

    Attributes
    ----------
    key, op : str
    visitor : str
        Who asked first (whose queue it waits in).
    header, arrays
        The request.
    subscribers : int
        Visitors still waiting for the result.
    done : threading.Event
        Set when ``result`` or ``error`` is.
    state : str
        ``"queued"``, ``"running"``, ``"done"``, ``"failed"`` or ``"cancelled"``.
    """

    def __init__(self, key: str, op: str, visitor: str, header: dict[str, Any], arrays: dict[str, np.ndarray]):
        self.key, self.op, self.visitor, self.header, self.arrays = key, op, visitor, header, arrays
        self.subscribers = 1
        self.cancel = threading.Event()
        self.done = threading.Event()
        self.state = "queued"
        self.result: tuple[dict[str, Any], dict[str, np.ndarray]] | None = None
        self.error: BaseException | None = None
        self.status: tuple[float, str] = (0.0, "queued")
        self.updates = 0  # counts progress updates (subscribers send only new ones)

    def progress(self, fraction: float, message: str = "") -> None:
        """Record progress; raise :class:`Cancelled` when nobody waits for the job any more."""
        if self.cancel.is_set():
            raise Cancelled(f"{self.op} job {self.key[:8]} was cancelled")
        self.status = (float(fraction), str(message))
        self.updates += 1


class Scheduler:
    """Queue of :class:`Job`, run by ``workers`` threads calling ``run(job)``.

    Parameters
    ----------
    run : callable
        ``run(job) -> (header, arrays)``; calls ``job.progress`` at its progress points.
    workers : int, default=2
        Jobs that run at once.
    """

    def __init__(self, run: Runner, workers: int = 2) -> None:
        if int(workers) < 1:
            raise ValueError(f"workers={workers!r} must be a positive integer")
        self.run = run
        self.lock = threading.Condition()
        self.queues: collections.OrderedDict[str, collections.deque[Job]] = collections.OrderedDict()
        self.active: dict[str, Job] = {}  # key -> queued or running job
        self.running = 0
        self.served: dict[str, int] = {}  # visitor -> the turn they were last served
        self.turn = 0
        self.counts = collections.Counter()  # started, shared, done, failed, cancelled, dropped
        self.stopping = False
        self.last_active = time.monotonic()
        self.threads = [threading.Thread(target=self._work, name=f"revdistill-service-{index}", daemon=True)
                        for index in range(int(workers))]
        for thread in self.threads:
            thread.start()

    def submit(self, visitor: str, key: str, op: str, header: dict[str, Any],
               arrays: dict[str, np.ndarray]) -> Job:
        """Queue a job, or subscribe to the identical one already queued or running."""
        with self.lock:
            job = self.active.get(key)
            if job is not None and not job.cancel.is_set():
                job.subscribers += 1
                self.counts["shared"] += 1
                self.counts[f"shared {op}"] += 1
                return job
            job = Job(key, op, visitor, header, arrays)
            self.active[key] = job
            self.queues.setdefault(visitor, collections.deque()).append(job)
            self.lock.notify()
            return job

    def leave(self, job: Job, reason: str = "cancelled") -> None:
        """One subscriber no longer waits (cancelled, or its connection closed)."""
        with self.lock:
            job.subscribers -= 1
            if job.subscribers > 0 or job.done.is_set():
                return
            job.cancel.set()
            if job.state == "queued":
                queue = self.queues.get(job.visitor)
                if queue is not None and job in queue:
                    queue.remove(job)
                self._finish(job, "cancelled", error=Cancelled(f"{job.op} job {job.key[:8]} was {reason}"))
                self.counts["dropped"] += 1
            logger.info("%s job %s %s (%s)", job.op, job.key[:8], reason, job.state)

    def status(self) -> dict[str, Any]:
        with self.lock:
            return {"queued": sum(len(queue) for queue in self.queues.values()), "running": self.running,
                    "jobs": dict(self.counts), "workers": len(self.threads),
                    "idle_s": 0.0 if self.running or self.active else time.monotonic() - self.last_active}

    def stop(self) -> None:
        with self.lock:
            self.stopping = True
            self.lock.notify_all()

    # -------------------------------------------------------------------- internals
    def _next(self) -> Job | None:
        """The first job of the visitor served least recently (a newcomer first; ties: who came first)."""
        while not self.stopping:
            waiting = [visitor for visitor, queue in self.queues.items() if queue]
            if waiting:
                visitor = min(waiting, key=lambda name: self.served.get(name, -1))
                self.turn += 1
                self.served[visitor] = self.turn
                queue = self.queues[visitor]
                job = queue.popleft()
                if not queue:
                    del self.queues[visitor]
                return job
            self.lock.wait()
        return None

    def _work(self) -> None:
        while True:
            with self.lock:
                job = self._next()
                if job is None:
                    return
                job.state = "running"
                self.running += 1
                self.counts["started"] += 1
            try:
                result = self.run(job)
            except Cancelled as error:
                self._end(job, "cancelled", error=error)
            except Exception as error:  # noqa: BLE001 - every error goes back to the visitors
                logger.exception("%s job %s failed", job.op, job.key[:8])
                self._end(job, "failed", error=error)
            else:
                self._end(job, "done", result=result)

    def _end(self, job: Job, state: str, **outcome: Any) -> None:
        with self.lock:
            self.running -= 1
            self._finish(job, state, **outcome)

    def _finish(self, job: Job, state: str, result: Any = None, error: BaseException | None = None) -> None:
        """Record the outcome (the caller holds the lock)."""
        job.state, job.result, job.error = state, result, error
        if self.active.get(job.key) is job:
            del self.active[job.key]
        self.counts[state] += 1
        self.last_active = time.monotonic()
        job.done.set()
