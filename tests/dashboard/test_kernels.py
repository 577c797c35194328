"""The dashboard server's kernel manager (revdistill.dashboard.kernels) against jupyter_server's own culler."""
from __future__ import annotations

import asyncio

import pytest


def _cull_rounds(base: type) -> list[list[str]]:
    """Culling rounds with ``base`` (plus Voila's rule: pooled kernels are spared; idle timeout 10 s, grace 30 s):
    "pooled" idle for an hour stays in the pool; "handed" was just taken from it (its page is loading) and
    then waits 31 s without a page; "used" had a page that disconnected 11 s ago. Returns the kernels culled by
    each round: while pooled, just after the handoff, 31 s later."""
    from datetime import timedelta
    from types import SimpleNamespace

    from jupyter_server._tz import utcnow

    class Manager(base):
        async def cull_kernel_if_idle(self, kernel_id):  # what VoilaKernelManager adds
            if kernel_id in {future.result()["kernel_id"] for future in self._pools["dashboard.ipynb"]}:
                return None
            return await super().cull_kernel_if_idle(kernel_id)

    async def scenario() -> list[list[str]]:
        manager = Manager(cull_idle_timeout=10, cull_interval=5)
        if hasattr(manager, "connect_grace"):
            manager.connect_grace = 30
        culled: list[str] = []

        async def shutdown_kernel(kernel_id, *args, **kwargs):
            culled.append(kernel_id)
            del manager._kernels[kernel_id]

        manager.shutdown_kernel = shutdown_kernel
        loop = asyncio.get_running_loop()
        pool = []
        for kernel_id in ("pooled", "handed", "used"):
            manager._kernels[kernel_id] = SimpleNamespace(
                last_activity=utcnow() - timedelta(hours=1), execution_state="idle", kernel_name="python3",
                kernel_spec=SimpleNamespace(metadata={}))
            manager._kernel_connections[kernel_id] = 0
            future = loop.create_future()
            future.set_result({"kernel_id": kernel_id})
            pool.append(future)
        manager._pools = {"dashboard.ipynb": pool}
        rounds = []
        await manager.cull_kernels()
        rounds.append(sorted(culled))
        del pool[1:]  # "handed" and "used" go to visitors; only the page of "used" connects, then leaves
        manager.notify_connect("used")
        manager.notify_disconnect("used")
        manager._kernels["used"].last_activity = utcnow() - timedelta(seconds=11)
        await manager.cull_kernels()
        rounds.append(sorted(culled))
        for kernel_id, since in getattr(manager, "_unconnected_since", {}).items():  # 31 s pass
            manager._unconnected_since[kernel_id] = since - 31
        if "handed" in manager._kernels:
            manager._kernels["handed"].last_activity = utcnow() - timedelta(seconds=31)
        await manager.cull_kernels()
        rounds.append(sorted(culled))
        return rounds

    return asyncio.run(scenario())


def test_a_kernel_taken_from_the_pool_is_kept_until_its_page_connects():
    """jupyter_server's culler alone shuts a kernel just handed to a visitor down at once (its last activity is
    when the pool ran the notebook); ours keeps it for the grace, then culls it if no page ever connected, and
    culls a kernel whose page came and went by the usual idle rule."""
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

    from revdistill.dashboard.kernels import PoolAwareKernelManager

    assert _cull_rounds(AsyncMappingKernelManager) == [[], ["handed", "used"], ["handed", "used"]]
    assert _cull_rounds(PoolAwareKernelManager) == [[], ["used"], ["handed", "used"]]


def test_a_kernel_shut_down_during_a_culling_round_is_skipped():
    """jupyter_server's round lists the kernels, then awaits each check: a kernel whose visitor left meanwhile
    is gone by its turn (a KeyError in the server log under load)."""
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

    from revdistill.dashboard.kernels import PoolAwareKernelManager

    with pytest.raises(KeyError):
        asyncio.run(AsyncMappingKernelManager(cull_idle_timeout=10).cull_kernel_if_idle("gone"))
    assert asyncio.run(PoolAwareKernelManager(cull_idle_timeout=10).cull_kernel_if_idle("gone")) is None



def _write_spec(folder, name: str, argv: list[str]) -> None:
    import json

    (folder / name).mkdir(parents=True)
    (folder / name / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": name, "language": "python"}))


def test_the_spec_manager_runs_ipykernel_specs_through_the_dashboard_kernel(tmp_path):
    """An ipykernel spec keeps its interpreter and arguments and changes only its module; other specs are kept."""
    from jupyter_client.kernelspec import KernelSpecManager

    from revdistill.dashboard.kernels import DASHBOARD_KERNEL_MODULE, DashboardKernelSpecManager

    kernels = tmp_path / "kernels"
    _write_spec(kernels, "py", ["/opt/py/bin/python", "-m", "ipykernel_launcher", "-f", "{connection_file}", "--x=1"])
    _write_spec(kernels, "custom", ["/opt/py/bin/python", "-m", "mykernel", "-f", "{connection_file}"])
    _write_spec(kernels, "other", ["/usr/bin/irkernel", "--connection", "{connection_file}"])
    ours, theirs = (manager(kernel_dirs=[str(kernels)], ensure_native_kernel=False)
                    for manager in (DashboardKernelSpecManager, KernelSpecManager))
    assert ours.get_kernel_spec("py").argv == ["/opt/py/bin/python", "-m", DASHBOARD_KERNEL_MODULE, "-f",
                                               "{connection_file}", "--x=1"]
    for name in ("custom", "other"):
        assert ours.get_kernel_spec(name).argv == theirs.get_kernel_spec(name).argv
    native = DashboardKernelSpecManager().get_kernel_spec("python3")  # what Voila starts for dashboard.ipynb
    assert native.argv[1:3] == ["-m", DASHBOARD_KERNEL_MODULE]


@pytest.mark.slow
def test_the_dashboard_kernel_skips_the_grammar_compilation_and_keeps_no_history():
    """A kernel started through the spec manager imports plotly's FigureWidget (nbformat, jsonschema) without
    compiling rfc3987_syntax's Lark grammars, still validates JSON schemas, and opens no history database; an
    ordinary ipykernel pays for the grammars (so the skip is what makes the difference)."""
    from jupyter_client.manager import KernelManager

    from revdistill.dashboard.kernels import DashboardKernelSpecManager

    code = ("import sys, plotly.graph_objects as go, jsonschema\n"
            "go.FigureWidget()\n"
            "jsonschema.validate({'a': 1}, {'type': 'object', 'properties': {'a': {'type': 'integer'}}})\n"
            "try:\n    jsonschema.validate({'a': 'x'}, {'properties': {'a': {'type': 'integer'}}}); bad = 'accepted'\n"
            "except jsonschema.ValidationError:\n    bad = 'refused'\n"
            "print('GRAMMARS', sorted(m for m in ('lark', 'rfc3987_syntax') if sys.modules.get(m) is not None),"
            " bad, get_ipython().history_manager.enabled)")
    seen = {}
    for name, spec_manager in (("dashboard", DashboardKernelSpecManager()), ("plain", None)):
        manager = KernelManager(kernel_name="python3", transport="ipc",
                                **({"kernel_spec_manager": spec_manager} if spec_manager else {}))
        manager.start_kernel()
        client = manager.client()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=60)
            lines = []
            client.execute_interactive(code, timeout=120, output_hook=lambda message: message["msg_type"] == "stream"
                                       and lines.append(message["content"]["text"]))
            seen[name] = "".join(lines).strip()
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)
    assert seen["dashboard"] == "GRAMMARS [] refused False", seen
    assert seen["plain"] == "GRAMMARS ['lark', 'rfc3987_syntax'] refused True", seen
