"""Drive the served dashboard in headless Chromium (Debian's /usr/bin/chromium, never `playwright install`).

Two Voila servers. The dashboard's (the repo's notebooks/voila.json: preheated kernels over IPC, culling)
runs with no ESM-2 weights and no ProteinGym data folder, and with local HTTP servers standing in for
fair-esm's and ProteinGym's: a visitor sees the 217 assays listed offline, downloads ESM-2 8M (a
random-init checkpoint of the real 8M architecture) and sees its checkbox enabled, uploads a DMS CSV,
computes, moves the prefix slider, switches the UMAP subspace, computes a UMAP, reads the scaling curves,
then picks PIN1 in the assay browser, which is fetched from the local server and computed (the page is
used meanwhile), and its landscape has one cell per measured (position, amino acid). Four visitors then
arrive at once. The second server shows the views with synthetic data (tests/dashboard/render_bench.py; 5k
and 500k points, or the sizes of ``$REVDISTILL_BROWSER_SIZES``) and times how they appear and redraw.
Timings go to test-artifacts/timings.json, screenshots to test-artifacts/.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from synthetic_dms import PIN1, PIN1_ID, write_dms_csv, write_pin1_zip  # noqa: F401 - PIN1 re-exported
from voila_server import CHROMIUM, CHROMIUM_FLAGS as FLAGS, require_chromium, start_voila, stop, wait_log

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(900)]

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"
N_VARIANTS = 5000
N_SINGLES = 19 * len(PIN1)  # the protocol keeps single substitutions: 741 of the 5,000 variants
PANEL = {"models": 0, "decomposition": 1, "slicer": 2, "umap": 3, "scaling": 4, "landscape": 5}


def _sizes(variable: str, default: str) -> tuple[int, ...]:
    return tuple(int(n) for n in os.environ.get(variable, default).split(",") if n)


#: Sizes of the rendering measurements: by default the smallest (every point drawn) and the largest (a raster);
#: ``REVDISTILL_BROWSER_SIZES=5000,20000,100000,500000`` measures every size docs/serving.md quotes. UMAP is timed at
#: ``$REVDISTILL_BROWSER_UMAP_SIZES`` (default none: a fresh kernel compiles UMAP for about a minute first, and
#: the dashboard test above already draws a UMAP in the browser).
SIZES = _sizes("REVDISTILL_BROWSER_SIZES", "5000,500000")
UMAP_SIZES = _sizes("REVDISTILL_BROWSER_UMAP_SIZES", "")
_TIMINGS: dict[str, object] = {}

require_chromium()  # a skip here, a failure under CI
playwright_sync = pytest.importorskip("playwright.sync_api")


def record(section: str, values: dict[str, object]) -> None:
    """Add ``values`` under ``section`` of test-artifacts/timings.json (one file for the whole run)."""
    _TIMINGS[section] = values
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "timings.json").write_text(json.dumps(_TIMINGS, indent=2) + "\n")


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    """Stand-ins for fair-esm's and ProteinGym's servers: ESM-2 8M (random init, the real architecture:
    6 layers, 320 dims, 20 heads, ~30 MB) and the singles zip with one PIN1 assay."""
    from http_servers import serve_directory
    from revdistill.esm.models.loading import save_esm2_checkpoint, tiny_esm2
    from revdistill.esm.models.registry import get_spec

    root = tmp_path_factory.mktemp("remote")
    with serve_directory(root / "weights") as weights, serve_directory(root / "proteingym") as proteingym:
        spec = get_spec("8M")
        model, _ = tiny_esm2(spec.layers, spec.dim, spec.heads, seed=8)
        model_path, regression = save_esm2_checkpoint(model, weights.root / "models" / f"{spec.name}.pt")
        (weights.root / "regression").mkdir()
        regression.replace(weights.root / "regression" / regression.name)
        write_pin1_zip(proteingym.root)
        yield {"weights": weights, "proteingym": proteingym, "model_bytes": model_path.stat().st_size}


@pytest.fixture(scope="module")
def server(tmp_path_factory, remote):
    """Voila on a free port, run from notebooks/ so that notebooks/voila.json applies; no weights, no data."""
    tmp = tmp_path_factory.mktemp("voila")
    log = tmp / "voila.log"
    env = {key: value for key, value in os.environ.items()
           if key not in ("REVDISTILL_PROTEINGYM_DIR", "REVDISTILL_WEIGHTS")}
    env.update(REVDISTILL_CACHE=str(tmp / "cache"), REVDISTILL_WEIGHTS=str(tmp / "weights"),
               REVDISTILL_WEIGHTS_URL=remote["weights"].url, REVDISTILL_PROTEINGYM_URL=remote["proteingym"].url,
               REVDISTILL_SERVICE="1", REVDISTILL_SERVICE_DIR=str(tmp / "service"))
    started = time.monotonic()
    process, url = start_voila("dashboard.ipynb", REPO / "notebooks", env, log)
    try:
        wait_log(log, "dashboard built in", 300)
        first_warm = time.monotonic() - started
        # Visitors meet a server that has been up a little while: every pooled kernel built, and UMAP compiled
        # in the compute service (once for the server, asked for by the first kernel).
        pool_size = json.loads((REPO / "notebooks" / "voila.json").read_text())["VoilaConfiguration"][
            "default_pool_size"]
        wait_log(log, "dashboard built in", 300, count=pool_size)
        wait_log(tmp / "service" / "service.log", "UMAP warm-up took", 300)
        yield {"url": url, "log": log, "tmp": tmp, "first_kernel_warm_s": first_warm,
               "pool_warm_s": time.monotonic() - started, "service_dir": tmp / "service"}
    finally:
        stop(process)
        from revdistill.service.client import ServiceClient

        ServiceClient(tmp / "service").shutdown()
        text = log.read_text(errors="replace")
        assert "Address already in use" not in text, "a kernel failed to bind its ports"


@pytest.fixture(scope="module")
def bench_server(tmp_path_factory):
    """Voila serving tests/dashboard/render_bench.py's page (no preheating: the size comes from the URL)."""
    import nbformat

    tmp = tmp_path_factory.mktemp("bench")
    cells = ["import sys; sys.path.insert(0, %r)\nfrom render_bench import build\npage = build()"
             % str(REPO / "tests" / "dashboard"), "page"]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(cell) for cell in cells])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp / "bench.ipynb")
    config = json.loads((REPO / "notebooks" / "voila.json").read_text())
    config["VoilaConfiguration"].update(preheat_kernel=False, show_tracebacks=True)
    (tmp / "voila.json").write_text(json.dumps(config))
    env = dict(os.environ, REVDISTILL_CACHE=str(tmp / "cache"))
    process, url = start_voila("bench.ipynb", tmp, env, tmp / "voila.log")
    try:
        yield {"url": url, "log": tmp / "voila.log"}
    finally:
        stop(process)


@pytest.fixture(scope="module")
def browser():
    with playwright_sync.sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=str(CHROMIUM), args=FLAGS, headless=True)
        yield instance
        instance.close()


# -- page helpers -------------------------------------------------------------------------------
JS_FIGURE = """([panel, trace, plot]) => {
  const gd = document.querySelectorAll('.rd-panel')[panel].querySelectorAll('.js-plotly-plot')[plot];
  if (!gd || !gd.data || !gd.data[trace]) return null;
  const x = gd.data[trace].x || [];
  return {n: x.length, head: Array.from(x).slice(0, 3).map(Number),
          sum: Array.from(x).reduce((a, b) => a + Number(b), 0)};
}"""

JS_HEATMAP_CELLS = """([panel, trace]) => {
  // filled cells of a heatmap as plotly drew it (its full data: typed-array specs decoded)
  const gd = document.querySelectorAll('.rd-panel')[panel].querySelector('.js-plotly-plot');
  if (!gd || !gd._fullData || !gd._fullData[trace] || !gd._fullData[trace].z) return null;
  const z = gd._fullData[trace].z;
  let cells = 0;
  for (const row of Array.from(z)) for (const v of Array.from(row)) if (v !== null && !Number.isNaN(Number(v))) cells++;
  return {cells, rows: z.length, type: gd._fullData[trace].type};
}"""

JS_SLIDER_LATENCY = """async ([key, expected]) => {
  // live: the quality figure's k marker redrawn; view: the PCA scatter of prefix(k) redrawn
  const plots = document.querySelectorAll('.rd-panel')[2].querySelectorAll('.js-plotly-plot');
  const live = plots[0], view = plots[1];
  const before = view.data[0].x;
  const handle = document.querySelector('.rd-slider .noUi-handle');
  const frame = () => new Promise(r => requestAnimationFrame(() => r()));
  const t0 = performance.now();
  let liveMs = null;
  handle.dispatchEvent(new KeyboardEvent('keydown', {key: key, bubbles: true, cancelable: true}));
  while (liveMs === null || view.data[0].x === before) {
    if (performance.now() - t0 > 10000) return [-1, -1];
    if (liveMs === null && live.data[4].x[0] === expected) { await frame(); liveMs = performance.now() - t0; }
    else await frame();
  }
  await frame();
  return [liveMs, performance.now() - t0];
}"""

JS_LIVE_LATENCY = """async ([key, expected]) => {
  // only the live marker: a round trip through the kernel while it works on something else
  const live = document.querySelectorAll('.rd-panel')[2].querySelectorAll('.js-plotly-plot')[0];
  const handle = document.querySelector('.rd-slider .noUi-handle');
  const t0 = performance.now();
  handle.dispatchEvent(new KeyboardEvent('keydown', {key: key, bubbles: true, cancelable: true}));
  while (live.data[4].x[0] !== expected) {
    if (performance.now() - t0 > 20000) return -1;
    await new Promise(r => requestAnimationFrame(() => r()));
  }
  return performance.now() - t0;
}"""


def figure(page, panel: str, trace: int, plot: int = 0):
    return page.evaluate(JS_FIGURE, [PANEL[panel], trace, plot])


def wait_figure_change(page, panel: str, trace: int, before, timeout: float = 60.0, plot: int = 0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = figure(page, panel, trace, plot)
        if now is not None and now != before and now["n"] > 0:
            return now
        time.sleep(0.05)
    raise AssertionError(f"{panel} figure trace {trace} did not change from {before} in {timeout} s")


def wait_text(page, selector: str, text: str, timeout: float):
    page.wait_for_function(
        "([s, t]) => { const e = document.querySelector(s); return e && e.innerText.includes(t); }",
        arg=[selector, text], timeout=timeout * 1000)


def wait_ready(page, timeout: float, text: str = "Ready.") -> None:
    """Wait until the models panel's status shows ``text``, or an error shows (then fail with it)."""
    page.wait_for_function(
        """(t) => { const s = document.querySelector('.rd-status'); const e = document.querySelector('.rd-error');
                   return (s && s.innerText.includes(t)) || (e && getComputedStyle(e).display !== 'none'); }""",
        arg=text, timeout=timeout * 1000)
    assert_no_error(page)


def assert_no_error(page) -> None:
    shown = page.evaluate("() => { const e = document.querySelector('.rd-error');"
                          " return e && getComputedStyle(e).display !== 'none' ? e.innerText : ''; }")
    assert not shown, f"the dashboard shows an error: {shown}"


def load(page, url: str) -> float:
    start = time.perf_counter()
    page.goto(url, wait_until="commit")
    page.wait_for_selector(".rd-compute:not([disabled])", timeout=120_000)
    page.wait_for_function("document.querySelectorAll('.rd-panel .js-plotly-plot').length >= 4",
                           timeout=120_000)
    return time.perf_counter() - start


def leave(page) -> None:
    """Navigate away first so Voila gets the kernel-shutdown request, then close (voila#1458)."""
    page.goto("about:blank")
    page.close()


def shot(page, name: str, panel: str | None = None) -> None:
    """Screenshot of the page's top, or of one panel (Voila scrolls inside a container, so a
    full-page screenshot would show only the first screen)."""
    ARTIFACTS.mkdir(exist_ok=True)
    if panel is None:
        page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    else:
        page.locator(".rd-panel").nth(PANEL[panel]).screenshot(path=str(ARTIFACTS / f"{name}.png"))


def scroll_to(page, panel: str) -> None:
    page.evaluate("(i) => document.querySelectorAll('.rd-panel')[i].scrollIntoView()", PANEL[panel])


# -- the dashboard ------------------------------------------------------------------------------
def test_dashboard_in_browser(server, browser, tmp_path, remote):
    timings: dict[str, object] = {"server_start_to_first_warm_kernel_s": round(server["first_kernel_warm_s"], 2),
                                  "server_start_to_warm_pool_s": round(server["pool_warm_s"], 2)}
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        timings["page_load_to_interactive_s"] = round(load(page, server["url"]), 2)
        shot(page, "01-loaded")
        _weights_and_assays(page, remote, timings)
        _upload_compute_and_views(page, tmp_path, timings)
        _fetch_assay_compute_and_landscape(page, timings)
        leave(page)
        _four_visitors(browser, server["url"], timings)
    finally:
        record("dashboard", timings)
        print("\ndashboard timings:", json.dumps(timings, indent=2))


def _weights_and_assays(page, remote, timings: dict[str, object]) -> None:
    """Offline catalogue of 217 assays; ESM-2 8M downloaded from the (local) server enables its checkbox."""
    assert "Demo mode" in page.inner_text(".rd-banner")
    assert page.is_disabled(".rd-model-15B input"), "15B must be greyed out without weights"
    assert "weights not found" in page.inner_text(".rd-panel >> nth=0")
    page.get_by_text("ProteinGym assay", exact=True).click()
    page.wait_for_selector(".rd-assay-list select", state="visible")
    assert page.locator(".rd-assay-list select option").count() == 217
    assert "217 of 217 assays" in page.inner_text(".rd-assay-count")
    assert "0 with data on disk" in page.inner_text(".rd-assay-count")
    shot(page, "02-assay-browser", "models")
    assert page.is_disabled(".rd-model-8M input")
    page.wait_for_selector(".rd-download-8M:not([disabled])", timeout=30_000)  # the server answered
    start = time.perf_counter()
    page.click(".rd-download-8M")
    page.wait_for_selector(".rd-model-8M input:not([disabled])", timeout=120_000)
    timings["download_8M_s"] = round(time.perf_counter() - start, 2)
    timings["download_8M_bytes"] = remote["model_bytes"]
    assert "on disk" in page.inner_text(".rd-weights-8M")
    assert not page.inner_text(".rd-panel >> nth=0").count("Demo mode")  # a real size is there now
    assert_no_error(page)
    shot(page, "03-downloaded", "models")


def _upload_compute_and_views(page, tmp_path, timings: dict[str, object]) -> None:
    csv_path = write_dms_csv(tmp_path / "PIN1_synthetic_5000.csv", n_variants=N_VARIANTS)
    page.click(".rd-model-tiny-48 input")  # untick and tick again
    assert not page.is_checked(".rd-model-tiny-48 input")
    page.click(".rd-model-tiny-48 input")
    page.get_by_text("Upload FASTA / DMS CSV").click()
    with page.expect_file_chooser() as chooser:
        page.click(".rd-upload")
    chooser.value.set_files(str(csv_path))
    page.wait_for_function("document.querySelector('.rd-upload').innerText.includes('(1)')")
    wait_text(page, ".rd-estimate", f"{N_SINGLES} sequences", 60)
    before = {name: figure(page, name, 0) for name in ("decomposition", "slicer")}
    slicer_scatter = figure(page, "slicer", 0, plot=1)
    start = time.perf_counter()
    page.click(".rd-compute")
    wait_ready(page, 300)
    timings["compute_upload_s"] = round(time.perf_counter() - start, 2)
    for name in ("decomposition", "slicer"):
        wait_figure_change(page, name, 0, before[name])
    assert wait_figure_change(page, "slicer", 0, slicer_scatter, plot=1)["n"] == N_SINGLES
    assert wait_figure_change(page, "umap", 0, None)["n"] == N_SINGLES
    assert wait_figure_change(page, "scaling", 0, None)["n"] > 0
    shot(page, "04-computed")
    shot(page, "04-decomposition", "decomposition")

    scroll_to(page, "slicer")  # alternate Home / End (each swaps the whole view) and single steps
    live_ms, view_ms = [], []
    for key, expected in [("Home", 1), ("End", 64), ("Home", 1), ("End", 64), ("ArrowLeft", 63),
                          ("Home", 1), ("End", 64), ("Home", 1), ("End", 64), ("Home", 1)]:
        live, view = page.evaluate(JS_SLIDER_LATENCY, [key, expected])
        assert live > 0 and view > 0, f"slider key {key} did not redraw"
        live_ms.append(round(live, 1))
        view_ms.append(round(view, 1))
        page.wait_for_timeout(300)  # a person pressing keys; lets the throttled view settle
    timings["slider_redraw_median_ms"] = float(np.median(live_ms))
    timings[f"slider_view_{N_SINGLES}_points_median_ms"] = float(np.median(view_ms))
    shot(page, "05-slider", "slicer")
    assert_no_error(page)

    scroll_to(page, "umap")  # the block tiny-64 adds -> PCA at once; then a UMAP
    before_pca = figure(page, "umap", 0)
    start = time.perf_counter()
    page.select_option(".rd-subspace select", label="block tiny-64: dims 49–64 (what tiny-64 adds)")
    wait_figure_change(page, "umap", 0, before_pca, timeout=30)
    timings["subspace_pca_view_s"] = round(time.perf_counter() - start, 2)
    wait_text(page, ".rd-umap-engine", "ready", 240)  # warm-up ran in the preheated kernel
    before_umap = figure(page, "umap", 1)
    start = time.perf_counter()
    page.click(".rd-run-umap")
    assert wait_figure_change(page, "umap", 1, before_umap, timeout=120)["n"] == N_SINGLES
    timings[f"umap_{N_SINGLES}_points_s"] = round(time.perf_counter() - start, 2)
    assert_no_error(page)
    shot(page, "06-umap", "umap")
    scroll_to(page, "scaling")
    page.wait_for_selector("a[download='revdistill-results.csv']", state="attached", timeout=30_000)
    shot(page, "07-scaling", "scaling")


def _fetch_assay_compute_and_landscape(page, timings: dict[str, object]) -> None:
    """PIN1 picked in the browser, fetched from the local server and computed; the page answers meanwhile."""
    scroll_to(page, "models")
    page.get_by_text("ProteinGym assay", exact=True).click()
    page.fill(".rd-assay-query input", "PIN1")
    page.wait_for_function("document.querySelectorAll('.rd-assay-list select option').length === 1")
    page.select_option(".rd-assay-list select", index=0)
    wait_text(page, ".rd-assay-details", "not on disk", 30)
    wait_text(page, ".rd-estimate", "686 sequences", 30)  # the catalogue's count, before fetching
    start = time.perf_counter()
    page.click(".rd-compute")
    scroll_to(page, "slicer")
    during = [page.evaluate(JS_LIVE_LATENCY, [key, expected]) for key, expected in
              [("End", 64), ("Home", 1), ("End", 64), ("Home", 1)]]
    wait_ready(page, 300, text=f"{PIN1_ID}: {N_SINGLES} sequences")
    timings["fetch_and_compute_pin1_s"] = round(time.perf_counter() - start, 2)
    timings["slider_redraw_while_computing_ms"] = [round(value, 1) for value in during]
    assert all(value > 0 for value in during), f"the page froze while computing: {during}"
    assert "1 with data on disk" in page.inner_text(".rd-assay-count")
    scroll_to(page, "landscape")
    page.wait_for_function(f"(() => {{ const r = ({JS_HEATMAP_CELLS})([{PANEL['landscape']}, 0]); "
                           "return r && r.cells > 0; })()", timeout=60_000)
    cells = page.evaluate(JS_HEATMAP_CELLS, [PANEL["landscape"], 0])
    assert cells == {"cells": N_SINGLES, "rows": 20, "type": "heatmap"}  # one per (position, amino acid)
    assert "741 measured (position, amino acid) cells" in page.inner_text(".rd-landscape-status")
    assert_no_error(page)
    page.set_viewport_size({"width": 1280, "height": 1500})  # the whole panel, heatmaps and curve
    shot(page, "08-landscape", "landscape")
    page.set_viewport_size({"width": 1280, "height": 1000})


def _four_visitors(browser, url: str, timings: dict[str, object]) -> None:
    pages = [browser.new_page(viewport={"width": 1280, "height": 1000}) for _ in range(4)]
    start = time.perf_counter()
    for visitor in pages:
        visitor.goto(url, wait_until="commit")
    ready = []
    for visitor in pages:
        visitor.wait_for_selector(".rd-compute:not([disabled])", timeout=180_000)
        ready.append(round(time.perf_counter() - start, 2))
    for visitor in pages:
        visitor.click(".rd-compute")
    for visitor in pages:
        wait_ready(visitor, 240)
    timings["four_visitors_interactive_s"] = ready
    timings["four_visitors_all_computed_s"] = round(time.perf_counter() - start, 2)
    shot(pages[-1], "09-fourth-visitor")
    for visitor in pages:
        leave(visitor)


# -- the views at every size ----------------------------------------------------------------------
DRAW_HOOK = """(() => {
  // Timestamp of the last drawing anywhere on the page: WebGL draw calls, canvas painting, DOM changes.
  window.__draws = 0; window.__lastDraw = 0;
  const mark = () => { window.__draws++; window.__lastDraw = performance.now(); };
  const wrap = (proto, name) => { const f = proto && proto[name]; if (!f) return;
    proto[name] = function(...a) { mark(); return f.apply(this, a); }; };
  for (const P of [window.WebGLRenderingContext && WebGLRenderingContext.prototype,
                   window.WebGL2RenderingContext && WebGL2RenderingContext.prototype]) {
    for (const n of ['drawArrays', 'drawElements', 'drawArraysInstanced', 'drawElementsInstanced']) wrap(P, n);
  }
  const getExtension = WebGLRenderingContext.prototype.getExtension;
  WebGLRenderingContext.prototype.getExtension = function(name) {
    const ext = getExtension.call(this, name);
    if (ext && name === 'ANGLE_instanced_arrays' && !ext.__hooked) {
      ext.__hooked = true; wrap(ext, 'drawArraysInstancedANGLE'); wrap(ext, 'drawElementsInstancedANGLE');
    }
    return ext;
  };
  wrap(CanvasRenderingContext2D.prototype, 'putImageData'); wrap(CanvasRenderingContext2D.prototype, 'drawImage');
  new MutationObserver(mark).observe(document, {subtree: true, childList: true, attributes: true, characterData: true});
})();"""

JS_ACT = """async ([action, target, plot, quiet]) => {
  // Press a key on the slider or click a button, then wait until plot `plot` of the page shows new data
  // (its first trace's x, or a new plot) and nothing has been drawn for `quiet` ms; return the ms from the
  // action to the last drawing.
  const plots = () => document.querySelectorAll('.rd-bench .js-plotly-plot');
  const data = () => { const gd = plots()[plot]; return gd && gd.data && gd.data[0] ? gd.data[0].x : null; };
  const before = data();
  const t0 = performance.now();
  if (action === 'key') {
    document.querySelector('.rd-bench-slider .noUi-handle').dispatchEvent(
      new KeyboardEvent('keydown', {key: target, bubbles: true, cancelable: true}));
  } else {
    document.querySelector(target).click();
  }
  while (true) {
    await new Promise(r => setTimeout(r, 20));
    const now = performance.now();
    if (data() !== before && data() !== null && window.__lastDraw > t0 && now - window.__lastDraw > quiet) {
      return window.__lastDraw - t0;
    }
    if (now - t0 > 120000) return -1;
  }
}"""

JS_QUIET = """async (quiet) => {
  while (performance.now() - window.__lastDraw < quiet) await new Promise(r => setTimeout(r, 25));
}"""


def test_views_at_every_size(bench_server, browser):
    """Each view at every size of :data:`SIZES`: page interactive, PCA view, slider redraw, landscape, UMAP."""
    sizes: dict[str, object] = {}
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        for n in SIZES:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.add_init_script(DRAW_HOOK)
            start = time.perf_counter()
            page.goto(f"{bench_server['url']}?n={n}", wait_until="commit")
            page.wait_for_selector(".rd-bench-slider .noUi-handle", timeout=300_000)
            page.wait_for_function("document.querySelectorAll('.rd-bench .js-plotly-plot').length >= 2",
                                   timeout=300_000)
            page.evaluate(JS_QUIET, 500)
            result: dict[str, object] = {"page_interactive_s": round(time.perf_counter() - start - 0.5, 2),
                                         "renderer": page.inner_text(".rd-bench-status").split("renderer ")[-1]}
            redraws = []
            for key in ("Home", "End", "Home", "End", "Home"):
                redraws.append(round(page.evaluate(JS_ACT, ["key", key, 0, 300])))
                page.wait_for_timeout(150)
            assert min(redraws) > 0, f"the PCA view of {n} points did not redraw: {redraws}"
            result["slider_redraw_ms"] = redraws
            result["slider_redraw_median_ms"] = float(np.median(redraws))
            result["pca_view_s"] = round(page.evaluate(JS_ACT, ["click", ".rd-bench-pca", 1, 400]) / 1000, 3)
            result["landscape_s"] = round(page.evaluate(JS_ACT, ["click", ".rd-bench-landscape", 2, 800]) / 1000, 3)
            result["landscape_cells"] = int(page.inner_text(".rd-bench-status").split("landscape of ")[-1].split()[0])
            if n in UMAP_SIZES:  # warm numba first (the dashboard does it when a kernel starts), then time
                start = time.perf_counter()
                page.click(".rd-bench-umap")
                wait_text(page, ".rd-bench-status", "UMAP done", 600)
                result["umap_with_page_s"] = round(time.perf_counter() - start, 2)
                status = page.inner_text(".rd-bench-status")
                result["umap_s"] = float(status.split("UMAP done in ")[-1].split(" s")[0])
                result["umap_note"] = status.split(" s", 1)[-1].strip(" ·()")
            page.screenshot(path=str(ARTIFACTS / f"10-views-{n}.png"), full_page=False)
            sizes[str(n)] = result
            print(n, result, flush=True)
            page.goto("about:blank")
            page.close()
    finally:
        record("views_by_size", sizes)
