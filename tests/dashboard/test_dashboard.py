"""Dashboard builders driven in-process: set widget values, call handlers, check the figures changed.

Runs on the untrained tiny family (always available offline) and the bundled demo set, with the work
done inline (``background=False``) so every handler finishes before the next line.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from numpy.testing import assert_allclose

from revdistill.dashboard.state import DashboardOptions, DashboardState

from synthetic_dms import write_dms_csv  # shared generator of the synthetic PIN1 CSV (tests/ is on pythonpath)

REPO = Path(__file__).resolve().parents[2]
PROTEINGYM = REPO.parent / "shared" / "data" / "proteingym"
PIN1 = "PIN1_HUMAN_Tsuboyama_2023_1I6C"


@pytest.fixture(scope="module")
def options(tmp_path_factory) -> DashboardOptions:
    folder = tmp_path_factory.mktemp("dashboard")
    return DashboardOptions(cache_dir=folder, proteingym_dir=PROTEINGYM if PROTEINGYM.is_dir() else None,
                            background=False, cpu_threads=None)


@pytest.fixture(scope="module")
def app(options):
    from revdistill.dashboard import build_app

    app = build_app(options, warm_up=False)
    app.models.on_compute()  # demo set, tiny family (the defaults here)
    assert app.state.errors == []
    return app


def trace_x(figure, index: int) -> np.ndarray:
    return np.asarray(figure.data[index].x if figure.data[index].x is not None else [], dtype=float)


# -- models & data --------------------------------------------------------------------------------
def test_real_models_greyed_with_reason_and_tiny_family_checked(app):
    from revdistill.esm.models.weights import weights_available

    boxes = app.models.checkboxes
    assert list(boxes)[:6] == ["8M", "35M", "150M", "650M", "3B", "15B"]
    for alias in ("8M", "15B"):
        if not weights_available(alias):
            assert boxes[alias].disabled and not boxes[alias].value
            reason = next(c.reason for c in app.models.choices if c.alias == alias)
            assert reason == "weights not found"
    if not weights_available("8M"):
        assert app.models.selected_models() == ("tiny-32", "tiny-48", "tiny-64")
        assert "untrained" in app.models.banner.value and "Download" in app.models.banner.value


def test_compute_publishes_an_analysis_and_fills_every_figure(app):
    analysis = app.state.analysis
    n = len(analysis.task)
    assert analysis.boundaries == (32, 48, 64)
    computed = app.state.compute.backend.context.analyses[analysis.key]  # the in-process service's own analysis
    assert np.array_equal(computed.nested.prefix(32), computed.task_result.pooled["tiny-32"])
    assert len(app.decomposition.figure.data[0].y) == 2  # two ladder steps
    assert len(trace_x(app.slicer.view_figure, 0)) == n
    assert len(trace_x(app.umap.figure, 0)) == n
    assert app.models.status.value.endswith("Ready.")
    assert app.models.progress.value == 1.0 and not app.models.compute.disabled
    assert "tiny-32 → tiny-48" in app.decomposition.table.value
    assert analysis.ladder.ladder_id in app.decomposition.table.value
    assert analysis.protocol_id == app.state.protocol.id
    assert analysis.protocol_id in app.scaling.caption.value  # the protocol is in the caption


def test_second_compute_reads_the_store_and_the_cached_ladder(app):
    before = app.state.analysis
    app.models.on_compute()
    after = app.state.analysis
    assert after is not before and after.ladder.ladder_id == before.ladder.ladder_id
    assert after.key == before.key  # the same request: the same analysis, computed once
    context = app.state.compute.backend.context
    assert context.computed["analysis"] == 1 and context.requests["analysis"] == 2
    pd.testing.assert_frame_equal(after.table, before.table)


# -- slicer -----------------------------------------------------------------------------------------
def test_slider_moves_the_marker_and_swaps_the_view(app):
    panel = app.slicer
    before = trace_x(panel.view_figure, 0).copy()
    panel.slider.value = 1
    assert list(panel.figure.data[4].x) == [1, 1]
    assert not np.allclose(trace_x(panel.view_figure, 0), before)
    assert "k = 1" in panel.readout.value


def test_view_redraws_are_throttled_inside_an_event_loop(app):
    """In a kernel (an event loop runs), slider moves within VIEW_INTERVAL_S coalesce into one
    scheduled redraw that shows the last k; the live marker follows every move."""
    import asyncio

    from revdistill.dashboard import slicer_panel

    panel = app.slicer
    views = panel.views

    async def drag() -> None:
        for k in (15, 22, 38, 56):
            panel.slider.value = k
            assert list(panel.figure.data[4].x) == [k, k]
        assert panel._view_timer is not None and panel._pending_view == 56
        await asyncio.sleep(slicer_panel.VIEW_INTERVAL_S + 0.1)

    panel.slider.value = 10  # outside a loop: shown at once
    asyncio.run(drag())
    assert panel._view_timer is None and panel._pending_view is None
    expected = views.views[views.grid_index(56)]
    assert_allclose(trace_x(panel.view_figure, 0), expected[0])


def test_slider_snaps_to_a_nearby_boundary_when_dragged(app):
    panel = app.slicer
    panel.slider.value = 10
    panel.slider.value = 47  # a jump landing one short of the tiny-48 boundary
    assert panel.slider.value == 48
    panel.slider.value = 47  # a single step is kept
    assert panel.slider.value == 47


@pytest.mark.parametrize("k, previous, expected", [(47, 20, 48), (47, 48, 47), (40, 20, 40), (63, 1, 64)])
def test_snap_to_boundary(k, previous, expected):
    from revdistill.dashboard.slicer_panel import snap_to_boundary

    assert snap_to_boundary(k, previous, (32, 48, 64)) == expected


def test_slicer_views_are_consistent(app):
    views = app.state.analysis.views
    assert set(views.boundaries) <= set(views.ks.tolist())
    assert views.views.shape == (len(views.ks), 2, len(app.state.analysis.task))
    assert views.cosine[-1] == pytest.approx(1.0)
    assert views.nn_agreement[-1] == pytest.approx(1.0)
    assert np.all(np.diff(views.cosine) >= -1e-12)


def test_slicer_probe_curve_is_the_experiments_summary(app):
    """The slicer shows the experiment's own nested/truncated numbers: no second probe."""
    from revdistill.dashboard.slicer_panel import probe_curve

    analysis = app.state.analysis
    dims, values = probe_curve(analysis.summary, "nested", analysis.ladder.fit_on)
    assert list(dims) == app.state.protocol.prefix_dims(analysis.boundaries)
    assert_allclose(app.slicer.figure.data[0].y, values)
    table = analysis.table
    per_scheme = table[(table.representation == "nested") & (table.fit_on == analysis.ladder.fit_on)]
    assert_allclose(per_scheme.groupby("dim")["spearman"].mean().to_numpy(), values)


# -- UMAP panel -------------------------------------------------------------------------------------
def test_switching_subspace_redraws_the_pca_view(app):
    panel = app.umap
    before = trace_x(panel.figure, 0).copy()
    panel.subspace.value = "block:tiny-64"
    assert not np.allclose(trace_x(panel.figure, 0), before)
    assert "16 dims" in panel.status.value


def test_colour_by_a_categorical_column_gets_labelled_ticks(app):
    from revdistill.dashboard.umap_panel import color_values

    colors, colorbar = color_values(app.state.analysis.task.table.assign(aa=["A", "C"] * 15), "aa")
    assert set(colors) == {0.0, 1.0} and colorbar["ticktext"] == ["A", "C"]
    app.umap.color.value = "length"
    assert_allclose(app.umap.figure.data[0].marker.color, app.state.analysis.task.table["length"])


# -- scaling panel ----------------------------------------------------------------------------------
def test_scaling_curves_and_exports(app):
    panel = app.scaling
    table = app.state.analysis.table
    assert set(table["representation"]) == {"esm2", "rd", "naive", "nested", "truncated"}
    assert set(table["scheme"]) == {"fold_random_5"}  # a protein set has no positions to fold by
    names = [trace.name for trace in panel.size_figure.data]
    assert names[:3] == ["ESM-2", "reverse-distilled", "naive concat+PCA"]
    assert len(panel.size_figure.data[0].x) == 3 and panel.size_figure.data[0].error_y.array is not None
    assert "revdistill-results.csv" in panel.downloads.value
    panel.on_prepare_html()
    assert "revdistill-scaling.html" in panel.downloads.value
    reference = panel.size_figure.data[3]
    assert list(reference.text)[:3] == ["8M", "35M", "150M"]
    paired = app.state.analysis.result.paired()
    lower = [trace for trace in panel.size_figure.data if trace.yaxis == "y2"]
    rd_esm2 = paired[paired["comparison"] == "rd-esm2"].sort_values("dim")
    assert [trace.name for trace in lower][1::2] == ["RD − ESM-2", "RD − naive"]
    assert_allclose(lower[1].y, rd_esm2["delta"]) and lower[1].y[0] == 0  # level 1 is ESM-2 itself
    assert "revdistill-paired.csv" in panel.downloads.value


def test_load_results_shows_a_finished_run(app, options, tmp_path):
    from datetime import datetime, timezone

    from revdistill.experiment.paired import write_summary

    panel, errors = app.scaling, app.state.errors
    analysis = app.state.analysis
    table = pd.concat([analysis.result.table, analysis.result.table.assign(assay="copy", uniprot_id="copy")])
    out = Path(options.cache_dir) / "cluster" / "run.csv"
    out.parent.mkdir(exist_ok=True)
    table.to_csv(out, index=False)
    write_summary(out, table, n_bootstrap=50)
    panel.results_path.value = str(out)
    panel.load_button.click()
    assert errors == [] and panel.loaded.name == "run.csv" and panel.analysis is None
    assert "Loaded run.csv" in panel.status.value and "run.summary.csv" in panel.status.value
    lower = [trace for trace in panel.prefix_figure.data if trace.yaxis == "y2"]
    assert lower[-1].name == "RD prefix − largest ESM-2 truncated" and len(lower[-1].y) > 3
    assert "ladder corpus" in panel.caption.value and "Download paired differences" in panel.downloads.value
    panel.on_prepare_html()
    assert "revdistill-scaling.html" in panel.downloads.value
    outside = tmp_path / "run.csv"
    table.to_csv(outside, index=False)
    panel.results_path.value = str(outside)
    panel.load_button.click()
    assert len(errors) == 1 and "can be opened here; upload the CSV instead" in errors[0].message
    errors.clear()
    panel.results_upload.value = ({"name": "up.csv", "content": memoryview(outside.read_bytes()), "size": 1,
                                   "type": "text/csv", "last_modified": datetime.now(timezone.utc)},)
    panel.load_button.click()
    assert errors == [] and panel.loaded.name == "up.csv" and panel.loaded.sources["paired"].startswith("recomputed")
    panel.results_upload.value = ()


# -- errors are shown in the app --------------------------------------------------------------------
def test_callback_errors_appear_in_the_error_box(options):
    from revdistill.dashboard import build_app

    app = build_app(options, warm_up=False)
    app.models.checkboxes["tiny-48"].value = False
    app.models.checkboxes["tiny-64"].value = False
    app.models.compute.click()
    assert app.errors.visible
    assert "at least two model sizes" in app.errors.message.value
    assert "Traceback" not in app.errors.message.value
    app.errors.dismiss.click()
    assert not app.errors.visible


def test_unknown_assay_and_oversized_upload_are_reported(options):
    from revdistill.dashboard import build_app

    app = build_app(options, warm_up=False)
    if options.proteingym_dir is not None:
        app.models.source.value = "proteingym"
        app.models.browser.query.value = "PIN1_HUMAN_Tsuboyama"  # typed, not picked from the list
        app.models.compute.click()
        assert "PIN1_HUMAN_Tsuboyama_2023_1I6C" in app.state.errors[-1].message  # close match offered
    from revdistill.dashboard.data import uploaded_task
    from revdistill.experiment.protocol import Protocol

    with pytest.raises(ValueError, match="upload limit"):
        uploaded_task("big.csv", b"x" * 101, max_bytes=100, protocol=Protocol())
    app.models.source.value = "upload"
    app.models.compute.click()
    assert "choose a FASTA or DMS CSV file" in app.state.errors[-1].message


# -- data sources ------------------------------------------------------------------------------------
def test_uploaded_fasta_and_dms_csv(tmp_path):
    from revdistill.dashboard.data import uploaded_task
    from revdistill.experiment.protocol import Protocol

    text = "".join(f">p{i} protein {i}\n{'mktayiakqr'[i % 5:] * 3}\n" for i in range(12)).encode()
    fasta = uploaded_task("twelve.fasta", text, max_bytes=10_000, protocol=Protocol())
    assert fasta.records[0] == ("twelve:p0", "MKTAYIAKQR" * 3)  # lowercase accepted, upper-cased
    assert fasta.target.startswith("hydrophobicity") and np.isfinite(fasta.scores).all()
    assert np.ptp(fasta.scores) > 0  # not the silent 0.0 a lowercase upload used to get
    csv = write_dms_csv(tmp_path / "PIN1_synthetic.csv", n_variants=900)
    dms = uploaded_task(csv.name, csv.read_bytes(), max_bytes=10**7, protocol=Protocol())
    singles = (~pd.read_csv(csv)["mutant"].str.contains(":")).sum()
    assert len(dms) == singles < 900 and dms.target == "DMS_score"  # the protocol keeps singles only
    assert {"mutant", "position", "mutated_aa", "score"} <= set(dms.table.columns)
    with pytest.raises(ValueError, match="mutant"):
        uploaded_task("x.csv", b"a,b\n1,2\n", max_bytes=100, protocol=Protocol())


def test_proteingym_assay_by_id(proteingym_dir):
    from revdistill.dashboard.data import color_options, proteingym_task
    from revdistill.experiment.protocol import Protocol

    task = proteingym_task(PIN1, Protocol(), proteingym_dir)
    assert len(task) == 686 and set(task.folds) == {"fold_random_5", "fold_modulo_5", "fold_contiguous_5"}
    assert color_options(task)[:3] == ["score", "position", "mutated_aa"]


def test_state_guard_reports_and_run_task_inline():
    state = DashboardState(DashboardOptions(background=False))
    seen = []
    state.on_error(seen.append)
    state.guard(lambda: 1 / 0, "divide")()
    assert seen[0].where == "divide" and "ZeroDivisionError" in seen[0].message
    results = []
    state.run_task("work", lambda: 41 + 1, results.append, finally_=lambda: results.append("end"))
    assert results == [42, "end"]


def test_importing_the_package_is_light():
    code = ("import sys, revdistill.dashboard, revdistill.views.projection; "
            "print(any(m in sys.modules for m in ('plotly', 'ipywidgets', 'umap')))")
    import subprocess

    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_module_files_exist_for_every_panel():
    for name in ("models_panel", "decomposition_panel", "slicer_panel", "umap_panel", "scaling_panel",
                 "landscape_panel", "app", "analysis"):
        assert importlib.util.find_spec(f"revdistill.dashboard.{name}") is not None
