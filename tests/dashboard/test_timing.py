"""Time estimates: residues the models run over, calibration cached per setting, the progress clock."""
from __future__ import annotations

import pytest

from revdistill.dashboard.timing import (Estimate, ProgressClock, Speed, cached_speed, calibrate, format_duration,
                                         length_bucket)


@pytest.mark.parametrize("seconds, text", [(0.2, "1 s"), (45, "45 s"), (600, "10 min"), (4000, "67 min"),
                                           (5 * 3600 + 60, "5 h 1 min"), (None, "unknown")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_calibration_is_measured_once_and_read_back(tmp_path, one_torch_thread):
    from revdistill.esm.runner import EmbedOptions, LocalEmbedder

    embedder = LocalEmbedder(EmbedOptions(device="cpu"))
    models = ("tiny-32", "tiny-48")
    numerics = embedder.options.numerics()
    assert cached_speed(models, "cpu", numerics, 60, cache=tmp_path) is None
    speed = calibrate(embedder, models, 60, cache=tmp_path, min_seconds=0.05)
    assert speed.residues_per_s > 0 and speed.length == length_bucket(60) == 64 and speed.models == models
    assert cached_speed(models, "cpu", numerics, 70, cache=tmp_path) == speed  # same bucket
    assert cached_speed(models, "cpu", numerics, 500, cache=tmp_path) is None  # another bucket
    assert cached_speed(("tiny-32", "tiny-64"), "cpu", numerics, 60, cache=tmp_path) is None


def test_estimate_and_clock():
    speed = Speed(residues_per_s=100.0, models=("8M", "35M"), device="cpu", length=256, threads=1,
                  measured_at="2026-01-01T00:00:00Z")
    estimate = Estimate(records=10, residues=3000, stored=4, corpus_residues=3000, speed=speed)
    assert estimate.seconds == pytest.approx(60.0)
    text = estimate.describe()
    assert "3,000 residues to embed (4 already stored)" in text and "≈ 60 s on cpu" in text and "8M + 35M" in text
    assert "measuring" in Estimate(10, 3000, None, 0, None).describe()
    clock = ProgressClock(100.0, start=0.0)
    assert clock.remaining(0.0, now=10.0) == pytest.approx(90.0)  # nothing observed: the estimate
    assert clock.remaining(0.5, now=20.0) == pytest.approx(0.5 * 100 + 0.5 * 40 - 20)  # blended
    assert ProgressClock(None, start=0.0).remaining(0.0, now=5.0) is None
