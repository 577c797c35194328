"""UMAP of many points: fitted on a stated, seeded subsample, the rest placed by transform."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from revdistill.views import projection as project


def test_fit_rows_are_a_seeded_subsample_only_above_the_limit():
    assert project.umap_fit_rows(500, 1000) is None and project.umap_fit_rows(500, None) is None
    rows = project.umap_fit_rows(5000, 1000, random_state=2)
    assert len(rows) == len(np.unique(rows)) == 1000 and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, project.umap_fit_rows(5000, 1000, random_state=2))
    assert not np.array_equal(rows, project.umap_fit_rows(5000, 1000, random_state=3))
    with pytest.raises(ValueError, match="fit_sample=2"):
        project.umap_fit_rows(50, 2)


def test_note_says_what_was_fitted():
    assert project.umap_note(project.DEFAULT_FIT_SAMPLE) == ""
    note = project.umap_note(100_000, 20_000, random_state=0)
    assert note == ("UMAP fitted on a seeded subsample of 20,000 of 100,000 points (seed 0); the other 80,000 "
                    "placed by transform")
    assert project.DEFAULT_FIT_SAMPLE >= 16_897  # every ProteinGym assay's singles are fitted whole


def test_subsampled_fit_calls_transform_for_the_rest(tmp_path, monkeypatch):
    """The fitted rows get the fit's own coordinates, the others transform's; the cache key says so."""
    calls = {}

    class FakeUMAP:
        def __init__(self, **kwargs):
            calls["init"] = kwargs

        def fit_transform(self, values):
            calls["fit"] = values.copy()
            return np.column_stack([values[:, 0], np.zeros(len(values))])

        def transform(self, values):
            calls["transform"] = values.copy()
            return np.column_stack([values[:, 0], np.ones(len(values))])

    monkeypatch.setattr(project, "_import_umap", lambda: type("umap", (), {"UMAP": FakeUMAP}))
    values = np.random.default_rng(0).normal(size=(60, 3))
    coords = project.umap_view(values, fit_sample=20, pca_dims=None, cache_dir=tmp_path)
    rows = project.umap_fit_rows(60, 20)
    assert len(calls["fit"]) == 20 and len(calls["transform"]) == 40
    assert_allclose(coords[rows, 1], 0) and np.allclose(np.delete(coords[:, 1], rows), 1)
    assert_allclose(coords[:, 0], values[:, 0].astype(np.float32), rtol=1e-6)
    whole = project.cached_umap_view(values, pca_dims=None, fit_sample=None, cache_dir=tmp_path)
    assert whole is None  # a subsampled fit is cached under its own key
    assert_allclose(project.cached_umap_view(values, pca_dims=None, fit_sample=20, cache_dir=tmp_path), coords)


@pytest.mark.slow
def test_real_umap_with_transform_is_deterministic(tmp_path):
    rng = np.random.default_rng(0)
    values = rng.normal(size=(400, 6)) + np.repeat(rng.normal(scale=5, size=(4, 6)), 100, axis=0)
    first = project.umap_view(values, fit_sample=150, n_neighbors=10, cache_dir=tmp_path)
    again = project.umap_view(values, fit_sample=150, n_neighbors=10, cache_dir=tmp_path / "fresh")
    assert first.shape == (400, 2) and np.isfinite(first).all()
    assert_allclose(first, again)
