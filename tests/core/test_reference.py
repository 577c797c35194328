"""Import of the authors' published scaler files (synthetic files with their key layout)."""
from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from revdistill import load_reference_ladder, load_reference_scaler


def write_scaler(folder, small, large, d_small, d_large, regressor="pcr", seed=0, n_pcs=7):
    """A file laid out like the authors' ``rdScaler.get_state_dict()`` output."""
    rng = np.random.default_rng(seed)
    state = {
        "pca__mean_": rng.normal(size=d_large) * 0.01,
        "pca__components_": np.linalg.qr(rng.normal(size=(d_large, d_large - d_small)))[0].T,
        "pca__explained_variance_": np.sort(rng.random(d_large - d_small))[::-1],
        "pca__explained_variance_ratio_": np.sort(rng.random(d_large - d_small))[::-1] / 10,
        "pca__n_components": np.array(d_large - d_small),
    }
    if regressor == "pcr":
        state.update({
            "regressor__coef_": rng.normal(size=(d_large, n_pcs)),
            "regressor__intercept_": rng.normal(size=d_large) * 1e-3,
            "regressor__input_mean_": rng.normal(size=d_small),
            "regressor__output_mean_": rng.normal(size=d_large),
            "regressor__input_components_": np.linalg.qr(rng.normal(size=(d_small, d_small)))[0],
            "regressor__n_significant_pcs_": np.array(n_pcs),
            "regressor__johnstone_threshold_": np.array(0.5),
        })
    else:
        state.update({"regressor__coef_": rng.normal(size=(d_large, d_small)),
                      "regressor__intercept_": rng.normal(size=d_large)})
    path = folder / f"rd-scaler-{small}-{large}-{regressor}-fbpca-1000.npz"
    np.savez(path, **state)
    return path, state


def authors_step(state, small, large, regressor):
    """The authors' published prediction and residual projection, from their key layout."""
    if regressor == "pcr":
        k = int(state["regressor__n_significant_pcs_"])
        scores = (small - state["regressor__input_mean_"]) @ state["regressor__input_components_"][:, :k]
        prediction = scores @ state["regressor__coef_"].T + state["regressor__intercept_"] \
            + state["regressor__output_mean_"]
    else:
        prediction = small @ state["regressor__coef_"].T + state["regressor__intercept_"]
    block = (large - prediction - state["pca__mean_"]) @ state["pca__components_"].T
    return np.concatenate([small, block], axis=1)


@pytest.mark.parametrize("regressor", ["pcr", "linear", "ridge"])
def test_single_scaler_matches_authors_formula(tmp_path, regressor):
    path, state = write_scaler(tmp_path, "8M", "35M", 20, 30, regressor=regressor)
    step = load_reference_scaler(path)
    rng = np.random.default_rng(5)
    small, large = rng.normal(size=(50, 20)), rng.normal(size=(50, 30))
    assert_allclose(step.transform(small, large), authors_step(state, small, large, regressor), atol=1e-10)
    assert step.n_components_ == 10


def test_ladder_from_folder(tmp_path):
    _, first = write_scaler(tmp_path, "8M", "35M", 20, 30, seed=1)
    _, second = write_scaler(tmp_path, "35M", "150M", 30, 44, seed=2)
    ladder = load_reference_ladder(tmp_path, sizes=("8M", "35M", "150M"))
    assert ladder.dims_ == (20, 30, 44)
    rng = np.random.default_rng(0)
    levels = {"8M": rng.normal(size=(40, 20)), "35M": rng.normal(size=(40, 30)), "150M": rng.normal(size=(40, 44))}
    nested_1 = authors_step(first, levels["8M"], levels["35M"], "pcr")
    expected = authors_step(second, nested_1, levels["150M"], "pcr")
    assert_allclose(ladder.transform(levels).values, expected, atol=1e-10)
    joint = np.concatenate(list(levels.values()), axis=1)
    assert_allclose(joint @ ladder.affine_weights_ + ladder.affine_offset_, expected, atol=1e-9)


def test_missing_file_names_what_to_put_where(tmp_path):
    write_scaler(tmp_path, "8M", "35M", 20, 30)
    with pytest.raises(FileNotFoundError, match=r"rd-scaler-35M-150M-pcr-<pca>-<n>\.npz in "):
        load_reference_ladder(tmp_path, sizes=("8M", "35M", "150M"))


def test_missing_keys(tmp_path):
    path = tmp_path / "rd-scaler-8M-35M-pcr-fbpca-10.npz"
    np.savez(path, regressor__coef_=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="lacks the keys"):
        load_reference_scaler(path)


def test_bad_name_and_pickle(tmp_path):
    with pytest.raises(ValueError, match="not named like the authors' scaler files"):
        load_reference_scaler(tmp_path / "scaler.npz")
    path = tmp_path / "rd-scaler-8M-35M-pcr-fbpca-10.npz"
    np.savez(path, regressor__coef_=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="pickled objects"):
        load_reference_scaler(path)
