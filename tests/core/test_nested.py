"""NestedEmbedding: slicing by prefix, level and block; errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from revdistill import NestedEmbedding


@pytest.fixture
def nested():
    values = np.arange(4 * 10, dtype=np.float64).reshape(4, 10)
    return NestedEmbedding(values, names=("a", "b", "c"), boundaries=(3, 6, 10))


def test_slices(nested):
    assert nested.prefix(4).shape == (4, 4)
    assert np.array_equal(nested.level("b"), nested.values[:, :6])
    assert np.array_equal(nested.block("a"), nested.values[:, :3])
    assert np.array_equal(nested.block("c"), nested.values[:, 6:10])
    assert nested.starts == (0, 3, 6) and nested.dim == 10
    assert [nested.level_of(k) for k in (1, 3, 4, 6, 7, 10)] == ["a", "a", "b", "b", "c", "c"]


def test_normalize_is_opt_in(nested):
    assert np.array_equal(nested.prefix(5), nested.values[:, :5])
    norms = np.linalg.norm(nested.prefix(5, normalize=True), axis=1)
    np.testing.assert_allclose(norms, 1)
    torch_nested = NestedEmbedding(torch.from_numpy(nested.values), nested.names, nested.boundaries)
    np.testing.assert_allclose(torch_nested.prefix(5, normalize=True).numpy(), nested.prefix(5, normalize=True))


def test_rows_and_mean(nested):
    assert len(nested[1:3]) == 2 and nested[0].shape == (1, 10)
    pooled = nested.mean(groups=[0, 0, 1, 1])
    np.testing.assert_allclose(pooled.values, [nested.values[:2].mean(0), nested.values[2:].mean(0)])


@pytest.mark.parametrize("k", [0, 11, -1])
def test_prefix_out_of_range(nested, k):
    with pytest.raises(ValueError, match=f"k={k} must be between 1 and 10"):
        nested.prefix(k)


def test_unknown_level(nested):
    with pytest.raises(ValueError, match=r"unknown level 'z'; this embedding has levels \['a', 'b', 'c'\]"):
        nested.level("z")


def test_bad_boundaries():
    with pytest.raises(ValueError, match="strictly increasing"):
        NestedEmbedding(np.zeros((2, 5)), ("a", "b"), (3, 3))
    with pytest.raises(ValueError, match="must equal the number of columns"):
        NestedEmbedding(np.zeros((2, 5)), ("a", "b"), (3, 4))
