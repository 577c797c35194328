"""Point clouds too large to draw point by point, as raster images (datashader's idea, numpy only).

A browser redraws a WebGL scatter in time proportional to its points: measured in headless Chromium
with software WebGL under Voila, plotly's ``Scattergl`` took about 140 ms at 5,000 points, 310 ms at
20,000, 1.2 s at 100,000 and 8 s at 500,000. A raster of the plot area costs the browser the same at
any size (about 100–150 ms for a 440 × 340 image through a plotly figure), and the server about
20 ms per 500,000 points: :func:`rasterize` bins the points into pixels (mean colour value per pixel,
or the last point's value for categories, as a scatter's overdraw shows) and :func:`raster_png`
encodes that as an 8-bit palette PNG with empty pixels transparent (no imaging library needed).

>>> import numpy as np
>>> raster = rasterize(np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0, 1.0]), np.array([1.0, 2.0, 4.0]),
...                    width=2, height=2, bounds=(0.0, 1.0, 0.0, 1.0))
>>> raster.counts.tolist(), raster.values.tolist()
([[0, 2], [1, 0]], [[nan, 3.0], [1.0, nan]])
>>> raster_png(raster, vmin=1.0, vmax=4.0)[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
True
"""
from __future__ import annotations

import base64
import struct
import zlib
from dataclasses import dataclass

import numpy as np

__all__ = ["Raster", "data_bounds", "rasterize", "raster_png", "png_data_uri", "palette"]

Bounds = tuple[float, float, float, float]


@dataclass(frozen=True)
class Raster:
    """Points binned into pixels.

    Attributes
    ----------
    counts : numpy.ndarray of shape (height, width)
        Points per pixel; row 0 is the top of the image (largest ``y``).
    values : numpy.ndarray of shape (height, width)
        Mean colour value per pixel (``reduce="mean"``) or the last point's (``"last"``); NaN where empty.
    bounds : tuple of float
        ``(x0, x1, y0, y1)``: the data range the image covers.
    """

    counts: np.ndarray
    values: np.ndarray
    bounds: Bounds

    @property
    def shape(self) -> tuple[int, int]:
        """``(height, width)`` in pixels."""
        return self.counts.shape


def data_bounds(x: np.ndarray, y: np.ndarray, pad: float = 0.02) -> Bounds:
    """``(x0, x1, y0, y1)`` around the finite points, widened by ``pad`` of the range on each side."""
    finite = np.isfinite(x) & np.isfinite(y)
    if not finite.any():
        return (-1.0, 1.0, -1.0, 1.0)
    bounds = []
    for values in (x[finite], y[finite]):
        low, high = float(values.min()), float(values.max())
        margin = (high - low) * pad if high > low else 0.5  # a single value still gets a range
        bounds += [low - margin, high + margin]
    return tuple(bounds)  # type: ignore[return-value]


def rasterize(x: np.ndarray, y: np.ndarray, values: np.ndarray | None = None, *, width: int, height: int,
              bounds: Bounds | None = None, reduce: str = "mean") -> Raster:
    """Bin points into a ``height × width`` image.

    Parameters
    ----------
    x, y : numpy.ndarray of shape (n_points,)
        Coordinates; points outside ``bounds`` or not finite are left out.
    values : numpy.ndarray of shape (n_points,), optional
        Colour value per point (default: all 1).
    width, height : int
        Image size in pixels.
    bounds : tuple of float, optional
        ``(x0, x1, y0, y1)`` shown by the image; default :func:`data_bounds`.
    reduce : {"mean", "last"}
        ``mean``: mean value per pixel (numbers); ``last``: the value of the last point drawn there
        (categories, like a scatter plot's overdraw).

    Returns
    -------
    Raster
    """
    if width < 1 or height < 1:
        raise ValueError(f"width={width} and height={height} must be at least 1 pixel")
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    values = np.ones_like(x) if values is None else np.asarray(values, dtype=np.float64)
    if not (x.shape == y.shape == values.shape) or x.ndim != 1:
        raise ValueError(f"x, y and values must be 1-D of one length, got {x.shape}, {y.shape}, {values.shape}")
    x0, x1, y0, y1 = bounds if bounds is not None else data_bounds(x, y)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"bounds={(x0, x1, y0, y1)} must have x1 > x0 and y1 > y0")
    with np.errstate(invalid="ignore"):
        inside = (x >= x0) & (x <= x1) & (y >= y0) & (y <= y1) & np.isfinite(values)
    column = np.minimum(np.floor((x - x0) * (width / (x1 - x0))), width - 1)  # x == x1 is in the last column
    row = np.minimum(np.floor((y1 - y) * (height / (y1 - y0))), height - 1)
    cell = (row[inside].astype(np.int64) * width + column[inside].astype(np.int64))
    kept = values[inside]
    counts = np.bincount(cell, minlength=width * height)
    if reduce == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            pixel = np.bincount(cell, weights=kept, minlength=width * height) / counts
    elif reduce == "last":
        pixel = np.full(width * height, np.nan)
        pixel[cell] = kept  # numpy keeps the last of repeated indices
    else:
        raise ValueError(f"reduce={reduce!r}; choose 'mean' or 'last'")
    pixel[counts == 0] = np.nan
    return Raster(counts=counts.reshape(height, width), values=pixel.reshape(height, width),
                  bounds=(float(x0), float(x1), float(y0), float(y1)))


def palette(colorscale: str = "Viridis", n_colors: int = 255) -> np.ndarray:
    """``(n_colors, 3)`` uint8 RGB colours sampled evenly from a plotly colour scale (low to high)."""
    from plotly.colors import get_colorscale, sample_colorscale  # noqa: PLC0415

    samples = sample_colorscale(get_colorscale(colorscale), np.linspace(0.0, 1.0, n_colors), colortype="tuple")
    return np.clip(np.round(np.asarray(samples, dtype=np.float64) * 255), 0, 255).astype(np.uint8)


def raster_png(raster: Raster, *, vmin: float, vmax: float, colorscale: str = "Viridis") -> bytes:
    """The raster as a palette PNG: values mapped linearly from ``[vmin, vmax]`` onto the colour scale,
    empty pixels transparent."""
    colours = palette(colorscale)
    span = (vmax - vmin) or 1.0
    filled = np.isfinite(raster.values)
    level = np.clip((np.nan_to_num(raster.values) - vmin) / span, 0.0, 1.0) * (len(colours) - 1)
    index = np.where(filled, 1 + np.round(level), 0).astype(np.uint8)
    table = np.vstack([np.zeros((1, 3), np.uint8), colours])
    return _indexed_png(index, table)


def _indexed_png(index: np.ndarray, table: np.ndarray) -> bytes:
    """An 8-bit indexed PNG of ``index`` ``(height, width)`` with colour ``table`` (entry 0 transparent)."""
    height, width = index.shape
    rows = np.hstack([np.zeros((height, 1), np.uint8), index])  # filter byte 0 ("none") per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    alpha = bytes([0] + [255] * (len(table) - 1))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 3, 0, 0, 0))
            + chunk(b"PLTE", np.ascontiguousarray(table, dtype=np.uint8).tobytes()) + chunk(b"tRNS", alpha)
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 1)) + chunk(b"IEND", b""))


def png_data_uri(data: bytes) -> str:
    """``data:image/png;base64,...`` for plotly layout images."""
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")
