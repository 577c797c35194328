"""Start and watch a Voila server for the browser tests (tests/test_browser.py, tests/test_soak.py).

The browser is Debian's chromium at :data:`CHROMIUM`, driven by Playwright (never ``playwright install``):
:func:`require_chromium` skips a test module without it, or fails it under CI, whose ``.ci/run`` installs it.

Voila is started on a free port from the notebook's folder (so that folder's ``voila.json`` applies) and is
ready when ``/voila/static/voila.js`` answers: a plain GET of the notebook URL would start a kernel.
The process helpers read ``/proc`` (Linux) to count Voila's kernels and to sum the memory of its process
tree, because Voila 0.5 serves no kernel list (``/api/kernels`` answers only for one kernel id).
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pytest

__all__ = ["CHROMIUM", "CHROMIUM_FLAGS", "require_chromium", "free_port", "wait_http", "wait_log", "start_voila",
           "stop", "ProcessTable", "read_processes", "machine_cpu_seconds"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync"]
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")


def require_chromium() -> None:
    """Call at the top of a browser test module: skip it without :data:`CHROMIUM`; under CI, fail it instead."""
    if CHROMIUM.exists():
        return
    missing = f"{CHROMIUM} is missing: apt-get install -y chromium (never `playwright install`)"
    if os.environ.get("CI"):  # .ci/run installs it: a missing browser there is a failure, not a skip
        pytest.fail(missing, pytrace=False)
    pytest.skip(missing, allow_module_level=True)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float) -> None:
    """Wait until ``url`` answers 200; ``TimeoutError`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def wait_log(path: Path, text: str, timeout: float, count: int = 1) -> float:
    """Wait until ``text`` occurs ``count`` times in the log ``path``; return the seconds waited."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if path.read_text(errors="replace").count(text) >= count:
            return time.monotonic() - start
        time.sleep(0.5)
    raise TimeoutError(f"{text!r} not in the Voila log after {timeout} s:\n{path.read_text()[-3000:]}")


def start_voila(notebook: str, cwd: Path, env: dict[str, str], log: Path,
                extra_args: Sequence[str] = ()) -> tuple[subprocess.Popen, str]:
    """Serve ``cwd/notebook`` with Voila on a free port; return the process and the base URL once ready.

    Parameters
    ----------
    notebook : str
        The notebook's name inside ``cwd``.
    cwd : Path
        Voila's working directory (its ``voila.json`` is read).
    env : dict
        The server's (and so its kernels') environment.
    log : Path
        stdout and stderr of the server and its kernels.
    extra_args : sequence of str
        More command-line options (``--MappingKernelManager.cull_interval=5`` ...); they override the
        configuration files.
    """
    from revdistill.dashboard.serving import TEMPLATE, voila_environment

    port = free_port()
    voila = Path(sys.executable).with_name("voila")
    with open(log, "w") as handle:  # served as `make dashboard` serves: revdistill's template (no CDN requests)
        process = subprocess.Popen([str(voila), notebook, f"--port={port}", "--no-browser", "--Voila.ip=127.0.0.1",
                                    f"--template={TEMPLATE}", *extra_args], cwd=cwd, env=voila_environment(env),
                                   stdout=handle, stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://127.0.0.1:{port}/voila/static/voila.js", 60)
    except TimeoutError:
        stop(process)
        raise
    return process, f"http://127.0.0.1:{port}/"


def stop(process: subprocess.Popen) -> None:
    """Terminate the server (it shuts its kernels down), kill it after 20 s."""
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:  # pragma: no cover
        process.kill()
        process.wait(timeout=20)


# -- processes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProcessInfo:
    """One process read from ``/proc``: its parent, command line, resident memory (bytes) and CPU time so far
    (user + system seconds)."""

    pid: int
    ppid: int
    cmdline: str
    rss: int
    cpu: float


def _read_process(pid: int) -> ProcessInfo | None:
    base = Path("/proc") / str(pid)
    try:
        fields = (base / "stat").read_text().rsplit(")", 1)[1].split()  # the name before may hold spaces
        cmdline = (base / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        rss = int((base / "statm").read_text().split()[1]) * _PAGE
        ppid, cpu = int(fields[1]), (int(fields[11]) + int(fields[12])) / _TICKS
    except (OSError, IndexError, ValueError):  # the process ended meanwhile
        return None
    return ProcessInfo(pid, ppid, cmdline, rss, cpu)


def read_processes() -> dict[int, ProcessInfo]:
    """Every readable process of this machine, by pid (``/proc``; Linux only)."""
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            info = _read_process(int(entry.name))
            if info is not None:
                table[info.pid] = info
    return table


class ProcessTable:
    """A snapshot of the processes (``/proc``), with the questions the Voila tests ask of it."""

    def __init__(self) -> None:
        self.processes = read_processes()

    @staticmethod
    def pss(pid: int) -> int | None:
        """Proportional set size of ``pid`` in bytes (shared pages divided among their users), read now;
        None if the process ended or cannot be read."""
        try:
            for line in (Path("/proc") / str(pid) / "smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
        except (OSError, ValueError):
            return None
        return None

    def descendants(self, root: int) -> list[ProcessInfo]:
        """``root`` and every process below it (children, their children ...)."""
        children: dict[int, list[int]] = {}
        for info in self.processes.values():
            children.setdefault(info.ppid, []).append(info.pid)
        found, todo = [], [root]
        while todo:
            pid = todo.pop()
            if pid in self.processes:
                found.append(self.processes[pid])
                todo.extend(children.get(pid, []))
        return found

    def kernels(self, server: int) -> list[ProcessInfo]:
        """The kernel processes the server ``server`` started."""
        return [info for info in self.processes.values() if info.ppid == server and is_kernel(info.cmdline)]

    def matching(self, *parts: str) -> list[ProcessInfo]:
        """Processes whose command line contains every one of ``parts``."""
        return [info for info in self.processes.values() if all(part in info.cmdline for part in parts)]


def is_kernel(cmdline: str) -> bool:
    """Whether a command line is an IPython kernel's: ipykernel's launcher, or the served dashboard's
    (``revdistill.dashboard.kernel``, which notebooks/voila.json's kernel spec manager starts)."""
    from revdistill.dashboard.kernels import DASHBOARD_KERNEL_MODULE

    return "ipykernel" in cmdline or DASHBOARD_KERNEL_MODULE in cmdline


def machine_cpu_seconds() -> tuple[float, float]:
    """``(busy, total)`` CPU seconds of the whole machine since boot, all cores (``/proc/stat``)."""
    with open("/proc/stat") as handle:
        values = [int(value) for value in handle.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    return (sum(values) - idle) / _TICKS, sum(values) / _TICKS
