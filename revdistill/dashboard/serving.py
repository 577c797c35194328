"""Serve plotly's widget code once per page under Voila, instead of once per figure.

Every plotly ``FigureWidget`` carries plotly's 5 MB widget bundle as its anywidget ``_esm`` string;
the browser turns each copy into a separate module and evaluates it. anywidget gives a model two
seconds to initialise, so with four figures on a busy 2-core machine the later ones time out
("[anywidget] Failed to initialize model."), render their initial data, and silently ignore every
later update. Under Voila we therefore copy the bundle once into ``<notebook dir>/_static/`` (served
by Voila's ``/voila/files/`` route, allow-listed in ``notebooks/voila.json``) and give each figure a
tiny loader module that imports that URL: the browser fetches and evaluates it once, every figure
shares it. Outside Voila (JupyterLab, nbclient) figures keep plotly's own inline bundle.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["STATIC_FOLDER", "bundle_name", "prepare_static", "served_figure_class", "under_voila"]

STATIC_FOLDER = "_static"
_CLASS_CACHE: dict[str, Any] = {}

_LOADER = """
const config = JSON.parse(document.getElementById("jupyter-config-data")?.textContent || "{}");
const base = (config.baseUrl || "/").replace(/\\/?$/, "/");
const url = new URL(base + "voila/files/%s", window.location.href).href;
const bundle = await import(url);
export default bundle.default;
"""


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
    """A ``FigureWidget`` subclass whose widget code is imported from the served bundle."""
    name = bundle_name()
    if name not in _CLASS_CACHE:
        import plotly.graph_objects as go  # noqa: PLC0415

        loader = _LOADER % f"{STATIC_FOLDER}/{name}"
        _CLASS_CACHE[name] = type("ServedFigureWidget", (go.FigureWidget,), {"_esm": loader})
    return _CLASS_CACHE[name]
