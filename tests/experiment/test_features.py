"""Features per representation, from the embedding store, and the end-to-end benchmark run."""
from __future__ import annotations

import logging

import numpy as np
import pytest

from conftest import make_levels
from revdistill import DistillationLadder, NaiveConcatPCA
from revdistill.experiment.features import (FeatureKey, REPRESENTATIONS, assay_records, build_features, embed_assays,
                                 fit_transforms,
                                 prefix_dims, run_benchmark)
from revdistill.proteingym import SCHEMES, load_reference, read_assay
from revdistill.esm.store import EmbeddingStore

PIN1 = "PIN1_HUMAN_Tsuboyama_2023_1I6C"
TINY = ("tiny-32", "tiny-48", "tiny-64")


def test_prefix_dims():
    assert prefix_dims((320, 480, 640), n_between=1) == [320, 400, 480, 560, 640]
    assert prefix_dims((32, 48, 64)) == [32, 37, 43, 48, 53, 59, 64]
    assert prefix_dims((32, 48), n_between=0) == [32, 48]
    with pytest.raises(ValueError, match="strictly increasing"):
        prefix_dims((48, 32))
    with pytest.raises(ValueError, match="n_between"):
        prefix_dims((32, 48), n_between=-1)


@pytest.fixture(scope="module")
def fitted():
    levels = make_levels(n_rows=3000)
    return levels, DistillationLadder().fit(levels), NaiveConcatPCA().fit(levels)


def test_build_features_pooled_equals_pooling_the_per_residue_transform(fitted):
    levels, ladder, naive = fitted
    groups = np.repeat(np.arange(100), 30)  # 100 "sequences" of 30 residues
    pooled = {name: np.stack([values[groups == g].mean(axis=0) for g in range(100)]) for name, values in levels.items()}
    features = build_features(pooled, ladder, naive)
    names, dims = list(levels), [24, 36, 52]
    per_residue = np.asarray(ladder.transform(levels))
    pooled_transform = np.stack([per_residue[groups == g].mean(axis=0) for g in range(100)])
    for name, dim in zip(names, dims):
        np.testing.assert_allclose(features[FeatureKey("rd", name, dim)], pooled_transform[:, :dim], rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(features[FeatureKey("esm2", name, dim)], pooled[name])
    np.testing.assert_array_equal(features[FeatureKey("rd", "L0", 24)], pooled["L0"])  # level 1 is ESM-2 itself
    naive_levels = naive.transform(pooled)
    np.testing.assert_allclose(features[FeatureKey("naive", "L2", 52)], naive_levels["L2"])
    nested = {k for k in features if k.representation == "nested"}
    assert sorted(k.dim for k in nested) == prefix_dims(dims)
    assert features[FeatureKey("nested", "L1", 36)] is features[FeatureKey("rd", "L1", 36)]  # fitted once
    np.testing.assert_allclose(features[FeatureKey("nested", "L2", 47)], pooled_transform[:, :47], rtol=1e-9, atol=1e-9)
    assert {k.representation for k in features} == set(REPRESENTATIONS)


def test_build_features_errors(fitted):
    levels, ladder, naive = fitted
    pooled = {name: values[:10] for name, values in levels.items()}
    with pytest.raises(ValueError, match="needs a fitted NaiveConcatPCA"):
        build_features(pooled, ladder, None)
    with pytest.raises(ValueError, match="ladder's levels in order"):
        build_features(dict(reversed(list(pooled.items()))), ladder, naive)
    with pytest.raises(ValueError, match="representations="):
        build_features(pooled, ladder, naive, representations=("umap",))
    with pytest.raises(ValueError, match="prefix dim=99"):
        build_features(pooled, ladder, naive, dims=[99])


def test_end_to_end_on_a_real_assay_with_tiny_models(proteingym_dir, tmp_path, caplog):
    reference = load_reference(proteingym_dir)
    assay = read_assay(PIN1, data_dir=proteingym_dir, reference=reference)
    store_path = tmp_path / "store.h5"
    with caplog.at_level(logging.INFO, logger="revdistill.experiment.features"):
        calls = []
        results = run_benchmark([assay], TINY, store=store_path, data_dir=proteingym_dir,
                                callback=lambda *a: calls.append(a))
    assert calls == [(1, 1, PIN1)]
    assert "embedded 686 new sequence(s)" in caplog.text
    per_scheme = 3 * 3 + len(prefix_dims((32, 48, 64)))
    assert len(results) == len(SCHEMES) * per_scheme
    assert set(results["fold_source"]) == {"generated"} and set(results["n_variants"]) == {686}
    assert results["spearman"].between(-1, 1).all() and (results["mse"] > 0).all()
    first = results[results["dim"] == 32].groupby("scheme")["spearman"].nunique()
    assert (first == 1).all()  # level 1 is the same matrix for every representation
    # A second run computes nothing again and gives the same numbers.
    store = EmbeddingStore(store_path)
    assert embed_assays([assay], store, TINY, progress=False) == 0
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="revdistill.experiment.features"):
        again = run_benchmark([PIN1], TINY, store=store, data_dir=proteingym_dir, schemes=("fold_modulo_5",))
    assert "embedded 0 new sequence(s)" in caplog.text
    expected = results[results["scheme"] == "fold_modulo_5"].reset_index(drop=True)
    np.testing.assert_allclose(again["spearman"], expected["spearman"], rtol=1e-10)
    assert assay_records(assay)[0] == (f"{PIN1}:A26D", assay.variants["mutated_sequence"].iloc[0])
    # A ladder fitted elsewhere (here: saved from the same store) gives the same reverse-distilled numbers.
    ladder, _ = fit_transforms(store)
    saved = ladder.save(tmp_path / "ladder.npz")
    given = run_benchmark([assay], TINY, store=store, ladder=saved, schemes=("fold_random_5",), representations=("rd",))
    expected = results[(results.scheme == "fold_random_5") & (results.representation == "rd")].reset_index(drop=True)
    np.testing.assert_allclose(given["spearman"], expected["spearman"], rtol=1e-10)
    with pytest.raises(ValueError, match="differ from models"):
        run_benchmark([assay], TINY[:2], store=tmp_path / "other.h5", ladder=ladder, schemes=("fold_random_5",))


def test_run_benchmark_needs_a_ladder_small_to_large(proteingym_dir, tmp_path):
    with pytest.raises(ValueError, match="at least 2 models"):
        run_benchmark([PIN1], ("tiny-32",), store=tmp_path / "s.h5", data_dir=proteingym_dir)
    with pytest.raises(ValueError, match=r"small to large \(widths \[64, 32\]\)"):
        run_benchmark([PIN1], ("tiny-64", "tiny-32"), store=tmp_path / "s.h5", data_dir=proteingym_dir)
    with pytest.raises(ValueError, match="unknown model 'huge'"):
        run_benchmark([PIN1], ("tiny-32", "huge"), store=tmp_path / "s.h5", data_dir=proteingym_dir)
