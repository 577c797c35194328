"""Scatter figures that pick WebGL points or a raster by size, and update in place."""
from __future__ import annotations

import numpy as np
import pytest

from revdistill.dashboard.points import HOVER_SAMPLE, MAX_WEBGL_POINTS, PointsFigure, choose_renderer


def cloud(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 2))


@pytest.mark.parametrize("n, renderer, expected", [(10, "auto", "points"), (MAX_WEBGL_POINTS, "auto", "points"),
                                                   (MAX_WEBGL_POINTS + 1, "auto", "raster"), (10, "raster", "raster"),
                                                   (10**6, "points", "points")])
def test_choose_renderer(n, renderer, expected):
    assert choose_renderer(n, renderer) == expected


def test_unknown_renderer_is_refused():
    with pytest.raises(ValueError, match="renderer='svg'"):
        choose_renderer(10, "svg")


def test_few_points_are_drawn_one_by_one():
    n = 300
    view = PointsFigure([cloud(n), None], colors=np.arange(n, dtype=float), labels=[f"m{i}" for i in range(n)],
                        titles=("PCA", "UMAP"), width=900, height=400)
    assert view.renderer == "points" and view.note == "300 points"
    assert len(view.figure.data[0].x) == n and len(view.figure.data[1].x) == 0
    assert not view.figure.layout.images
    view.set_points(1, cloud(n, seed=1))
    assert np.allclose(view.figure.data[1].x, cloud(n, seed=1)[:, 0].astype(np.float32))


def test_many_points_become_a_raster_with_a_hover_sample():
    n = MAX_WEBGL_POINTS * 3
    points = cloud(n)
    view = PointsFigure([points], colors=points[:, 0], labels=[str(i) for i in range(n)], titles=("PCA",),
                        width=520, height=440, colorbar={"title": {"text": "score"}})
    assert view.renderer == "raster"
    assert len(view.figure.data[0].x) == HOVER_SAMPLE and view.figure.data[0].marker.opacity == 0
    assert f"{n:,} points drawn as a raster" in view.note
    image = view.figure.layout.images[0]
    assert image.source.startswith("data:image/png;base64,") and image.xref == "x"
    x0, x1 = view.figure.layout.xaxis.range
    assert x0 <= points[:, 0].min() and x1 >= points[:, 0].max()
    before = image.source
    view.set_points(0, np.column_stack([points[:, 0] * 3, points[:, 1] ** 2]))  # another shape, other ranges
    assert view.figure.layout.images[0].source != before
    assert view.figure.layout.xaxis.range[1] > x1 * 2 and view.figure.layout.yaxis.range[0] > -1
    view.set_colors(-points[:, 0])
    assert view.figure.data[0].marker.cmax == pytest.approx(-points[:, 0].min())
    view.set_note("extra")
    assert any(a.text == "extra" for a in view.figure.layout.annotations)


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="expected \\(5, 2\\)"):
        PointsFigure([cloud(4)], colors=np.zeros(5), labels=list("abcde"), titles=("x",), width=200, height=200)
