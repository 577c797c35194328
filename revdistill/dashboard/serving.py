"""Serve plotly's widget code once per page under Voila, instead of once per figure.

Every plotly ``FigureWidget`` carries plotly's 5 MB widget bundle as its anywidget ``_esm`` string;
the browser turns each copy into a separate module and evaluates it. anywidget gives a model two
seconds to initialise, so with four figures on a busy 2-core machine the later ones time out
("[anywidget] Failed to initialize model."), render their initial data, and silently ignore every
later update. Under Voila we therefore copy the bundle once into ``<notebook dir>/_static/`` (served
by Voila's ``/voila/files/`` route, allow-listed in ``notebooks/voila.json``) and give each figure a
tiny loader module that imports that URL: the browser fetches and evaluates it once, every figure
shares it. Outside Voila (JupyterLab, nbclient) figures keep plotly's own inline bundle.

The two seconds can still run out on a busy page (the soak test, tests/test_soak.py, sees it for a few
figures of a few of its twelve visitors). anywidget then drops every later message to that figure, so the
served figures open their comm only once the figure is complete (the browser gets it whole in the first
message), and the panels draw new results into new figures rather than changing those on the page.

Three server settings in ``notebooks/voila.json`` belong here too. Voila renders a page from the outputs its
executor collects while the kernel runs the notebook, and nbclient waits only ``iopub_timeout`` seconds (4 by
default) for a cell's outputs after the kernel says the cell ran: on a loaded server the app's display came
later, was dropped, and the visitor got a page without the app (tests/test_soak.py: 7 of 12 visitors, the
log saying "Timeout waiting for IOPub output"); ``VoilaExecutor.iopub_timeout`` is 600 s (at 120 s, thirty
visitors over a minute on 2 cores still lost 3 pages this way: the outputs of a starved kernel took longer).
Voila's XSRF check is off (``Voila.tornado_settings.disable_check_xsrf``): Voila 0.5 never sets the ``_xsrf``
cookie, so the shutdown request a page sends when its visitor leaves was refused (403, voila#1458) and every
kernel waited for the idle culler (300 s); the server has no login, so the check guarded nothing else a page
from another site could do without knowing a kernel's id. And the kernel manager is
:class:`revdistill.dashboard.kernels.PoolAwareKernelManager`, which keeps a kernel taken from the pool until
its visitor's page connects.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["STATIC_FOLDER", "TEMPLATE", "bundle_name", "prepare_static", "served_figure_class", "template_root",
           "under_voila", "voila_environment"]

STATIC_FOLDER = "_static"
#: The Voila template the dashboard is served with: Voila's ``lab`` template without the two fontawesome
#: stylesheets it requests from a public CDN on every page (Voila's own bundle already carries Font Awesome 5
#: and serves its fonts), so that an offline classroom's pages make no request outside the server.
TEMPLATE = "revdistill"
_CLASS_CACHE: dict[str, Any] = {}

_LOADER = """
const config = JSON.parse(document.getElementById("jupyter-config-data")?.textContent || "{}");
const base = (config.baseUrl || "/").replace(/\\/?$/, "/");
const url = new URL(base + "voila/files/%s", window.location.href).href;
const bundle = await import(url);
export default bundle.default;
"""


def template_root() -> Path:
    """The Jupyter data folder holding ``voila/templates/revdistill`` (shipped in the package)."""
    return Path(__file__).resolve().parent / "jupyter"


def voila_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's environment) with :func:`template_root` first on ``JUPYTER_PATH``, so
    that ``voila --template=revdistill`` finds the template (``make dashboard`` sets the same)."""
    env = dict(os.environ if env is None else env)
    env["JUPYTER_PATH"] = os.pathsep.join([str(template_root())] + [part for part in
                                                                    env.get("JUPYTER_PATH", "").split(os.pathsep)
                                                                    if part])
    return env


def under_voila() -> bool:
    """Whether this kernel was started by Voila (it sets ``VOILA_SERVER_URL``/``VOILA_APP_PORT``)."""
    return bool(os.environ.get("VOILA_SERVER_URL") or os.environ.get("VOILA_APP_PORT"))


def _plotly_bundle() -> Path:
    import plotly  # noqa: PLC0415

    return Path(plotly.__file__).parent / "package_data" / "widgetbundle.js"


def bundle_name() -> str:
    """File name of the served copy; it carries plotly's version so browsers never mix versions."""
    import plotly  # noqa: PLC0415

    return f"plotly-widgetbundle-{plotly.__version__}.js"


def prepare_static(notebook_dir: str | Path) -> Path:
    """Copy plotly's widget bundle to ``<notebook_dir>/_static/`` (atomically; skipped when current).

    Parameters
    ----------
    notebook_dir : str or Path
        Voila's root folder (the served notebook's folder).

    Returns
    -------
    Path
        The served file.
    """
    source = _plotly_bundle()
    folder = Path(notebook_dir) / STATIC_FOLDER
    target = folder / bundle_name()
    if target.is_file() and target.stat().st_size == source.stat().st_size:
        return target
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# copies of installed files served by Voila; never commit them\n*\n")
    temporary = folder / f".{target.name}.{os.getpid()}.tmp"
    shutil.copyfile(source, temporary)
    os.replace(temporary, target)
    logger.info("plotly widget bundle served from %s", target)
    return target


def served_figure_class() -> Any:
    """A ``FigureWidget`` subclass whose widget code is imported from the served bundle and whose comm opens
    with the whole figure (see :func:`_whole_figure_class`)."""
    name = bundle_name()
    if name not in _CLASS_CACHE:
        _CLASS_CACHE[name] = _whole_figure_class(_LOADER % f"{STATIC_FOLDER}/{name}")
    return _CLASS_CACHE[name]


def _whole_figure_class(loader: str) -> Any:
    """plotly's ``FigureWidget`` with ``_esm=loader``, opening its comm only once the figure is complete.

    plotly opens a FigureWidget's comm before it sets the figure, so the browser receives an empty model and
    then the traces and layout as updates. anywidget drops every update of a model whose widget code took
    more than two seconds to initialise (a busy page), and such a figure stayed empty (soak test: a UMAP or
    scaling figure of 1 visitor in 12). Opened afterwards, the comm carries the figure in its first message.
    """
    import plotly.graph_objects as go  # noqa: PLC0415

    class ServedFigureWidget(go.FigureWidget):
        _esm = loader

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._hold_comm = True
            try:
                super().__init__(*args, **kwargs)
            finally:
                self._hold_comm = False
            self.open()

        def open(self) -> None:
            if not getattr(self, "_hold_comm", False):
                super().open()

    return ServedFigureWidget
