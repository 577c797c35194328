"""The dashboard server's kernel manager (revdistill.dashboard.kernels) against jupyter_server's own culler."""
from __future__ import annotations

import asyncio
import contextlib
import queue

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


def _culled_while_shutting_down(base: type) -> list[str]:
    """A visitor's kernel, idle for an hour with no page, is being shut down (its visitor left; the process takes a
    while to end under load, the kernel stays listed) when a culling round runs: the shutdowns it got."""
    from datetime import timedelta
    from types import SimpleNamespace

    from jupyter_server._tz import utcnow
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

    class SlowToEnd(AsyncMappingKernelManager):
        async def shutdown_kernel(self, kernel_id, *args, **kwargs):
            shutdowns.append(kernel_id)
            await ended.wait()
            self._kernels.pop(kernel_id, None)

    manager_class = SlowToEnd if base is AsyncMappingKernelManager else type("Manager", (base, SlowToEnd), {})
    shutdowns: list[str] = []
    ended = asyncio.Event()

    async def scenario() -> None:
        manager = manager_class(cull_idle_timeout=10, cull_interval=5)
        manager._kernels["left"] = SimpleNamespace(last_activity=utcnow() - timedelta(hours=1),
                                                   execution_state="idle", kernel_name="python3",
                                                   kernel_spec=SimpleNamespace(metadata={}))
        manager._kernel_connections["left"] = 0
        manager.notify_connect("left")
        manager.notify_disconnect("left")
        leaving = asyncio.ensure_future(manager.shutdown_kernel("left"))
        await asyncio.sleep(0)
        culling = asyncio.ensure_future(manager.cull_kernels())
        await asyncio.sleep(0.1)
        ended.set()
        await asyncio.gather(leaving, culling)

    asyncio.run(scenario())
    return shutdowns


def test_a_kernel_being_shut_down_is_not_culled_again():
    """jupyter_server's culler shuts down a second time a kernel whose shutdown has begun (the soak counted
    17 culls for 15 vanished visitors); the dashboard's kernel manager leaves it to the shutdown under way."""
    from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager

    from revdistill.dashboard.kernels import PoolAwareKernelManager

    assert _culled_while_shutting_down(AsyncMappingKernelManager) == ["left", "left"]
    assert _culled_while_shutting_down(PoolAwareKernelManager) == ["left"]


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


@contextlib.contextmanager
def _running_kernel(spec_manager=None, stderr=None):
    """A Python kernel started through ``spec_manager`` (default: jupyter_client's, so ipykernel's own) over IPC, and
    a client whose channels are started and which has seen the kernel ready: ``(manager, client)``."""
    from jupyter_client.manager import KernelManager

    manager = KernelManager(kernel_name="python3", transport="ipc",
                            **({"kernel_spec_manager": spec_manager} if spec_manager else {}))
    manager.start_kernel(**({"stderr": stderr} if stderr else {}))
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        yield manager, client
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


@pytest.mark.slow
def test_the_dashboard_kernel_skips_the_grammar_compilation_and_keeps_no_history():
    """A kernel started through the spec manager imports plotly's FigureWidget (nbformat, jsonschema) without
    compiling rfc3987_syntax's Lark grammars, still validates JSON schemas, and opens no history database; an
    ordinary ipykernel pays for the grammars (so the skip is what makes the difference)."""
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
        with _running_kernel(spec_manager) as (_manager, client):
            lines = []
            client.execute_interactive(code, timeout=120, output_hook=lambda message: message["msg_type"] == "stream"
                                       and lines.append(message["content"]["text"]))
            seen[name] = "".join(lines).strip()
    assert seen["dashboard"] == "GRAMMARS [] refused False", seen
    assert seen["plain"] == "GRAMMARS ['lark', 'rfc3987_syntax'] refused True", seen


@pytest.mark.slow
def test_sigusr1_writes_every_thread_of_a_dashboard_kernel_to_its_log_and_the_kernel_goes_on(tmp_path):
    """``kill -USR1`` on a served kernel writes each thread's stack to the server's log (the kernel's stderr),
    including a thread the app started, and the kernel still answers afterwards (SIGUSR1's default would end it)."""
    import signal
    import time

    from revdistill.dashboard.kernels import DashboardKernelSpecManager

    log = tmp_path / "kernel.log"
    with open(log, "w") as handle, _running_kernel(DashboardKernelSpecManager(), stderr=handle) as (manager, client):
        client.execute_interactive("import threading, time\n"
                                   "def revdistill_probe_wait():\n    time.sleep(600)\n"
                                   "threading.Thread(target=revdistill_probe_wait, daemon=True).start()", timeout=60)
        manager.provisioner.process.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 30
        while "revdistill_probe_wait" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
        lines = []
        reply = client.execute_interactive("print(6 * 7)", timeout=60, output_hook=lambda message: message[
            "msg_type"] == "stream" and lines.append(message["content"]["text"]))
    text = log.read_text()
    assert "in revdistill_probe_wait" in text and text.count("Thread 0x") >= 2, text[-3000:]
    assert reply["content"]["status"] == "ok" and "".join(lines).strip() == "42"


def _displays_received(spec_manager, count: int) -> int:
    """Start a kernel (through ``spec_manager``, or ipykernel's own), have it publish ``count`` IOPub messages while
    its subscriber reads none, then read them: how many arrived."""
    with _running_kernel(spec_manager) as (_manager, client):
        while True:  # what came before
            try:
                client.get_iopub_msg(timeout=0.5)
            except queue.Empty:
                break
        msg_id = client.execute("from IPython.display import publish_display_data\n"
                                f"for i in range({count}):\n    publish_display_data({{'text/plain': str(i)}})")
        client.get_shell_msg(timeout=120)  # the kernel has published them all; nothing was read meanwhile
        received = 0
        while True:
            try:
                message = client.get_iopub_msg(timeout=10)
            except queue.Empty:  # the rest, the kernel's idle status included, was dropped
                return received
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            received += message["msg_type"] == "display_data"
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                return received


@pytest.mark.slow
def test_the_dashboard_kernel_drops_no_iopub_message_while_its_reader_is_behind():
    """A burst of IOPub messages that its subscriber (the server) has not read yet all arrive from a dashboard
    kernel; ipykernel's own drops those beyond ZeroMQ's default high-water mark, as the thirty-visitor soak saw
    (pages stuck at "Loading widget..." missing their last widget states)."""
    from revdistill.dashboard.kernel import IOPUB_SNDHWM
    from revdistill.dashboard.kernels import DashboardKernelSpecManager

    count = 8000  # a page's widget restore needs ~1100; ZeroMQ queues ~2000 (sender and receiver 1000 each)
    assert count < IOPUB_SNDHWM
    assert _displays_received(DashboardKernelSpecManager(), count) == count
    assert _displays_received(None, count) < count
