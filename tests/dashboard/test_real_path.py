"""The real path without a terminal, in-process: ESM-2 weights downloaded from the app, a ProteinGym
assay picked in the browser, fetched from a (local) server and computed, its landscape drawn, and the
time estimate and quick-look subsample before Compute.

Work runs inline (``background=False``); the servers are tests/http_servers.py on 127.0.0.1.
"""
from __future__ import annotations

import datetime
import json

import numpy as np
import pytest

from http_servers import refused_url, serve_checkpoint, serve_directory
from revdistill.dashboard.state import DashboardOptions
from revdistill.views.landscape import decode_array
from synthetic_dms import PIN1, PIN1_ID, write_dms_csv, write_pin1_zip


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")  # shared: the tiny ladder is fitted once for the module


def make_app(tmp_path, cache, **options):
    from revdistill.dashboard import build_app

    defaults = {"cache_dir": cache, "background": False, "cpu_threads": None,
                "weights_dir": tmp_path / "weights", "proteingym_dir": tmp_path / "proteingym"}
    (tmp_path / "proteingym").mkdir(exist_ok=True)
    return build_app(DashboardOptions(**{**defaults, **options}), warm_up=False)


# -- weights ------------------------------------------------------------------------------------------
def test_download_enables_the_checkbox(tmp_path, cache, monkeypatch):
    with serve_directory(tmp_path / "server") as server:
        serve_checkpoint(server, "8M")
        monkeypatch.setenv("REVDISTILL_WEIGHTS_URL", server.url)
        app = make_app(tmp_path, cache)
        weights, box = app.models.weights, app.models.checkboxes["8M"]
        weights.online_check.join(10)
        assert weights.offline is None and not weights.buttons["8M"].disabled
        assert box.disabled and "weights not found" in app.models.reasons["8M"].value
        assert "Demo mode" in app.models.banner.value and "Download" in app.models.banner.value
        assert "MB" in weights.labels["8M"].value
        weights.buttons["8M"].click()
        assert app.state.errors == []
        assert (tmp_path / "weights" / "esm2_t6_8M_UR50D.pt").is_file()
        assert not box.disabled and weights.bars["8M"].bar_style == "success"
        assert weights.buttons["8M"].layout.display == "none" and "on disk" in weights.labels["8M"].value
        assert app.models.banner.value == ""  # a real size is there: no demo banner
        assert any(r["path"].endswith("esm2_t6_8M_UR50D.pt") for r in server.requests)


def test_offline_buttons_say_why(tmp_path, cache, monkeypatch):
    monkeypatch.setenv("REVDISTILL_WEIGHTS_URL", refused_url())
    app = make_app(tmp_path, cache)
    weights = app.models.weights
    weights.online_check.join(10)
    assert weights.offline and "connection refused" in weights.offline
    assert weights.buttons["35M"].disabled and "offline" in weights.buttons["35M"].tooltip
    with pytest.raises(RuntimeError, match="cannot download ESM-2 35M"):
        weights.download("35M")


# -- assays ------------------------------------------------------------------------------------------
def test_browser_lists_every_assay_offline_and_filters_and_sorts(tmp_path, cache):
    app = make_app(tmp_path, cache)
    browser = app.models.browser
    assert len(browser.table.options) == 217 and "217 of 217 assays" in browser.count.value
    assert "0 with data on disk" in browser.count.value
    browser.query.value = "pin1 stability"
    assert [value for _, value in browser.table.options] == [PIN1_ID]
    browser.query.value = ""
    browser.sort.value = ("singles", True)
    singles = [int(browser.row(value)["singles"]) for _, value in browser.table.options]
    assert singles == sorted(singles, reverse=True) and singles[0] == 16897
    label = browser.table.options[0][0]
    assert " " not in label and "16897" in label  # non-breaking spaces keep the columns in a <select>
    browser.table.value = PIN1_ID
    assert "686 single" in browser.details.value and "not on disk" in browser.details.value
    app.models.source.value = "proteingym"
    assert "686 sequences" in app.models.estimate.value


def test_assay_fetched_from_a_server_computes_and_draws_its_landscape(tmp_path, cache, monkeypatch):
    with serve_directory(tmp_path / "server") as server:
        write_pin1_zip(server.root)
        monkeypatch.setenv("REVDISTILL_PROTEINGYM_URL", server.url)
        app = make_app(tmp_path, cache)
        models = app.models
        models.source.value = "proteingym"
        models.browser.query.value = "PIN1"
        models.browser.table.value = PIN1_ID
        models.on_compute()
    assert app.state.errors == [], app.state.errors
    assert (tmp_path / "proteingym" / "cv_folds_singles_substitutions" / f"{PIN1_ID}.csv").is_file()
    assert models.browser.row(PIN1_ID)["local"] and "1 with data on disk" in models.browser.count.value
    analysis = app.state.analysis
    assert analysis.task.name == PIN1_ID and len(analysis.task) == 741
    panel = app.landscape
    pairs = analysis.task.table.groupby(["position", "mutated_aa"]).ngroups
    z = decode_array(panel.figure.data[0].z)
    assert z.shape == (20, len(PIN1)) and int(np.isfinite(z).sum()) == pairs == panel.landscape.n_cells
    assert panel.representation.value == ("nested", "rd", "tiny-64", 64)
    assert panel.compare.value == ("nested", "nested", "tiny-48", 48)
    for dropdown in (panel.scheme, panel.representation, panel.compare, app.umap.subspace):  # the browser shows
        assert dropdown.options[dropdown.index][1] == dropdown.value  # the index: it must follow the value
    key = (panel.scheme.value, *panel.representation.value)
    assert np.nanmax(np.abs(panel.landscape.prediction)) > 0
    assert set(decode_array(panel.figure.data[1].z)[np.isfinite(z)]) <= set(
        analysis.predictions[key])  # the experiment's own predictions, nothing refitted
    panel.scheme.value = "fold_contiguous_5"
    assert app.state.errors == [] and "contiguous" in panel.figure.layout.annotations[-1].text
    assert "0 residues to embed (741 already stored)" in models.estimate.value


def test_landscape_says_a_protein_set_has_none(tmp_path, cache):
    app = make_app(tmp_path, cache)
    app.models.on_compute()  # the demo protein set
    assert app.landscape.figure is None and "needs a DMS assay" in app.landscape.message.value
    assert app.landscape.representation.disabled


# -- estimate and subsample --------------------------------------------------------------------------
def test_estimate_uses_a_cached_calibration(tmp_path, cache):
    app = make_app(tmp_path, cache)
    text = app.models.estimate.value
    assert "30 sequences" in text and "residues/s measured for tiny-32 + tiny-48 + tiny-64" in text
    files = list((cache / "calibration").glob("speed-*.json"))
    assert files and json.loads(files[0].read_text())["residues_per_s"] > 0


def test_subsample_runs_through_the_same_pipeline_and_is_labelled(tmp_path, cache):
    app = make_app(tmp_path, cache)
    models = app.models
    csv = write_dms_csv(tmp_path / "PIN1_synthetic.csv", n_variants=741)
    models.source.value = "upload"
    models.upload.value = ({"name": csv.name, "type": "text/csv", "size": csv.stat().st_size,
                            "content": memoryview(csv.read_bytes()),
                            "last_modified": datetime.datetime.now(datetime.timezone.utc)},)
    models.subsample.value, models.subsample_size.value = True, 300
    assert "300 sequences" in models.estimate.value
    messages = []
    shown = models._set_progress
    models._set_progress = lambda fraction, message: (messages.append(message), shown(fraction, message))
    models.on_compute()
    assert any("elapsed" in m and "left" in m for m in messages), messages  # progress with an ETA
    assert app.state.errors == []
    analysis = app.state.analysis
    assert len(analysis.task) == 300 and "seeded subsample: 300 of 741 variants, seed 0" in analysis.task.name
    assert "seeded subsample" in app.slicer.view.note and "seeded subsample" in app.umap.view.note
    assert "seeded subsample" in app.landscape.figure.layout.annotations[-1].text
    assert "seeded subsample" in analysis.caption() and "seeded subsample" in app.scaling.size_figure.layout.title.text
    assert set(analysis.table["n_variants"]) == {300}
