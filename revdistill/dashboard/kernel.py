"""``python -m revdistill.dashboard.kernel -f CONNECTION_FILE``: the IPython kernel a served dashboard visitor gets.

It is ipykernel's own kernel (``ipykernel.kernelapp``), started with two differences that matter when one
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

:class:`revdistill.dashboard.kernels.DashboardKernelSpecManager` (``notebooks/voila.json``) makes the Voila
server start Python kernels through this module; JupyterLab keeps the usual kernel.
"""
from __future__ import annotations

import sys
from typing import Sequence

__all__ = ["SKIPPED_MODULES", "KERNEL_OPTIONS", "main"]

#: Modules this kernel process treats as not installed (see the module docstring).
SKIPPED_MODULES = ("rfc3987_syntax",)
#: ipykernel options added before the caller's (the caller's win).
KERNEL_OPTIONS = ("--HistoryManager.enabled=False",)


def main(argv: Sequence[str] | None = None) -> None:
    """Start ipykernel's kernel application with ``argv`` (default: this process's arguments)."""
    for name in SKIPPED_MODULES:
        sys.modules.setdefault(name, None)  # an import of it raises ImportError, as for a package not installed
    from ipykernel.kernelapp import IPKernelApp  # noqa: PLC0415 - after the modules above are marked

    arguments = list(KERNEL_OPTIONS) + list(sys.argv[1:] if argv is None else argv)
    IPKernelApp.launch_instance(argv=arguments)


if __name__ == "__main__":
    main()
