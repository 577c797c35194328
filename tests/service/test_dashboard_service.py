"""With the server's embedding worker on, two dashboard sessions (two kernels) share one model load and
get what an in-process computation gets; the kernels never load ESM-2 themselves."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_two_sessions_share_one_worker_and_one_model_load(tiny_cache, tmp_path, monkeypatch):
    from revdistill.esm.worker import WorkerEmbedder

    monkeypatch.setenv("REVDISTILL_EMBED_WORKER", "1")
    monkeypatch.setenv("REVDISTILL_WORKER_DIR", str(tmp_path / "worker"))
    script = textwrap.dedent(f"""
        import sys
        from revdistill.dashboard import build_app
        from revdistill.dashboard.state import DashboardOptions
        app = build_app(DashboardOptions(cache_dir={str(tiny_cache)!r}, background=False, cpu_threads=1), warm_up=False)
        app.models.on_compute()
        assert app.state.errors == [], app.state.errors
        print(type(app.state.embedder("cpu")).__name__, "esm" in sys.modules)
        print(app.state.analysis.result.table["spearman"].round(12).tolist())
    """)
    kernels = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True) for _ in range(2)]
    outputs = [kernel.communicate(timeout=300) for kernel in kernels]
    try:
        for kernel, (out, err) in zip(kernels, outputs):
            assert kernel.returncode == 0, err[-2000:]
            assert out.splitlines()[0] == "WorkerEmbedder False"  # fair-esm never imported in the kernel
        assert outputs[0][0].splitlines()[1] == outputs[1][0].splitlines()[1]
        status = WorkerEmbedder(runtime_dir=tmp_path / "worker").status()
        assert status["loads"] == {"tiny-32": 1, "tiny-48": 1, "tiny-64": 1} and status["jobs_done"] >= 2
    finally:
        WorkerEmbedder(runtime_dir=tmp_path / "worker").shutdown()
