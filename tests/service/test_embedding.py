"""Embedding through the compute service on the tiny family.

One model load per server, shared by concurrent kernels.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from revdistill.esm.runner import EmbedOptions, LocalEmbedder
from revdistill.esm.store import EmbeddingStore
from revdistill.service.client import USE_SERVICE_ENV, WorkerEmbedder, make_embedder
from revdistill.service.protocol import ServiceError

from conftest import random_records, wait_until

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MODELS = ("tiny-32", "tiny-48")

# A "kernel": its own process, records from a JSON file, embeds through the worker, reports what it saw.
KERNEL = textwrap.dedent("""
    import json, os, sys, time
    from revdistill.esm.runner import EmbedOptions
    from revdistill.esm.store import EmbeddingStore
    from revdistill.service.client import WorkerEmbedder
    directory, store_path, records_path, ready, everyone = sys.argv[1:6]
    records = [tuple(record) for record in json.load(open(records_path))]
    progress = []
    open(ready, "w").close()                      # a barrier: both kernels send their jobs at once
    while len([name for name in everyone.split(",") if os.path.exists(name)]) < 2:
        time.sleep(0.01)
    embedder = WorkerEmbedder(EmbedOptions(flush_every=4), runtime_dir=directory, threads=1)
    added = embedder.embed(EmbeddingStore(store_path), records, "tiny-32,tiny-48",
                           on_progress=lambda done, total: progress.append([done, total]))
    print(json.dumps({"added": added, "progress": progress, "fair_esm_imported": "esm" in sys.modules}))
""")


@pytest.fixture
def runtime_dir():
    """A short folder (Unix socket paths are limited to ~100 characters); the worker is stopped afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="rdw-"))
    yield directory
    try:
        WorkerEmbedder(runtime_dir=directory).shutdown()
    finally:
        time.sleep(0.2)
        shutil.rmtree(directory, ignore_errors=True)


def pooled_by_id(store: EmbeddingStore, model: str) -> dict[str, np.ndarray]:
    ids, values = store.pooled(model)
    return dict(zip(ids, values))


def test_two_kernels_at_once_share_one_model_load_and_match_local(runtime_dir, tmp_path):
    batches = [random_records(12, 200, 400, seed=seed, prefix=f"k{seed}-") for seed in (1, 2)]
    store_path = tmp_path / "shared.h5"
    ready = [str(tmp_path / f"ready{index}") for index in range(2)]
    kernels = []
    for index, records in enumerate(batches):
        path = tmp_path / f"records{index}.json"
        path.write_text(json.dumps(records))
        command = [sys.executable, "-c", KERNEL, str(runtime_dir), str(store_path), str(path), ready[index],
                   ",".join(ready)]
        kernels.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    reports = []
    for kernel in kernels:
        out, err = kernel.communicate(timeout=120)
        assert kernel.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert [report["added"] for report in reports] == [12, 12]
    assert all(report["progress"][-1] == [12, 12] for report in reports)
    assert not any(report["fair_esm_imported"] for report in reports)   # kernels never load ESM-2
    status = WorkerEmbedder(runtime_dir=runtime_dir).status()
    assert status["loads"] == {"tiny-32": 1, "tiny-48": 1} and status["computed"]["embed"] == 2
    assert status["peak_connections"] >= 2                    # both jobs were in the service at once
    assert status["loaded"] == {"tiny-32": 1, "tiny-48": 1}

    local = EmbeddingStore(tmp_path / "local.h5")
    LocalEmbedder(EmbedOptions()).embed(local, batches[0] + batches[1], MODELS)
    shared = EmbeddingStore(store_path)
    assert sorted(shared.ids()) == sorted(local.ids())
    for model in MODELS:
        expected, got = pooled_by_id(local, model), pooled_by_id(shared, model)
        for record_id, vector in expected.items():
            np.testing.assert_allclose(got[record_id], vector, rtol=1e-5, atol=1e-6)
    assert shared.moments().count == local.moments().count == sum(len(s) for b in batches for _, s in b)


def test_idle_timeout_frees_the_models_and_the_next_job_reloads_them(runtime_dir, tmp_path):
    embedder = WorkerEmbedder(runtime_dir=runtime_dir, idle_timeout=0.5, threads=1)
    store = EmbeddingStore(tmp_path / "s.h5")
    assert embedder.embed(store, random_records(3, seed=3), MODELS) == 3
    assert wait_until(lambda: embedder.status()["loaded"] == {}, every=0.1)     # the modules were really freed
    assert embedder.embed(store, random_records(3, seed=4, prefix="b"), MODELS) == 3
    assert embedder.status()["loads"] == {"tiny-32": 2, "tiny-48": 2}
    assert embedder.embed(store, random_records(3, seed=4, prefix="b"), MODELS) == 0   # all stored: no load
    assert len(store) == 6


def test_a_crashed_worker_is_restarted_and_the_job_resumes(runtime_dir, tmp_path):
    embedder = WorkerEmbedder(EmbedOptions(flush_every=2), runtime_dir=runtime_dir, threads=1)
    store = EmbeddingStore(tmp_path / "s.h5")
    records = random_records(10, 5, 60, seed=5)
    first_pid = embedder.status()["pid"]

    def kill_on_first_part(done, total):
        os.kill(first_pid, signal.SIGKILL)

    with pytest.raises(ServiceError, match="went away during the request"):
        embedder.embed(store, records, MODELS, on_progress=kill_on_first_part)
    added = embedder.embed(store, records, MODELS)            # a new worker; the committed parts are kept
    # the kill lands after at least one part of 2 records was committed (how many more depends on timing)
    assert added <= 8
    assert len(store) == 10 and embedder.status()["pid"] != first_pid
    assert sorted(store.ids()) == sorted(record_id for record_id, _ in records)


def test_another_configuration_replaces_the_models_instead_of_adding_a_copy(runtime_dir, tmp_path):
    fp32 = WorkerEmbedder(runtime_dir=runtime_dir, threads=1)
    assert fp32.embed(EmbeddingStore(tmp_path / "fp32.h5"), random_records(2, seed=5), MODELS) == 2
    bf16 = WorkerEmbedder(EmbedOptions(dtype="bf16"), runtime_dir=runtime_dir)
    assert bf16.embed(EmbeddingStore(tmp_path / "bf16.h5"), random_records(2, seed=5), MODELS) == 2
    status = bf16.status()
    assert status["loads"] == {"tiny-32": 2, "tiny-48": 2} and status["loaded"] == {"tiny-32": 1, "tiny-48": 1}
    assert fp32.release()["loaded"] == {}


def test_errors_in_the_worker_come_back_with_its_message(runtime_dir, tmp_path):
    embedder = WorkerEmbedder(runtime_dir=runtime_dir, threads=1)
    store = EmbeddingStore(tmp_path / "s.h5")
    embedder.embed(store, random_records(2, seed=6), MODELS)
    with pytest.raises(ValueError, match=r"holds models \['tiny-32', 'tiny-48'\]; asked for \['tiny-32'\]") as info:
        embedder.embed(store, random_records(2, seed=7, prefix="x"), ["tiny-32"])
    assert any("compute service" in note for note in info.value.__notes__)
    with pytest.raises(ValueError, match="unknown model 'tiny-99'"):       # checked before sending
        embedder.embed(store, random_records(2, seed=7), ["tiny-99"])
    assert stat.S_IMODE(os.stat(runtime_dir).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(runtime_dir / "authkey").st_mode) == 0o600
    stranger = runtime_dir.parent / (runtime_dir.name + "-other")
    stranger.mkdir()
    try:  # a client with another key is refused (HMAC challenge)
        (stranger / "authkey").write_bytes(b"f" * 64)
        os.chmod(stranger / "authkey", 0o600)
        os.symlink(runtime_dir / "service.sock", stranger / "service.sock")
        from multiprocessing import AuthenticationError

        with pytest.raises((AuthenticationError, EOFError, ConnectionError)):
            WorkerEmbedder(runtime_dir=stranger).client._connect()
    finally:
        shutil.rmtree(stranger)


def test_configuration_chooses_the_worker_or_the_local_embedder(monkeypatch, tmp_path):
    monkeypatch.delenv(USE_SERVICE_ENV, raising=False)
    assert isinstance(make_embedder(EmbedOptions()), LocalEmbedder)
    monkeypatch.setenv(USE_SERVICE_ENV, "1")
    chosen = make_embedder(EmbedOptions(dtype="bf16"), runtime_dir=tmp_path / "w")
    assert isinstance(chosen, WorkerEmbedder) and chosen.options.dtype == "bf16"
    with pytest.raises(ValueError, match=r"service settings \['idle_timeout'\] need worker=True"):
        make_embedder(worker=False, idle_timeout=5)
    with pytest.raises(ValueError, match="idle_timeout=0 must be a positive number"):
        WorkerEmbedder(idle_timeout=0)
