"""PCA / UMAP views of nested embeddings (revdistill.views.projection)."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from revdistill import NestedEmbedding
from revdistill.views import projection as project
from revdistill.io.files import save_npz


@pytest.fixture
def points() -> np.ndarray:
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((200, 3))
    return latent @ rng.standard_normal((3, 12)) + 0.05 * rng.standard_normal((200, 12))


def test_pca_view_matches_scikit_learn_with_fixed_signs(points):
    from sklearn.decomposition import PCA

    ours = project.pca_view(points, n_components=2)
    theirs = PCA(n_components=2, svd_solver="full").fit_transform(points)
    assert_allclose(ours, theirs, atol=1e-8)


def test_pca_view_is_deterministic_bytes(points):
    assert project.pca_view(points).tobytes() == project.pca_view(points.copy()).tobytes()


def test_pca_view_pads_when_fewer_features_than_components():
    values = np.arange(10, dtype=float).reshape(5, 2) ** 1.5
    coords = project.pca_view(values, n_components=3)
    assert coords.shape == (5, 3)
    assert_allclose(coords[:, 2], 0.0)


@pytest.mark.parametrize("bad, match", [
    (np.zeros(5), "must be 2-D"),
    (np.zeros((1, 3)), "at least 2 rows"),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN or inf"),
])
def test_pca_view_rejects_bad_input(bad, match):
    with pytest.raises(ValueError, match=match):
        project.pca_view(bad)


def test_pca_view_rejects_zero_components(points):
    with pytest.raises(ValueError, match="n_components=0"):
        project.pca_view(points, n_components=0)


def test_subspace_prefix_and_block(points):
    nested = NestedEmbedding(points, names=("a", "b", "c"), boundaries=(4, 8, 12))
    assert_allclose(project.subspace(nested, prefix=6), points[:, :6])
    assert_allclose(project.subspace(nested, block="b"), points[:, 4:8])
    with pytest.raises(ValueError, match="exactly one of prefix= or block="):
        project.subspace(nested)
    with pytest.raises(ValueError, match="exactly one"):
        project.subspace(nested, prefix=2, block="b")


def test_content_hash_depends_on_bytes_shape_and_params(points):
    key = project.content_hash(points, n_neighbors=15)
    assert key == project.content_hash(points.copy(), n_neighbors=15)
    assert key != project.content_hash(points, n_neighbors=10)
    assert key != project.content_hash(points.astype(np.float32), n_neighbors=15)
    changed = points.copy()
    changed[0, 0] += 1e-9
    assert key != project.content_hash(changed, n_neighbors=15)


def test_umap_view_reads_its_cache_without_fitting(points, tmp_path, monkeypatch):
    """A cached result is returned as stored; the cache is plain arrays (no pickle)."""
    assert project.cached_umap_view(points, cache_dir=tmp_path) is None
    stored = np.random.default_rng(1).standard_normal((len(points), 2)).astype(np.float32)
    path = project._cache_path(project._as_2d_float(points), tmp_path, n_neighbors=15, min_dist=0.1,
                               random_state=0, pca_dims=50)
    save_npz(path, {"coords": stored})

    def no_fit(*args, **kwargs):  # the cache must make fitting unnecessary
        raise AssertionError("umap_view fitted although a cached result exists")

    monkeypatch.setattr(project, "_fit_umap", no_fit)
    assert_allclose(project.umap_view(points, cache_dir=tmp_path), stored)
    assert_allclose(project.cached_umap_view(points, cache_dir=tmp_path), stored)
    with np.load(path, allow_pickle=False) as data:
        assert list(data.keys()) == ["coords"]


def test_umap_view_ignores_a_cache_of_the_wrong_shape(points, tmp_path):
    path = project._cache_path(project._as_2d_float(points), tmp_path, n_neighbors=15, min_dist=0.1,
                               random_state=0, pca_dims=50)
    save_npz(path, {"coords": np.zeros((3, 2), dtype=np.float32)})
    assert project.cached_umap_view(points, cache_dir=tmp_path) is None


@pytest.mark.parametrize("kwargs, match", [({"n_neighbors": 1}, "n_neighbors=1"), ({}, "at least 4 points")])
def test_umap_view_rejects_bad_arguments(kwargs, match, tmp_path):
    values = np.random.default_rng(0).standard_normal((3 if not kwargs else 10, 4))
    with pytest.raises(ValueError, match=match):
        project.umap_view(values, cache_dir=tmp_path, **kwargs)


def test_default_cache_dir_follows_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("REVDISTILL_CACHE", str(tmp_path))
    assert project.default_cache_dir() == tmp_path / "umap"


def test_file_lock_is_reentrant_across_sequential_uses(tmp_path):
    from revdistill.io.files import file_lock

    lock = tmp_path / "x.lock"
    with file_lock(lock):
        pass
    with file_lock(lock):
        assert lock.exists()


@pytest.mark.slow
def test_warm_up_then_umap_is_deterministic_and_cached(points, tmp_path):
    """Real umap-learn: warm-up compiles, a fit is deterministic, the second call reads the cache."""
    seconds = project.warm_up_umap(n_samples=120, n_features=4)
    assert seconds > 0 and project.umap_ready()
    first = project.umap_view(points, cache_dir=tmp_path, n_neighbors=10)
    assert first.shape == (len(points), 2) and first.dtype == np.float32
    assert len(list(tmp_path.glob("umap-*.npz"))) == 1
    again = project.umap_view(points, cache_dir=tmp_path / "fresh", n_neighbors=10)
    assert_allclose(first, again)  # same seed, same input -> same layout
    assert_allclose(project.umap_view(points, cache_dir=tmp_path, n_neighbors=10), first)


@pytest.mark.slow
def test_umap_progress_reports_the_epochs_and_a_raise_stops_the_fit(points, tmp_path):
    """Real umap-learn: progress hears the neighbour graph, then the layout's epochs (10% to 90%), then the
    epochs placing the rows outside a subsample fit (90% to 100%), in order; the coordinates are those of a fit
    without progress. An exception from progress (a cancelled service job) stops the fit and caches nothing."""
    heard: list[tuple[float, str]] = []
    plain = project.umap_view(points, cache_dir=tmp_path / "plain", n_neighbors=10, fit_sample=150)
    coords = project.umap_view(points, cache_dir=tmp_path / "told", n_neighbors=10, fit_sample=150,
                               progress=lambda fraction, message: heard.append((fraction, message)))
    assert_allclose(coords, plain)
    assert heard[0] == (0.0, "UMAP: neighbour graph of 150 points")
    fractions = [fraction for fraction, _ in heard]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    layout = [fraction for fraction, message in heard if message.startswith("UMAP layout: epoch")]
    placing = [fraction for fraction, message in heard if message.startswith("UMAP: placing the other 50 points")]
    assert layout and all(0.1 <= f <= 0.9 for f in layout) and layout[-1] == pytest.approx(0.9)
    assert placing and all(0.9 <= f <= 1.0 for f in placing)

    from revdistill.service.protocol import Cancelled  # what a cancelled service job's progress raises

    def stop_in_the_layout(fraction: float, message: str) -> None:
        if message.startswith("UMAP layout: epoch"):
            raise Cancelled(message)

    with pytest.raises(Cancelled, match="UMAP layout: epoch"):
        project.umap_view(points, cache_dir=tmp_path / "stopped", n_neighbors=10, progress=stop_in_the_layout)
    assert not list((tmp_path / "stopped").glob("umap-*.npz"))
