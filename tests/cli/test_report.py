"""``revdistill report``: one self-contained HTML page of a real (tiny-family) results table, offline."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from conftest import KENNOUCHE, PIN1, TINY
from revdistill.cli import main
from revdistill.experiment.paired import read_summary, summary_path
from revdistill.views.report import load_results

pytestmark = pytest.mark.slow  # one tiny benchmark of two assays (~25 s on 2 cores), shared by the module

#: A reference to anything outside the page: a script/link/image source, a CSS import or url().
EXTERNAL = re.compile(r"""(?:\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//)|(?:@import)"""
                      r"""|(?:url\(\s*["']?\s*(?:https?:)?//)""", re.IGNORECASE)


@pytest.fixture(scope="module")
def results(tiny_cache, proteingym_dir, tmp_path_factory):
    """``revdistill proteingym`` on a quarter of PIN1's and Kennouche's singles (tiny models, nested fit)."""
    folder = tmp_path_factory.mktemp("report")
    paths = []
    for name in (PIN1, KENNOUCHE):
        frame = pd.read_csv(proteingym_dir / "assays" / f"{name}.csv")
        path = folder / f"{name}.csv"
        frame[~frame["mutant"].str.contains(":")].iloc[::4].to_csv(path, index=False)
        paths.append(str(path))
    out = folder / "run.csv"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REVDISTILL_CACHE", str(tiny_cache))
        assert main(["proteingym", *paths, "--models", ",".join(TINY), "--out", str(out), "--data-dir",
                     str(proteingym_dir), "--store", str(folder / "store.h5"), "--n-bootstrap", "200"]) == 0
    return out


@pytest.fixture(scope="module")
def report(results, tiny_cache, proteingym_dir):
    out = results.with_name("run.report.html")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REVDISTILL_CACHE", str(tiny_cache))
        assert main(["report", str(results), "--data-dir", str(proteingym_dir), "--n-bootstrap", "200"]) == 0
    return out


def test_report_is_one_self_contained_page(report, results, proteingym_dir):
    import plotly.offline

    page = report.read_text(encoding="utf-8")
    bundle = plotly.offline.get_plotlyjs()  # inlined verbatim; its own attribution links are never fetched
    assert page.startswith("<!DOCTYPE html>") and page.count(bundle) == 1
    assert EXTERNAL.search(page.replace(bundle, "")) is None
    outside = page.replace(bundle, "")
    assert outside.count("<script") == 4 and outside.count("Plotly.newPlot") == 2  # plotly.js, 2 figures, sorting
    for text in ("Paired differences", "RD − ESM-2", "RD − naive", "RD prefix − largest ESM-2 truncated",
                 "class='sortable per-assay'", PIN1, KENNOUCHE, "ladder corpus", "IncrementalPCA", "131,072",
                 "truncates at 1022", "generated", "fit on nested", str(summary_path(results)),
                 "Summary_performance_DMS_substitutions_Spearman.csv", "protocol p-", "rdl-"):
        assert text in page, text
    summary = read_summary(summary_path(results))
    row = summary[(summary["aggregation"] == "proteingym") & (summary["comparison"] == "rd-esm2")].iloc[-1]
    assert f"{row['delta']:.3f}" in page


def test_paired_differences_are_recomputed_the_same_without_the_summary_file(results, tmp_path):
    copy = tmp_path / "copy.csv"
    copy.write_bytes(results.read_bytes())
    loaded = load_results(copy, n_bootstrap=200)
    assert loaded.sources["paired"] == "recomputed from the table"
    written = read_summary(summary_path(results))
    pd.testing.assert_frame_equal(loaded.paired.reset_index(drop=True), written, check_dtype=False, rtol=1e-12)
    assert set(loaded.summary["n_assays"]) == {2} and loaded.assays == [PIN1, KENNOUCHE]


def test_report_errors_name_the_file(results, tmp_path, capsys):
    other = tmp_path / "other.csv"
    other.write_text("mutant,DMS_score\nA1C,0.5\n")
    assert main(["report", str(other)]) == 2
    assert re.search(r"other.csv is not a results table of `revdistill proteingym`: it lacks column",
                     capsys.readouterr().err)
    precious = tmp_path / "notes.html"
    precious.write_text("<html>mine</html>")
    assert main(["report", str(results), "--out", str(precious)]) == 2
    assert "exists and is not a report written by revdistill" in capsys.readouterr().err
    assert precious.read_text() == "<html>mine</html>"
    stale = tmp_path / "stale.csv"
    table = pd.read_csv(results)
    table.assign(protocol_id="p-0000000000").to_csv(stale, index=False)
    summary_path(stale).write_bytes(summary_path(results).read_bytes())
    assert main(["report", str(stale)]) == 2
    assert re.search(r"stale.summary.csv belongs to protocol\(s\) \['p-\w+'\], .*stale.csv to \['p-0000000000'\]",
                     capsys.readouterr().err)


@pytest.mark.browser
def test_report_renders_offline_in_chromium_and_sorts(report):
    from voila_server import CHROMIUM, CHROMIUM_FLAGS, require_chromium

    require_chromium()
    playwright_sync = pytest.importorskip("playwright.sync_api")
    outside = []
    with playwright_sync.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context(offline=True)
            page = context.new_page()
            page.on("request", lambda request: outside.append(request.url)
                    if not request.url.startswith(("file:", "data:", "blob:", "about:")) else None)
            page.goto(report.as_uri())
            page.wait_for_function("document.querySelectorAll('.js-plotly-plot').length === 2", timeout=60_000)
            traces = page.evaluate("Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => d.data.length)")
            assert len(traces) == 2 and min(traces) >= 4
            lower = page.evaluate("document.getElementById('figure-0').data.filter(t => t.yaxis === 'y2').length")
            assert lower >= 2  # the paired differences and their bands
            column = "document.querySelectorAll('table.per-assay tbody tr td:first-child')"
            header = page.locator("table.per-assay th").first
            header.click()
            ascending = page.evaluate(f"Array.from({column}).map(td => td.textContent)")
            header.click()
            descending = page.evaluate(f"Array.from({column}).map(td => td.textContent)")
            assert ascending == sorted([PIN1, KENNOUCHE], key=str.lower) and descending == ascending[::-1]
            numeric = page.locator("table.paired th", has_text="Δ Spearman")
            numeric.click()
            deltas = page.evaluate("Array.from(document.querySelectorAll('table.paired tbody tr td:nth-child(5)'))"
                                   ".map(td => parseFloat(td.getAttribute('data-value')))")
            assert deltas == sorted(deltas) and len(deltas) > 3 and np.isfinite(deltas).all()
        finally:
            browser.close()
    assert outside == []
