"""Moments: streaming, merging, persistence, errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from revdistill import Moments


def test_matches_numpy_covariance(levels):
    moments = Moments.from_arrays(levels, chunk_size=333)
    joint = np.concatenate(list(levels.values()), axis=1)
    assert moments.count == len(joint)
    assert_allclose(moments.mean.numpy(), joint.mean(0), rtol=1e-12, atol=1e-12)
    assert_allclose(moments.covariance(ddof=1).numpy(), np.cov(joint.T), rtol=1e-10, atol=1e-10)


def test_streaming_equals_one_pass(levels):
    one = Moments.from_arrays(levels)
    streamed = Moments(list(levels), [v.shape[1] for v in levels.values()])
    for start in range(0, 3000, 701):
        streamed.update({name: values[start:start + 701] for name, values in levels.items()})
    assert_allclose(streamed.scatter.numpy(), one.scatter.numpy(), rtol=1e-11, atol=1e-9)


def test_merge_is_exact_and_order_free(levels):
    parts = [Moments.from_arrays({k: v[a:b] for k, v in levels.items()})
             for a, b in [(0, 10), (10, 1500), (1500, 3000)]]
    one = Moments.from_arrays(levels)
    merged = parts[2] + parts[0] + parts[1]
    assert merged.count == one.count
    assert_allclose(merged.mean.numpy(), one.mean.numpy(), rtol=1e-12, atol=1e-12)
    assert_allclose(merged.scatter.numpy(), one.scatter.numpy(), rtol=1e-11, atol=1e-9)
    # merging into an empty accumulator copies
    empty = Moments(one.names, one.dims)
    assert_allclose(empty.merge(one).scatter.numpy(), one.scatter.numpy())


def test_float32_torch_input_accumulates_in_float64(levels):
    moments = Moments.from_arrays({k: torch.from_numpy(v).float() for k, v in levels.items()})
    assert moments.scatter.dtype == torch.float64
    joint = np.concatenate([v.astype(np.float32).astype(np.float64) for v in levels.values()], axis=1)
    assert_allclose(moments.covariance().numpy(), np.cov(joint.T), rtol=1e-9, atol=1e-9)


def test_large_offset_is_numerically_stable():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(20000, 3)) + 1e6
    moments = Moments(["a"], [3], chunk_size=1000).update({"a": values})
    assert_allclose(moments.covariance().numpy(), np.cov(values.T), rtol=1e-6)


def test_save_load_round_trip(tmp_path, levels):
    moments = Moments.from_arrays(levels)
    path = moments.save(tmp_path / "m.npz")
    loaded = Moments.load(path)
    assert loaded.names == moments.names and loaded.dims == moments.dims and loaded.count == moments.count
    assert torch.equal(loaded.scatter, moments.scatter)


def test_refuses_pickled_payload(tmp_path):
    path = tmp_path / "evil.npz"
    np.savez(path, meta=np.array([{"format": "revdistill-moments"}], dtype=object))
    with pytest.raises(ValueError, match="pickled objects"):
        Moments.load(path)


def test_refuses_other_version(tmp_path, levels):
    from revdistill.io.files import encode_meta
    state = Moments.from_arrays(levels).to_state()
    state["meta"] = encode_meta({"format": "revdistill-moments", "version": 99, "names": ["x"], "dims": [1]})
    np.savez(tmp_path / "v99.npz", **state)
    with pytest.raises(ValueError, match="version 99 is not supported"):
        Moments.load(tmp_path / "v99.npz")


def test_refuses_wrong_shapes(tmp_path, levels):
    state = Moments.from_arrays(levels).to_state()
    state["scatter"] = state["scatter"][:-1]
    np.savez(tmp_path / "bad.npz", **state)
    with pytest.raises(ValueError, match="the metadata needs"):
        Moments.load(tmp_path / "bad.npz")


@pytest.mark.parametrize(
    "update, match",
    [
        ({"L0": np.zeros((5, 24))}, r"missing \['L1', 'L2'\]"),
        ({"L0": np.zeros((5, 24)), "L1": np.zeros((5, 36)), "L2": np.zeros((4, 52))}, "same number of rows"),
        ({"L0": np.zeros((5, 24)), "L1": np.zeros((5, 35)), "L2": np.zeros((5, 52))}, r"must have shape \(n, 36\)"),
        ({"L0": np.full((5, 24), np.nan), "L1": np.zeros((5, 36)), "L2": np.zeros((5, 52))}, "NaN or infinity"),
    ],
)
def test_update_errors(update, match):
    moments = Moments(["L0", "L1", "L2"], [24, 36, 52])
    with pytest.raises(ValueError, match=match):
        moments.update(update)


def test_merge_rejects_other_layout(levels):
    with pytest.raises(ValueError, match="cannot merge"):
        Moments(["a"], [3]).merge(Moments(["a"], [4]))


def test_constructor_errors():
    with pytest.raises(ValueError, match="names has 2 entries but dims has 1"):
        Moments(["a", "b"], [3])
    with pytest.raises(ValueError, match="unique"):
        Moments(["a", "a"], [3, 4])


def _all_reduce_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        from conftest import make_levels

        levels = make_levels(n_rows=600, dims=(5, 7), latent=4, seed=11)
        rows = slice(0, 100) if rank == 0 else slice(100, 600)
        moments = Moments.from_arrays({k: v[rows] for k, v in levels.items()}).all_reduce()
        moments.save(f"{out_dir}/rank{rank}.npz")
    finally:
        dist.destroy_process_group()


def test_all_reduce_across_two_gloo_ranks(tmp_path):
    import sys

    import torch.multiprocessing as mp

    from conftest import make_levels

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parents[1]))
    mp.spawn(_all_reduce_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    expected = Moments.from_arrays(make_levels(n_rows=600, dims=(5, 7), latent=4, seed=11))
    for rank in range(2):
        reduced = Moments.load(tmp_path / f"rank{rank}.npz")
        assert reduced.count == 600
        assert_allclose(reduced.mean.numpy(), expected.mean.numpy(), rtol=1e-12, atol=1e-12)
        assert_allclose(reduced.scatter.numpy(), expected.scatter.numpy(), rtol=1e-10, atol=1e-10)


def test_float32_precision_is_close_to_float64(levels):
    exact = Moments.from_arrays(levels)
    fast = Moments(list(levels), [v.shape[1] for v in levels.values()], precision="float32").update(levels)
    assert fast.scatter.dtype == torch.float64
    scale = exact.covariance().abs().max().item()
    assert (fast.covariance() - exact.covariance()).abs().max().item() < 1e-5 * scale
    with pytest.raises(ValueError, match="precision='float16' is not supported"):
        Moments(["a"], [2], precision="float16")
