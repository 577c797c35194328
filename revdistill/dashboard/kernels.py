"""The Voila server's kernel managers: visitors' kernels start lean and are not culled before their page connects.

:class:`DashboardKernelSpecManager` starts Python kernels through :mod:`revdistill.dashboard.kernel` (ipykernel
without the ~1 CPU-s IRI grammar compilation and without input history).

Voila hands each visitor a kernel from its pool of preheated kernels, and its idle culler
(``MappingKernelManager.cull_idle_timeout``) spares only the kernels still in the pool. Once handed out, a
kernel counts as idle since its last activity: when it ran the notebook, possibly long before. The next
culling round may then shut it down while the visitor's page is still loading its scripts, and the page
fails ("Kernel never reached an 'alive' state"). tests/test_soak.py saw it under load, where a page can take
half a minute to connect; with the production settings (timeout 300 s, a round every 30 s) it strikes a
visitor after a quiet spell whose page takes longer to connect than the time left to the next round.

:class:`PoolAwareKernelManager` does not cull a kernel that never had a page connected until
``max(cull_idle_timeout, connect_grace)`` seconds after the culler first found it outside the pool; after
that, or once a page has connected, the usual rule applies. ``notebooks/voila.json`` selects it
(``VoilaConfiguration.multi_kernel_manager_class``); Voila builds its pooling manager on top of it.
Both are selected in ``notebooks/voila.json`` and imported by the server only (they import jupyter_server).
"""
from __future__ import annotations

import time
from typing import Any

from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from traitlets import Float

__all__ = ["PoolAwareKernelManager", "DashboardKernelSpecManager", "DASHBOARD_KERNEL_MODULE"]

#: The module a served Python kernel runs instead of ``ipykernel_launcher``.
DASHBOARD_KERNEL_MODULE = "revdistill.dashboard.kernel"
_IPYKERNEL_MODULES = ("ipykernel_launcher", "ipykernel")


class DashboardKernelSpecManager(KernelSpecManager):
    """``KernelSpecManager`` whose ipykernel specs run :mod:`revdistill.dashboard.kernel` instead.

    Only a spec that starts ``<python> -m ipykernel_launcher ...`` (every ipykernel install writes one) is
    changed, and only its module: the interpreter, the connection-file argument and the rest are kept, so the
    kernel runs in the same environment. Other kernels (another language, a custom launcher) are left alone.
    """

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        spec = super().get_kernel_spec(kernel_name)
        argv = list(spec.argv)
        if len(argv) >= 3 and argv[1] == "-m" and argv[2] in _IPYKERNEL_MODULES:
            spec.argv = argv[:2] + [DASHBOARD_KERNEL_MODULE] + argv[3:]
        return spec


class PoolAwareKernelManager(AsyncMappingKernelManager):
    """``AsyncMappingKernelManager`` whose culler waits for a kernel's first page before judging it idle.

    Without preheating (no pool) every kernel is "outside the pool" from its start.
    """

    connect_grace = Float(600.0, config=True, help=(
        "Seconds a kernel without any connected page is kept after the culler first finds it outside "
        "Voila's pool (at least cull_idle_timeout): the time its visitor's page may take to connect. "
        "make soak's thirty visitors on 2 cores saw pages connect up to 230 s after their kernel was handed "
        "out; a visitor who leaves before the page connects costs one idle kernel (~115 MB) this long."))

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._connected: set[str] = set()
        self._unconnected_since: dict[str, float] = {}
        self._shutting_down: set[str] = set()

    async def shutdown_kernel(self, kernel_id: str, *args: Any, **kwargs: Any) -> None:
        """Shut ``kernel_id`` down; the culler leaves it alone meanwhile: it stays listed until its process has
        ended, seconds under load, and a culling round would shut it down a second time."""
        self._shutting_down.add(kernel_id)
        try:
            await super().shutdown_kernel(kernel_id, *args, **kwargs)
        finally:
            self._shutting_down.discard(kernel_id)

    def notify_connect(self, kernel_id: str) -> None:
        """A page connected to ``kernel_id`` (jupyter_server calls this for every websocket)."""
        self._connected.add(kernel_id)
        super().notify_connect(kernel_id)

    def pooled_kernel_ids(self) -> set[str]:
        """Ids of the started kernels waiting in Voila's pools (``VoilaKernelManager._pools``); empty without."""
        ids = set()
        for pool in getattr(self, "_pools", {}).values():
            for future in pool:
                if future.done() and not future.cancelled() and future.exception() is None:
                    kernel_id = future.result().get("kernel_id")
                    if kernel_id is not None:
                        ids.add(kernel_id)
        return ids

    async def cull_kernels(self) -> None:
        """One culling round; a kernel back in (or first seen in) the pool starts its grace anew when handed out."""
        for kernel_id in self.pooled_kernel_ids():
            self._unconnected_since.pop(kernel_id, None)
        await super().cull_kernels()
        self._connected &= set(self._kernels)
        self._unconnected_since = {kernel_id: since for kernel_id, since in self._unconnected_since.items()
                                   if kernel_id in self._kernels}

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        """Cull ``kernel_id`` if idle, but not a kernel whose page has not connected yet within its grace.

        A kernel shut down meanwhile (its visitor left while this round was running) is skipped: the round
        lists the kernels once and awaits between them; so is a kernel whose shutdown is still going on.
        """
        kernel = self._kernels.get(kernel_id)
        if kernel is None or kernel_id in self._shutting_down:
            return None
        if kernel_id not in self._connected and getattr(kernel, "execution_state", None) != "dead":
            since = self._unconnected_since.setdefault(kernel_id, time.monotonic())
            if time.monotonic() - since < max(self.cull_idle_timeout, self.connect_grace):
                return None
        return await super().cull_kernel_if_idle(kernel_id)
