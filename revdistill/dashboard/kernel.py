"""``python -m revdistill.dashboard.kernel -f CONNECTION_FILE``: the IPython kernel a served dashboard visitor gets.

It is ipykernel's own kernel (``ipykernel.kernelapp``), started with three differences that matter when one
server preheats a kernel for every visitor of a class (``make soak`` measures them):

* **No IRI format checker.** plotly's ``FigureWidget`` imports ``plotly.io._renderers``, which imports
  ``nbformat``, which imports ``jsonschema``; ``jsonschema._format`` then imports ``rfc3987_syntax`` (installed
  through ``jupyter_server``'s ``jsonschema[format-nongpl]``), which compiles 39 Lark grammars at import: about
  1 CPU-s and 10 MB in every kernel, a third of a kernel's cost (python-jsonschema/jsonschema#1428). A dashboard
  kernel validates no IRI, so the launcher marks ``rfc3987_syntax`` as not importable in this process only;
  ``jsonschema`` then simply lacks the ``iri``/``iri-reference`` format checks, as it does wherever the
  package is not installed.
* **No input history.** A visitor types no code: the history database (one SQLite file shared by every
  kernel of the machine, written from a thread of each) is not opened.

* **No IOPub message dropped while its page catches up.** A page restores its widgets by asking the kernel for
  their states; when the one-message answer takes longer than ipywidgets' 4 s (a busy server), the page asks
  for each widget's state on its own, 361 requests in one burst, which the kernel answers with three IOPub
  messages each. ZeroMQ's default high-water mark (1000 messages a subscriber, "possibly 90 % lower") then
  drops whatever the server has not read yet; the page waits forever for the dropped answers and stays at
  "Loading widget..." (thirty visitors on two cores lost 1 to 4 pages a run, each missing its last ~33
  updates). The IOPub socket queues up to :data:`IOPUB_SNDHWM` messages a subscriber instead.

An operator can see what a stuck kernel is doing: ``kill -USR1 <kernel pid>`` writes the stack of each of its
threads to the server's log (:mod:`faulthandler`), and the kernel goes on.

:class:`revdistill.dashboard.kernels.DashboardKernelSpecManager` (``notebooks/voila.json``) makes the Voila
server start Python kernels through this module; JupyterLab keeps the usual kernel.
"""
from __future__ import annotations

import faulthandler
import signal
import sys
from typing import Sequence

__all__ = ["SKIPPED_MODULES", "KERNEL_OPTIONS", "IOPUB_SNDHWM", "main"]

#: Modules this kernel process treats as not installed (see the module docstring).
SKIPPED_MODULES = ("rfc3987_syntax",)
#: ipykernel options added before the caller's (the caller's win).
KERNEL_OPTIONS = ("--HistoryManager.enabled=False",)
#: Messages the IOPub socket queues for a subscriber that is behind before it drops any (ZeroMQ's default: 1000).
#: A page's restore needs ~1100 in one burst; this bound (~100 MB of small messages) only guards against a
#: subscriber that never reads.
IOPUB_SNDHWM = 100_000


def main(argv: Sequence[str] | None = None) -> None:
    """Start ipykernel's kernel application with ``argv`` (default: this process's arguments)."""
    for name in SKIPPED_MODULES:
        sys.modules.setdefault(name, None)  # an import of it raises ImportError, as for a package not installed
    import zmq  # noqa: PLC0415
    from ipykernel.kernelapp import IPKernelApp  # noqa: PLC0415 - after the modules above are marked

    class DashboardKernelApp(IPKernelApp):
        """ipykernel's application whose IOPub socket queues :data:`IOPUB_SNDHWM` messages a subscriber."""

        def init_iopub(self, context: zmq.Context) -> None:
            # The high-water mark must be set before the socket binds (its listener copies the options), and
            # ipykernel creates and binds it in one method: make it the context's default for that call only.
            context.setsockopt(zmq.SNDHWM, IOPUB_SNDHWM)
            try:
                super().init_iopub(context)
            finally:
                del context.sockopts[zmq.SNDHWM]

    faulthandler.register(signal.SIGUSR1, file=sys.__stderr__, all_threads=True, chain=False)

    arguments = list(KERNEL_OPTIONS) + list(sys.argv[1:] if argv is None else argv)
    DashboardKernelApp.launch_instance(argv=arguments)


if __name__ == "__main__":
    main()
