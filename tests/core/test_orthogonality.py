"""What "orthogonal" means for each regressor and fit convention, measured from moments."""
from __future__ import annotations

import numpy as np
import pytest

from revdistill import DistillationLadder, Moments
from revdistill.core.orthogonality import block_correlations


@pytest.fixture(scope="module")
def moments() -> Moments:
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(4000, 6))
    levels = {name: latent @ rng.normal(size=(6, d)) + noise * rng.normal(size=(4000, d))
              for name, d, noise in (("a", 12, 0.5), ("b", 20, 0.7), ("c", 30, 0.9))}
    return Moments.from_arrays(levels)


def test_ols_nested_block_is_uncorrelated_with_the_whole_prefix(moments):
    ladder = DistillationLadder(regressor="ols", fit_on="nested").fit_moments(moments)
    rows = block_correlations(ladder, moments)
    assert [row["n_kept"] for row in rows] == [12, 20]  # least squares uses every prefix direction
    assert max(row["max_abs_corr_prefix"] for row in rows) < 1e-10
    assert max(row["max_abs_corr_kept"] for row in rows) < 1e-10


def test_pcr_block_is_uncorrelated_with_the_kept_components_only(moments):
    ladder = DistillationLadder(regressor="pcr", fit_on="nested").fit_moments(moments)
    rows = block_correlations(ladder, moments)
    assert all(row["n_kept"] < d for row, d in zip(rows, (12, 20)))  # noise components discarded
    assert max(row["max_abs_corr_kept"] for row in rows) < 1e-10
    assert rows[1]["max_abs_corr_prefix"] > 0.05  # but not with the discarded ones
    for row, diagnostic in zip(rows, ladder.diagnostics()):  # the same number the ladder reports
        assert row["max_abs_corr_prefix"] == pytest.approx(diagnostic["max_abs_corr_prefix"], abs=1e-12)


@pytest.mark.parametrize("regressor", ["ols", "pcr"])
def test_raw_convention_keeps_neither_beyond_the_first_step(moments, regressor):
    rows = block_correlations(DistillationLadder(regressor=regressor, fit_on="raw").fit_moments(moments), moments)
    assert rows[0]["max_abs_corr_kept"] < 1e-10  # the first step is the same in both conventions
    assert rows[1]["max_abs_corr_prefix"] > 0.5 and rows[1]["max_abs_corr_kept"] > 0.5


def test_moments_of_other_levels_are_refused(moments):
    ladder = DistillationLadder(regressor="ols").fit_moments(moments)
    rng = np.random.default_rng(1)
    other = Moments.from_arrays({"a": rng.normal(size=(50, 12)), "b": rng.normal(size=(50, 20))})
    with pytest.raises(ValueError, match=r"moments hold levels \['a', 'b'\] with dims \[12, 20\]; the ladder needs "
                                         r"\['a', 'b', 'c'\]"):
        block_correlations(ladder, other)
