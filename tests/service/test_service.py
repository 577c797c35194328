"""The compute service: fair queue, shared identical jobs, cancellation, restart after a crash."""
from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from revdistill.esm.runner import EmbedOptions
from revdistill.esm.store import EmbeddingStore
from revdistill.service.client import ServiceClient, WorkerEmbedder
from revdistill.service.protocol import (PROTOCOL, Cancelled, ServiceError, decode_frame, encode_frame, receive,
                                         send)
from revdistill.service.scheduler import Scheduler

from conftest import random_records, wait_until

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = ("tiny-32", "tiny-48")


@pytest.fixture
def runtime_dir():
    """A short folder (Unix socket paths are limited to ~100 characters); the service is stopped afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="rds-"))
    yield directory
    try:
        ServiceClient(directory).shutdown()
    finally:
        time.sleep(0.2)
        shutil.rmtree(directory, ignore_errors=True)


# -- the scheduler ------------------------------------------------------------------------------------
class Work:
    """A job runner whose jobs loop over progress points until the test lets them finish."""

    def __init__(self) -> None:
        self.release = {}
        self.order: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, job):
        with self.lock:
            self.order.append(job.key)
            gate = self.release.setdefault(job.key, threading.Event())
        step = 0
        while not gate.wait(0.01):
            job.progress(min(step / 100, 0.99), f"step {step}")  # raises Cancelled once nobody waits
            step += 1
        return {"key": job.key}, {"values": np.arange(3)}

    def finish(self, key: str) -> None:
        with self.lock:
            self.release.setdefault(key, threading.Event()).set()


@pytest.fixture
def scheduled():
    """``scheduled(workers)`` -> ``(work, scheduler)``; every scheduler made is stopped after the test."""
    made = []

    def make(workers: int):
        work = Work()
        made.append(Scheduler(work, workers=workers))
        return work, made[-1]

    yield make
    for scheduler in made:
        scheduler.stop()


def test_visitors_take_turns_so_a_small_request_does_not_wait_behind_a_queue(scheduled):
    work, scheduler = scheduled(1)
    jobs = [scheduler.submit("A", f"a{index}", "embed", {}, {}) for index in range(3)]
    assert wait_until(lambda: work.order == ["a0"])
    small = scheduler.submit("B", "b0", "projection", {}, {})
    for key in ("a0", "b0", "a1", "a2"):
        work.finish(key)
    assert all(job.done.wait(10) for job in [*jobs, small])
    assert work.order == ["a0", "b0", "a1", "a2"]  # round-robin: B's job before A's queued ones


def test_a_small_request_finishes_while_a_long_job_runs(scheduled):
    work, scheduler = scheduled(2)
    long = scheduler.submit("A", "long", "projection", {}, {})
    assert wait_until(lambda: work.order == ["long"])
    small = scheduler.submit("B", "small", "projection", {}, {})
    assert wait_until(lambda: "small" in work.order)
    work.finish("small")
    assert small.done.wait(10) and small.state == "done" and not long.done.is_set()
    work.finish("long")
    assert long.done.wait(10) and long.result[0] == {"key": "long"}


def test_identical_requests_share_one_job_and_a_job_stops_when_nobody_waits(scheduled):
    work, scheduler = scheduled(1)
    first = scheduler.submit("A", "same", "analysis", {}, {})
    second = scheduler.submit("B", "same", "analysis", {}, {})
    assert first is second and first.subscribers == 2
    queued = scheduler.submit("C", "other", "analysis", {}, {})
    scheduler.leave(queued)                     # a visitor who leaves: the queued job is dropped
    assert queued.done.is_set() and queued.state == "cancelled"
    assert wait_until(lambda: work.order == ["same"])
    scheduler.leave(first)
    assert not first.cancel.is_set()            # B still waits for it
    scheduler.leave(second)
    assert first.done.wait(5) and first.state == "cancelled" and isinstance(first.error, Cancelled)
    assert work.order == ["same"] and scheduler.status()["jobs"]["dropped"] == 1


# -- the wire format ----------------------------------------------------------------------------------
def test_messages_and_frames_round_trip_without_pickle():
    import pandas as pd
    from multiprocessing import Pipe

    frame = pd.DataFrame({"id": ["a", "b", None], "rho": [0.1, np.nan, -2.0], "n": np.array([1, 2, 3], np.int32),
                          "ok": [True, False, True]})
    spec, arrays = encode_frame(frame, "t")
    left, right = Pipe()
    send(left, {"spec": spec}, {**arrays, "empty": np.zeros((0, 2))})
    header, received = receive(right)
    back = decode_frame(header["spec"], received)
    pd.testing.assert_frame_equal(back, frame, check_dtype=False)
    assert back["n"].dtype == np.int32 and received["empty"].shape == (0, 2)
    with pytest.raises(TypeError, match="only bool, integer and float arrays travel"):
        send(left, {}, {"objects": np.array([object()])})


# -- the service --------------------------------------------------------------------------------------
def test_two_visitors_asking_the_same_embedding_share_one_job(runtime_dir, tmp_path):
    records = random_records(24, 100, 200, seed=11)
    store = EmbeddingStore(tmp_path / "shared.h5")
    embedders = [WorkerEmbedder(EmbedOptions(flush_every=4), runtime_dir=runtime_dir, visitor=name, threads=1)
                 for name in ("A", "B")]
    embedders[0].status()  # the service is up before both ask
    results, barrier = {}, threading.Barrier(2)

    def visit(index: int) -> None:
        barrier.wait()
        results[index] = embedders[index].embed(store, records, MODELS)

    threads = [threading.Thread(target=visit, args=(index,)) for index in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    status = embedders[0].status()
    assert results == {0: 24, 1: 24}                       # both pages get the result of the one job
    assert status["computed"]["embed"] == 1 and status["jobs"]["shared"] == 1
    assert len(store) == 24


def test_a_cancelled_job_stops_soon_and_leaves_nothing_half_written(runtime_dir, tmp_path):
    import hashlib

    client = ServiceClient(runtime_dir, visitor="A", threads=1)
    path = tmp_path / "cancelled.h5"
    first = random_records(8, 50, 80, seed=14, prefix="first")
    WorkerEmbedder(runtime_dir=runtime_dir, threads=1).embed(EmbeddingStore(path), first, MODELS)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    records = first + random_records(400, 200, 400, seed=12)
    cancel, seen = threading.Event(), []

    def progress(fraction: float, message: str) -> None:
        seen.append(fraction)
        cancel.set()                                       # cancel at the first progress report

    header = {"options": EmbedOptions(flush_every=8).to_dict(), "store": str(path), "records": records,
              "models": list(MODELS), "per_residue": False}
    start = time.monotonic()
    with pytest.raises(Cancelled, match="cancelled"):
        client.request("embed", header, progress=progress, cancel=cancel)
    assert time.monotonic() - start < 30 and seen
    assert wait_until(lambda: client.status()["running"] == 0, 30)   # the job itself stopped
    status = client.status()
    assert status["jobs"].get("cancelled") == 1 and status["jobs"].get("done") == 1  # (the first embedding)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest    # the store is as it was
    assert EmbeddingStore(path).ids() == [record_id for record_id, _ in first]
    added = WorkerEmbedder(EmbedOptions(flush_every=8), runtime_dir=runtime_dir, threads=1).embed(
        EmbeddingStore(path), records, MODELS)                # a rerun keeps the whole parts committed so far
    assert 0 < added <= 400 and len(EmbeddingStore(path)) == 408


def test_a_killed_service_gives_one_clear_error_and_the_next_request_restarts_it(runtime_dir, tmp_path):
    client = ServiceClient(runtime_dir, visitor="A", threads=1)
    first = client.status()["pid"]
    records = random_records(60, 100, 200, seed=13)
    header = {"options": EmbedOptions(flush_every=4).to_dict(), "store": str(tmp_path / "s.h5"),
              "records": records, "models": list(MODELS), "per_residue": False}

    def kill(fraction: float, message: str) -> None:
        if fraction > 0:                                   # after the first committed part
            os.kill(first, signal.SIGKILL)

    with pytest.raises(ServiceError, match=r"the compute service went away during the request .*the next "
                                           r"request starts it again"):
        client.request("embed", header, progress=kill)
    reply, _ = client.request("embed", header)             # a new service; committed parts are kept
    assert 0 < reply["added"] < 60 and client.status()["pid"] != first
    assert len(EmbeddingStore(tmp_path / "s.h5")) == 60


@pytest.mark.slow
def test_start_replaces_a_service_running_another_checkouts_code(tmp_path):
    """`python -m revdistill.service start` finds a service of another checkout (an older clone, another version)
    serving the same folder: it says so, stops it and starts one of this code; `status` then names this package."""
    import subprocess
    import sys

    from revdistill.service.protocol import package_root

    other = tmp_path / "other-checkout"
    shutil.copytree(package_root(), other / "revdistill", ignore=shutil.ignore_patterns("__pycache__"))
    directory = tmp_path / "svc"
    env = {**os.environ, "PYTHONPATH": str(other)}
    old = subprocess.Popen([sys.executable, "-m", "revdistill.service", "serve", "--dir", str(directory)], env=env,
                           cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    client = ServiceClient(directory)
    try:
        deadline = time.monotonic() + 120
        while not (directory / "service.sock").exists():
            assert time.monotonic() < deadline and old.poll() is None, "the other checkout's service did not start"
            time.sleep(0.2)
        assert client.status()["code"] == str(other / "revdistill")
        started = subprocess.run([sys.executable, "-m", "revdistill.service", "start", "--dir", str(directory)],
                                 capture_output=True, text=True, timeout=300)
        assert started.returncode == 0, started.stderr
        assert f"it runs revdistill from {other / 'revdistill'}, this is {package_root()}" in started.stderr
        assert old.wait(timeout=60) == 0  # the stale service stopped
        status = client.status()
        assert status["code"] == package_root() and status["pid"] != old.pid
    finally:
        client.shutdown()
        if old.poll() is None:
            old.kill()


def test_shutdown_returns_once_the_service_has_ended(runtime_dir):
    """Until its process ends, a stopping service still accepts a connection and then drops it: `shutdown()` waits,
    so the request that follows starts a new service (`python -m revdistill.service start` replacing a stale
    service got a broken pipe instead)."""
    client = ServiceClient(runtime_dir)
    first = client.status()["pid"]
    assert client.shutdown()
    assert _exited(first), f"service {first} still runs after shutdown() returned"
    assert client.status()["pid"] != first


def test_a_service_whose_folder_was_removed_exits(tmp_path):
    """Removing a service's runtime folder (a cleaned cache, a test's temporary folder) leaves no service behind,
    also when it comes right after a shutdown request (whose wake-up connection then finds no socket): nothing
    could reach it again, so it exits within a few seconds instead of running forever."""
    for stop_first in (False, True):  # removed while serving; removed right after a shutdown request
        directory = tmp_path / f"svc-{stop_first}"
        client = ServiceClient(directory)
        pid = client.status()["pid"]
        if stop_first:  # the request alone: ServiceClient.shutdown() would wait for the service to end
            with client._connect() as connection:
                send(connection, {"op": "shutdown", "protocol": PROTOCOL})
                receive(connection)
        shutil.rmtree(directory)
        deadline = time.monotonic() + 30
        while not _exited(pid):
            assert time.monotonic() < deadline, f"service {pid} still runs 30 s after its folder was removed"
            time.sleep(0.2)


def _exited(pid: int) -> bool:
    """Whether process ``pid`` has exited (reaped here when it is this process's child, as a service started by a
    client in this process is)."""
    try:
        return os.waitpid(pid, os.WNOHANG)[0] == pid
    except ChildProcessError:  # not our child
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False
