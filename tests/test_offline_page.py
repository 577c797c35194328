"""A served page asks nothing of the internet: an offline classroom sees no failed request.

Voila's ``lab`` template links two fontawesome stylesheets from a public CDN; the dashboard is served with
revdistill's template (:data:`revdistill.dashboard.serving.TEMPLATE`), which drops them: Voila's own bundle
carries Font Awesome 5 and its fonts. The page here is a small notebook with a widget icon, served exactly as
``make dashboard`` serves (the repository's ``notebooks/voila.json``, the template on ``JUPYTER_PATH``).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from voila_server import CHROMIUM, CHROMIUM_FLAGS, require_chromium, start_voila, stop

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[1]

require_chromium()  # a skip here, a failure under CI
playwright_sync = pytest.importorskip("playwright.sync_api")

CELL = """import ipywidgets as widgets
widgets.VBox([widgets.Button(description='Compute', icon='check'), widgets.HTML('<b class="rd-ready">ready</b>')])"""


def test_served_page_makes_no_request_outside_the_server(tmp_path):
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "page.ipynb")
    config = json.loads((REPO / "notebooks" / "voila.json").read_text())
    config["VoilaConfiguration"].update(preheat_kernel=False)  # one page: no pool to warm
    (tmp_path / "voila.json").write_text(json.dumps(config))
    env = dict(os.environ, REVDISTILL_CACHE=str(tmp_path / "cache"))
    process, url = start_voila("page.ipynb", tmp_path, env, tmp_path / "voila.log")
    requested: list[str] = []
    try:
        with playwright_sync.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS, headless=True)
            page = browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.route(lambda address: urlsplit(address).hostname not in (None, "127.0.0.1"),
                       lambda route: route.abort())  # offline: nothing outside the server answers
            page.goto(url, wait_until="load")
            page.wait_for_selector(".rd-ready", timeout=120_000)
            page.wait_for_selector("button i.fa-check", timeout=30_000)
            icon_font = page.evaluate("() => document.fonts.ready.then(() => document.fonts.check("
                                      "'900 14px \"Font Awesome 5 Free\"'))")
            page.goto("about:blank")  # delivers the kernel's shutdown
            browser.close()
    finally:
        stop(process)
    outside = sorted({address for address in requested
                      if urlsplit(address).scheme in ("http", "https", "ws", "wss")
                      and urlsplit(address).hostname != "127.0.0.1"})
    assert outside == [], f"the page requested {outside}"
    assert any("/voila/" in address for address in requested)  # the log saw the page's own requests
    assert icon_font, "the icon font (Font Awesome 5, served by Voila) is not available to the page"
