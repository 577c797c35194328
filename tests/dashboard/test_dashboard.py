"""Dashboard builders driven in-process: set widget values, call handlers, check the figures changed.

Runs on the untrained tiny family (always available offline) and the bundled demo set, with the work
done inline (``background=False``) so every handler finishes before the next line.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose

from revdistill.dashboard.state import DashboardOptions, DashboardState

from test_browser import write_dms_csv  # shared generator of the 5,000-variant CSV (tests/ is on pythonpath)

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
    from revdistill.esm.models import weights_available

    boxes = app.models.checkboxes
    assert list(boxes)[:6] == ["8M", "35M", "150M", "650M", "3B", "15B"]
    for alias in ("8M", "15B"):
        if not weights_available(alias):
            assert boxes[alias].disabled and not boxes[alias].value
            reason = next(c.reason for c in app.models.choices if c.alias == alias)
            assert reason == "weights not found"
    if not weights_available("8M"):
        assert app.models.selected_models() == ("tiny-32", "tiny-48", "tiny-64")
        assert "untrained" in app.models.banner.value and "checkpoints" in app.models.banner.value


def test_compute_publishes_a_workspace_and_fills_every_figure(app):
    workspace = app.state.workspace
    n = len(workspace.dataset)
    assert workspace.nested.boundaries == (32, 48, 64)
    assert_allclose(workspace.nested.prefix(32), workspace.pooled["tiny-32"], atol=1e-5)
    assert len(app.decomposition.figure.data[0].y) == 2  # two ladder steps
    assert len(trace_x(app.slicer.view_figure, 0)) == n
    assert len(trace_x(app.umap.figure, 0)) == n
    assert app.models.status.value.endswith("Ready.")
    assert app.models.progress.value == 1.0 and not app.models.compute.disabled
    assert "tiny-32 → tiny-48" in app.decomposition.table.value


def test_second_compute_reads_the_store(app):
    before = app.state.workspace
    app.models.on_compute()
    after = app.state.workspace
    assert after is not before and after.seconds["embed"] < before.seconds["embed"] + 5
    assert_allclose(after.nested.values, before.nested.values)


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
    curves = panel.curves

    async def drag() -> None:
        for k in (15, 22, 38, 56):
            panel.slider.value = k
            assert list(panel.figure.data[4].x) == [k, k]
        assert panel._view_timer is not None and panel._pending_view == 56
        await asyncio.sleep(slicer_panel.VIEW_INTERVAL_S + 0.1)

    panel.slider.value = 10  # outside a loop: shown at once
    asyncio.run(drag())
    assert panel._view_timer is None and panel._pending_view is None
    expected = curves.views[curves.grid_index(56)]
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


def test_slicer_curves_are_consistent(app):
    curves = app.state.workspace.cache["slicer"]
    assert set(curves.boundaries) <= set(curves.ks.tolist())
    assert curves.views.shape == (len(curves.ks), 2, len(app.state.workspace.dataset))
    assert curves.cosine[-1] == pytest.approx(1.0)
    assert curves.nn_agreement[-1] == pytest.approx(1.0)
    assert np.all(np.diff(curves.cosine) >= -1e-12)


# -- UMAP panel -------------------------------------------------------------------------------------
def test_switching_subspace_redraws_the_pca_view(app):
    panel = app.umap
    before = trace_x(panel.figure, 0).copy()
    panel.subspace.value = "block:tiny-64"
    assert not np.allclose(trace_x(panel.figure, 0), before)
    assert "16 dims" in panel.status.value


def test_colour_by_a_categorical_column_gets_labelled_ticks(app):
    from revdistill.dashboard.umap_panel import color_values

    colors, colorbar = color_values(app.state.workspace.dataset.table.assign(aa=["A", "C"] * 15), "aa")
    assert set(colors) == {0.0, 1.0} and colorbar["ticktext"] == ["A", "C"]
    app.umap.color.value = "length"
    assert_allclose(app.umap.figure.data[0].marker.color, app.state.workspace.dataset.table["length"])


# -- scaling panel ----------------------------------------------------------------------------------
def test_scaling_curves_and_exports(app):
    panel = app.scaling
    panel.on_run()
    assert app.state.errors == []
    table = panel.table
    assert set(table["representation"]) == {"ESM-2", "reverse-distilled", "naive", "ESM-2 truncated"}
    assert len(panel.figure.data[0].x) == 3 and panel.figure.data[0].error_y.array is not None
    assert "revdistill-scaling.csv" in panel.downloads.value
    panel.on_prepare_html()
    assert "revdistill-scaling.html" in panel.downloads.value
    reference = panel.figure.data[3]
    assert list(reference.text)[:3] == ["8M", "35M", "150M"]


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
        app.models.assay_id.value = "PIN1_HUMAN_Tsuboyama"
        app.models.compute.click()
        assert "PIN1_HUMAN_Tsuboyama_2023_1I6C" in app.state.errors[-1].message  # close match offered
    from revdistill.dashboard.data import uploaded_dataset

    with pytest.raises(ValueError, match="upload limit"):
        uploaded_dataset("big.csv", b"x" * 101, max_bytes=100)
    app.models.source.value = "upload"
    app.models.compute.click()
    assert "choose a FASTA or DMS CSV file" in app.state.errors[-1].message


# -- data sources ------------------------------------------------------------------------------------
def test_uploaded_fasta_and_dms_csv(tmp_path):
    from revdistill.dashboard.data import uploaded_dataset

    fasta = uploaded_dataset("two.fasta", b">a first\nMKT\nAYI\n>b\nMKV\n", max_bytes=10_000)
    assert fasta.records == [("a", "MKTAYI"), ("b", "MKV")] and fasta.target == "hydrophobicity"
    csv = write_dms_csv(tmp_path / "PIN1_synthetic.csv", n_variants=900)
    dms = uploaded_dataset(csv.name, csv.read_bytes(), max_bytes=10**7)
    assert len(dms) == 900 and dms.target == "fitness"
    assert {"mutant", "position", "mutated_aa", "fitness"} <= set(dms.table.columns)
    with pytest.raises(ValueError, match="mutant"):
        uploaded_dataset("x.csv", b"a,b\n1,2\n", max_bytes=100)


@pytest.mark.skipif(not PROTEINGYM.is_dir(), reason="shared ProteinGym data not present")
def test_proteingym_assay_by_id():
    from revdistill.dashboard.data import proteingym_dataset

    dataset = proteingym_dataset(PIN1, PROTEINGYM)
    assert dataset.kind == "proteingym" and len(dataset) > 700
    assert dataset.color_options[:3] == ["fitness", "position", "mutated_aa"]


# -- the slicer's fast probe equals the reference probe ----------------------------------------------
@pytest.mark.parametrize("n", [40, 400])
def test_prefix_probe_matches_cross_validate(n):
    from revdistill.dashboard.prefix_probe import prefix_probe_spearman
    from revdistill.experiment.probe import cross_validate

    rng = np.random.default_rng(n)
    features = rng.standard_normal((n, 24))
    scores = features[:, :3].sum(axis=1) + rng.standard_normal(n)
    folds = rng.permutation(n) % 5
    ks = [1, 5, 12, 24]
    fast = prefix_probe_spearman(features, scores, folds, ks)
    slow = [cross_validate(features[:, :k], scores, folds).spearman for k in ks]
    assert_allclose(fast, slow, atol=1e-10)


def test_prefix_probe_rejects_bad_sizes():
    from revdistill.dashboard.prefix_probe import prefix_probe_spearman

    with pytest.raises(ValueError, match=r"prefix sizes \[9\] must be between 1 and 4"):
        prefix_probe_spearman(np.zeros((10, 4)), np.arange(10.0), np.arange(10) % 5, [9])


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
    for name in ("models_panel", "decomposition_panel", "slicer_panel", "umap_panel", "scaling_panel", "app"):
        assert importlib.util.find_spec(f"revdistill.dashboard.{name}") is not None
