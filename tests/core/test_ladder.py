"""DistillationLadder: nested path, one-pass fit from joint moments, persistence, errors."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from revdistill import DistillationLadder, Moments, NaiveConcatPCA, NestedEmbedding, ReverseDistiller


@pytest.mark.parametrize("regressor", ["pcr", "ridge", "ols"])
def test_exact_nesting_at_every_level(levels, regressor):
    ladder = DistillationLadder(regressor=regressor).fit(levels)
    nested = ladder.transform(levels)
    assert isinstance(nested, NestedEmbedding)
    assert nested.boundaries == (24, 36, 52) and nested.names == ("L0", "L1", "L2")
    assert np.array_equal(nested.prefix(24), levels["L0"])
    smaller = ladder.transform({"L0": levels["L0"], "L1": levels["L1"]})
    assert np.array_equal(nested.level("L1"), smaller.values)


@pytest.mark.parametrize("regressor", ["pcr", "ridge", "ols"])
def test_fit_and_transform_follow_the_same_nested_path(levels, regressor):
    """Step k is fitted on the nested output of step k-1, exactly what it is applied to."""
    ladder = DistillationLadder(regressor=regressor, alpha=2.0).fit(levels)
    first = ReverseDistiller(regressor=regressor, alpha=2.0).fit(levels["L0"], levels["L1"])
    nested_1 = first.transform(levels["L0"], levels["L1"])
    second = ReverseDistiller(regressor=regressor, alpha=2.0).fit(nested_1, levels["L2"])
    expected = second.transform(nested_1, levels["L2"])
    assert_allclose(ladder.transform(levels).values, expected, atol=1e-8)
    assert_allclose(ladder.steps_[1].coef_, second.coef_, atol=1e-8)


def test_affine_map_reproduces_transform(levels):
    ladder = DistillationLadder().fit(levels)
    joint = np.concatenate(list(levels.values()), axis=1)
    assert_allclose(joint @ ladder.affine_weights_ + ladder.affine_offset_, ladder.transform(levels).values,
                    atol=1e-9)


def test_one_streaming_pass_of_sharded_moments(levels):
    shards = [Moments.from_arrays({k: v[a:b] for k, v in levels.items()}, chunk_size=97)
              for a, b in [(0, 900), (900, 2000), (2000, 3000)]]
    streamed = DistillationLadder().fit_moments(shards[0] + shards[1] + shards[2])
    direct = DistillationLadder().fit(levels)
    assert_allclose(streamed.transform(levels).values, direct.transform(levels).values, atol=1e-8)


def test_blocks_are_uncorrelated_with_prefix_for_ols(levels):
    ladder = DistillationLadder(regressor="ols").fit(levels)
    nested = ladder.transform(levels)
    for name in ("L1", "L2"):
        index = nested.names.index(name)
        prefix = nested.values[:, : nested.starts[index]]
        block = nested.block(name)
        cross = np.corrcoef(prefix.T, block.T)[: prefix.shape[1], prefix.shape[1]:]
        assert np.abs(cross).max() < 1e-9
    assert all(row["max_abs_corr_prefix"] < 1e-9 for row in ladder.diagnostics())


def test_diagnostics_rows(levels):
    ladder = DistillationLadder().fit(levels)
    rows = ladder.diagnostics()
    assert [(row["small"], row["large"]) for row in rows] == [("L0", "L1"), ("L1", "L2")]
    nested = ladder.transform(levels)
    for row, step in zip(rows, ladder.steps_):
        # each step's diagnostics agree with a direct fit on the same nested input
        direct = ReverseDistiller().fit(nested.level(row["small"]), levels[row["large"]])
        assert row["n_regression_components"] == direct.n_regression_components_ < row["d_small"]
        assert row["r2"] == pytest.approx(direct.r2_, abs=1e-10)
        assert row["n_residual_components"] == row["d_large"] - row["d_small"]
        residual = levels[row["large"]] - step.predict(nested.level(row["small"]))
        kept = np.var(nested.block(row["large"]), axis=0, ddof=1).sum()
        assert row["residual_explained_variance_ratio"] == pytest.approx(
            kept / np.var(residual, axis=0, ddof=1).sum(), rel=1e-8)


def test_pooled_features_commute(levels):
    ladder = DistillationLadder().fit(levels)
    groups = np.repeat(np.arange(30), 100)
    pooled_raw = {k: np.stack([v[groups == g].mean(0) for g in range(30)]) for k, v in levels.items()}
    per_residue = ladder.transform(levels).mean(groups=groups)
    assert_allclose(ladder.transform(pooled_raw).values, per_residue.values, atol=1e-9)


def test_save_load_round_trip(tmp_path, levels):
    ladder = DistillationLadder(regressor="ridge", alpha=4.0).fit(levels)
    path = ladder.save(tmp_path / "ladder.npz")
    loaded = DistillationLadder.load(path)
    assert loaded.regressor == "ridge" and loaded.alpha == 4.0
    assert loaded.level_names_ == ladder.level_names_ and loaded.dims_ == ladder.dims_
    assert loaded.transform(levels).values.tobytes() == ladder.transform(levels).values.tobytes()
    assert loaded.diagnostics() == ladder.diagnostics()


def test_deterministic_bytes(levels):
    first = DistillationLadder().fit(levels).transform(levels).values
    second = DistillationLadder().fit({k: v.copy() for k, v in levels.items()}).transform(levels).values
    assert first.tobytes() == second.tobytes()


def test_load_rejects_wrong_shape(tmp_path, levels):
    path = DistillationLadder().fit(levels).save(tmp_path / "ladder.npz")
    with np.load(path) as archive:
        state = dict(archive)
    state["step1__components_"] = state["step1__components_"][:-1]
    np.savez(tmp_path / "broken.npz", **state)
    with pytest.raises(ValueError, match=r"broken.npz: step 'L1' -> 'L2': explained_variance_ has shape \(16,\)"):
        DistillationLadder.load(tmp_path / "broken.npz")


def test_load_rejects_foreign_and_pickled_files(tmp_path):
    np.savez(tmp_path / "foreign.npz", weights=np.zeros(3))
    with pytest.raises(ValueError, match="not a revdistill-ladder file"):
        DistillationLadder.load(tmp_path / "foreign.npz")
    np.savez(tmp_path / "pickled.npz", meta=np.array([object()], dtype=object))
    with pytest.raises(ValueError, match="pickled objects"):
        DistillationLadder.load(tmp_path / "pickled.npz")
    (tmp_path / "garbage.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable .npz"):
        DistillationLadder.load(tmp_path / "garbage.npz")


def test_levels_out_of_order(levels):
    reordered = {"L1": levels["L1"], "L0": levels["L0"]}
    with pytest.raises(ValueError, match="ordered small to large"):
        DistillationLadder().fit(reordered)


def test_transform_needs_prefix_of_levels(levels):
    ladder = DistillationLadder().fit(levels)
    with pytest.raises(ValueError, match=r"prefix of the ladder's levels in order \['L0', 'L1', 'L2'\]"):
        ladder.transform({"L1": levels["L1"], "L2": levels["L2"]})


def test_fit_needs_two_levels(levels):
    with pytest.raises(ValueError, match="at least 2 levels"):
        DistillationLadder().fit({"L0": levels["L0"]})


def test_unknown_regressor_fails_before_work(levels):
    with pytest.raises(ValueError, match="regressor='pls' is not supported"):
        DistillationLadder(regressor="pls").fit(levels)


def test_naive_baseline_is_concat_pca(levels):
    naive = NaiveConcatPCA().fit(levels)
    out = naive.transform(levels)
    assert [v.shape[1] for v in out.values()] == [24, 36, 52]
    concat = np.concatenate([levels["L0"], levels["L1"]], axis=1)
    centred = concat - concat.mean(0)
    _, singular, _ = np.linalg.svd(centred, full_matrices=False)
    # the naive level-1 embedding captures the top-36 variance of the concatenation
    assert_allclose(np.var(out["L1"], axis=0, ddof=1).sum(), (singular[:36] ** 2).sum() / (len(concat) - 1),
                    rtol=1e-9)
    # and, unlike reverse distillation, is not nested
    assert not np.allclose(out["L1"][:, :24], levels["L0"])


def test_load_rejects_other_version(tmp_path, levels):
    import json

    path = DistillationLadder().fit(levels).save(tmp_path / "ladder.npz")
    with np.load(path) as archive:
        state = dict(archive)
    meta = json.loads(state["meta"].tobytes())
    meta["version"] = 99
    state["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    np.savez(tmp_path / "v99.npz", **state)
    with pytest.raises(ValueError, match="revdistill-ladder file version 99 is not supported"):
        DistillationLadder.load(tmp_path / "v99.npz")
