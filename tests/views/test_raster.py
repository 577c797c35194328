"""Point clouds as raster images: binning, per-pixel reduction, the palette PNG."""
from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from numpy.testing import assert_allclose

from revdistill.views.raster import data_bounds, palette, png_data_uri, raster_png, rasterize


def _png_pixels(data: bytes) -> tuple[int, int, np.ndarray, np.ndarray]:
    """Width, height, indices and palette of an 8-bit indexed PNG (no filters), read back by hand."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position, chunks = 8, {}
    while position < len(data):
        length, kind = struct.unpack(">I4s", data[position:position + 8])
        body = data[position + 8:position + 8 + length]
        crc = struct.unpack(">I", data[position + 8 + length:position + 12 + length])[0]
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks[kind] = chunks.get(kind, b"") + body
        position += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", chunks[b"IHDR"][:10])
    assert (depth, colour) == (8, 3)
    rows = np.frombuffer(zlib.decompress(chunks[b"IDAT"]), np.uint8).reshape(height, width + 1)
    assert not rows[:, 0].any()  # filter "none" on every row
    return width, height, rows[:, 1:], np.frombuffer(chunks[b"PLTE"], np.uint8).reshape(-1, 3)


def test_counts_and_means_match_a_direct_binning():
    rng = np.random.default_rng(0)
    x, y, values = rng.normal(size=5000), rng.normal(size=5000), rng.normal(size=5000)
    bounds = (-2.0, 2.0, -1.5, 1.5)
    raster = rasterize(x, y, values, width=40, height=30, bounds=bounds)
    inside = (np.abs(x) <= 2) & (np.abs(y) <= 1.5)
    assert raster.shape == (30, 40) and raster.counts.sum() == inside.sum()
    column = np.minimum(((x[inside] + 2) / 4 * 40).astype(int), 39)
    row = np.minimum(((1.5 - y[inside]) / 3 * 30).astype(int), 29)  # row 0 is the top
    expected = np.zeros((30, 40))
    np.add.at(expected, (row, column), values[inside])
    with np.errstate(invalid="ignore"):
        assert_allclose(raster.values, expected / raster.counts, equal_nan=True)
    assert np.isnan(raster.values[raster.counts == 0]).all()


def test_last_point_wins_for_categories():
    raster = rasterize(np.array([0.1, 0.1, 0.9]), np.array([0.1, 0.1, 0.9]), np.array([3.0, 7.0, 1.0]),
                       width=2, height=2, bounds=(0, 1, 0, 1), reduce="last")
    assert raster.values[1, 0] == 7.0 and raster.values[0, 1] == 1.0 and raster.counts[1, 0] == 2


def test_png_round_trip_maps_values_onto_the_palette():
    raster = rasterize(np.array([0.0, 1.0]), np.array([0.0, 1.0]), np.array([0.0, 1.0]), width=3, height=2,
                       bounds=(0, 1, 0, 1))
    width, height, index, table = _png_pixels(raster_png(raster, vmin=0.0, vmax=1.0, colorscale="Viridis"))
    assert (width, height) == (3, 2)
    colours = palette("Viridis")
    assert index[1, 0] == 1 and index[0, 2] == len(colours)  # lowest and highest colour
    assert (index[raster.counts == 0] == 0).all()  # transparent
    assert_allclose(table[1], colours[0]) and assert_allclose(table[-1], colours[-1])
    assert png_data_uri(b"\x89PNG").startswith("data:image/png;base64,")


def test_bounds_and_errors():
    assert data_bounds(np.array([0.0, 1.0]), np.array([2.0, 2.0]), pad=0.0) == (0.0, 1.0, 1.5, 2.5)
    assert data_bounds(np.array([np.nan]), np.array([np.nan])) == (-1.0, 1.0, -1.0, 1.0)
    with pytest.raises(ValueError, match="width=0"):
        rasterize(np.zeros(2), np.zeros(2), width=0, height=3)
    with pytest.raises(ValueError, match="reduce='max'"):
        rasterize(np.zeros(2), np.zeros(2), width=2, height=2, bounds=(0, 1, 0, 1), reduce="max")
    with pytest.raises(ValueError, match="x1 > x0"):
        rasterize(np.zeros(2), np.zeros(2), width=2, height=2, bounds=(1, 0, 0, 1))
