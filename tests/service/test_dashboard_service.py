"""With the compute service, dashboard sessions (kernels) share one model load and one computation, get what
an in-process computation gets, never load the compute stack themselves, and survive a service restart."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from revdistill.service.client import ServiceClient

pytestmark = pytest.mark.usefixtures("one_torch_thread")

HEAVY = ("torch", "esm", "numba", "llvmlite", "umap", "sklearn", "h5py", "scipy")


@pytest.fixture
def service_dir():
    directory = Path(tempfile.mkdtemp(prefix="rdd-"))
    yield directory
    ServiceClient(directory).shutdown()


def test_two_sessions_share_one_service_and_one_computation(tiny_cache, service_dir, monkeypatch):
    monkeypatch.setenv("REVDISTILL_SERVICE_DIR", str(service_dir))
    script = textwrap.dedent(f"""
        import json, sys
        from revdistill.dashboard import build_app
        from revdistill.dashboard.state import DashboardOptions
        app = build_app(DashboardOptions(cache_dir={str(tiny_cache)!r}, background=False, service=True),
                        warm_up=False)
        app.models.on_compute()
        app.umap.subspace.value = "block:tiny-64"
        assert app.state.errors == [], app.state.errors
        print(json.dumps({{"heavy": [name for name in {HEAVY!r} if name in sys.modules],
                          "spearman": app.state.analysis.table["spearman"].round(12).tolist()}}))
    """)
    kernels = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    outputs = [kernel.communicate(timeout=300) for kernel in kernels]
    reports = []
    for kernel, (out, err) in zip(kernels, outputs):
        assert kernel.returncode == 0, err[-2000:]
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert reports[0]["heavy"] == reports[1]["heavy"] == []   # the kernels hold widgets and figures only
    assert reports[0]["spearman"] == reports[1]["spearman"]
    status = ServiceClient(service_dir).status()
    assert status["loads"] == {"tiny-32": 1, "tiny-48": 1, "tiny-64": 1}
    assert status["computed"]["analysis"] == 1                  # computed once; the other page shared the job
    assert status["requests"]["analysis"] + status["jobs"].get("shared analysis", 0) == 2  # (or its cached result)


def test_a_session_survives_a_service_restart(tiny_cache, service_dir, tmp_path, monkeypatch):
    import datetime

    from revdistill.dashboard import build_app
    from revdistill.dashboard.state import DashboardOptions
    from synthetic_dms import write_dms_csv

    monkeypatch.setenv("REVDISTILL_SERVICE_DIR", str(service_dir))
    client = ServiceClient(service_dir)
    app = build_app(DashboardOptions(cache_dir=tiny_cache, background=False, service=True), warm_up=False)
    app.models.on_compute()
    assert app.state.errors == []
    first = client.status()["pid"]
    shown = app.models._set_progress

    def kill_when_computing(fraction, message):
        if fraction > 0:
            os.kill(first, signal.SIGKILL)
        shown(fraction, message)

    app.models._set_progress = kill_when_computing
    csv = write_dms_csv(tmp_path / "PIN1_synthetic.csv", n_variants=300)     # new data: seconds of embedding
    app.models.source.value = "upload"
    app.models.upload.value = ({"name": csv.name, "type": "text/csv", "size": csv.stat().st_size,
                                "content": memoryview(csv.read_bytes()),
                                "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    app.models.on_compute()
    assert len(app.state.errors) == 1                                          # one clear message on the page
    assert "the compute service went away" in app.state.errors[0].message
    assert "the next request starts it again" in app.state.errors[0].message
    assert app.models.status.value == "Compute failed (see the message above)."
    app.models._set_progress = shown
    app.umap.subspace.value = "block:tiny-64"   # a new service; the analysis it lost is computed again
    assert len(app.state.errors) == 1 and "16 dims" in app.umap.status.value
    assert client.status()["pid"] != first
