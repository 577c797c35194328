"""Feature matrices per representation, from pooled raw embeddings and one ladder."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import make_levels
from revdistill import DistillationLadder, NaiveConcatPCA
from revdistill.experiment.features import FeatureKey, build_features
from revdistill.experiment.protocol import REPRESENTATIONS, Protocol

DIMS = [24, 36, 52]


@pytest.fixture(scope="module")
def fitted():
    levels = make_levels(n_rows=3000)
    return levels, DistillationLadder().fit(levels), NaiveConcatPCA().fit(levels)


def test_pooled_features_equal_pooling_the_per_residue_transform(fitted):
    levels, ladder, naive = fitted
    groups = np.repeat(np.arange(100), 30)  # 100 "sequences" of 30 residues
    pooled = {name: np.stack([values[groups == g].mean(axis=0) for g in range(100)]) for name, values in levels.items()}
    prefix = Protocol().prefix_dims(DIMS)
    features = build_features(pooled, ladder, naive, prefix, tuple(REPRESENTATIONS))
    per_residue = np.asarray(ladder.transform(levels))
    pooled_transform = np.stack([per_residue[groups == g].mean(axis=0) for g in range(100)])
    for name, dim in zip(levels, DIMS):
        np.testing.assert_allclose(features[FeatureKey("rd", name, dim)], pooled_transform[:, :dim],
                                   rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(features[FeatureKey("esm2", name, dim)], pooled[name])
    np.testing.assert_array_equal(features[FeatureKey("rd", "L0", 24)], pooled["L0"])  # level 1 is ESM-2 itself
    np.testing.assert_allclose(features[FeatureKey("naive", "L2", 52)], naive.transform(pooled)["L2"])
    assert sorted(k.dim for k in features if k.representation == "nested") == prefix
    assert sorted(k.dim for k in features if k.representation == "truncated") == prefix
    assert features[FeatureKey("nested", "L1", 36)] is features[FeatureKey("rd", "L1", 36)]  # fitted once
    assert features[FeatureKey("truncated", "L2", 52)] is features[FeatureKey("esm2", "L2", 52)]
    np.testing.assert_array_equal(features[FeatureKey("truncated", "L2", 8)], pooled["L2"][:, :8])
    np.testing.assert_allclose(features[FeatureKey("nested", "L2", 47)], pooled_transform[:, :47], rtol=1e-9, atol=1e-9)
    assert {k.representation for k in features} == set(REPRESENTATIONS)


def test_naive_is_skipped_without_a_baseline(fitted):
    levels, ladder, _ = fitted
    pooled = {name: values[:20] for name, values in levels.items()}
    features = build_features(pooled, ladder, None, [24], ("esm2", "naive"))
    assert {k.representation for k in features} == {"esm2"}


def test_build_features_errors(fitted):
    levels, ladder, naive = fitted
    pooled = {name: values[:10] for name, values in levels.items()}
    with pytest.raises(ValueError, match="ladder's levels in order"):
        build_features(dict(reversed(list(pooled.items()))), ladder, naive, [24], ("esm2",))
    with pytest.raises(ValueError, match="representations="):
        build_features(pooled, ladder, naive, [24], ("umap",))
    with pytest.raises(ValueError, match=r"prefix dims \[99\] must be between 1 and 52"):
        build_features(pooled, ladder, naive, [99], ("nested",))
