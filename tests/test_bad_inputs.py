"""Bad arrays and bad files for the core objects: one clear ValueError naming the file or array, nothing changed.

Files: :meth:`DistillationLadder.load`, :meth:`Moments.load`, :meth:`NaiveConcatPCA.load`,
:func:`load_reference_ladder` (the authors' scaler folders). Arrays: :class:`Moments` updates.
"""
from __future__ import annotations

import json
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from revdistill import DistillationLadder, Moments, NaiveConcatPCA, load_reference_ladder
from revdistill.core.arrays import as_float_tensor, check_finite

from conftest import make_levels
from core.test_reference import write_scaler
from filecheck import unchanged


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A fitted ladder, naive baseline and moments saved in a folder (read-only for the tests)."""
    folder = tmp_path_factory.mktemp("saved")
    moments = Moments.from_arrays(make_levels(600, dims=(8, 12, 16)))
    DistillationLadder().fit_moments(moments).save(folder / "ladder.npz")
    NaiveConcatPCA().fit_moments(moments).save(folder / "naive.npz")
    moments.save(folder / "moments.npz")
    return folder


def rewritten(source: Path, target: Path, edit) -> Path:
    with np.load(source, allow_pickle=False) as archive:
        state = {key: archive[key] for key in archive.files}
    edit(state)
    np.savez(target, **state)
    return target


def meta(edit):
    def apply(state):
        found = json.loads(state["meta"].tobytes())
        edit(found)
        state["meta"] = np.frombuffer(json.dumps(found).encode(), dtype=np.uint8)
    return apply


def flip_in_member(path: Path, member: str) -> None:
    """Flip one byte inside a zip member's data: its CRC no longer matches."""
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo(member)
    data = bytearray(path.read_bytes())
    name_length, extra_length = struct.unpack("<HH", data[info.header_offset + 26: info.header_offset + 30])
    data[info.header_offset + 30 + name_length + extra_length + info.compress_size - 3] ^= 0x10
    path.write_bytes(bytes(data))


def damaged_copy(saved, tmp_path, name, how):
    """A damaged copy of ``saved/name`` made ``how``; returns its path."""
    source, target = saved / name, tmp_path / f"bad-{name}"
    if how == "bad CRC":
        target.write_bytes(source.read_bytes())
        with zipfile.ZipFile(target) as archive:
            member = next(n for n in archive.namelist() if n != "meta.npy")
        flip_in_member(target, member)
    elif how == "truncated":
        target.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    elif how == "pickle":
        target.write_bytes(pickle.dumps({"coef_": [1.0, 2.0]}))
    elif how == "object array":
        np.savez(target, meta=np.frombuffer(b"{}", dtype=np.uint8), x=np.array([{"a": 1}], dtype=object))
    elif how == "no meta":
        rewritten(source, target, lambda state: state.pop("meta"))
    elif how == "meta not JSON":
        rewritten(source, target, lambda state: state.update(meta=np.frombuffer(b"{not json", dtype=np.uint8)))
    elif how == "future version":
        rewritten(source, target, meta(lambda found: found.update(version=99)))
    elif how == "empty file":
        target.write_bytes(b"")
    elif how == "NaN values":
        def poison(state):
            key = next(k for k in state if k != "meta" and state[k].dtype.kind == "f" and state[k].size > 1)
            state[key] = state[key] * np.nan
        rewritten(source, target, poison)
    elif how == "missing array":
        rewritten(source, target, lambda state: state.pop(next(k for k in sorted(state) if k not in ("meta", "count"))))
    else:
        raise ValueError(how)
    return target


LOADERS = {"ladder.npz": DistillationLadder.load, "naive.npz": NaiveConcatPCA.load, "moments.npz": Moments.load}
FILE_CASES = [
    ("bad CRC", r"is damaged \(entry '.*'\): Bad CRC-32"),
    ("truncated", r"is not a readable \.npz file"),
    ("pickle", r"is a pickle; revdistill only reads plain arrays"),
    ("object array", r"holds pickled objects in entry 'x'"),
    ("no meta", r"it has no 'meta' entry"),
    ("meta not JSON", r"its metadata is not valid JSON"),
    ("future version", r"file version 99 is not supported"),
    ("empty file", r"is not a readable \.npz file"),
    ("NaN values", r"NaN or infinity"),
    ("missing array", r"missing array|lacks the array"),
]


@pytest.mark.parametrize("name", sorted(LOADERS))
@pytest.mark.parametrize("how, message", FILE_CASES, ids=[case[0] for case in FILE_CASES])
def test_damaged_saved_files_are_one_clear_error(saved, tmp_path, name, how, message):
    path = damaged_copy(saved, tmp_path, name, how)
    with unchanged(tmp_path, saved), pytest.raises(ValueError, match=message) as caught:
        LOADERS[name](path)
    if how not in ("no meta", "meta not JSON", "future version"):  # read_meta's messages say the format instead
        assert path.name in str(caught.value)


@pytest.mark.parametrize("edit, message", [
    (meta(lambda found: found.pop("params")), r"ladder metadata lacks 'params'; the file is damaged"),
    (meta(lambda found: found.pop("steps")), r"ladder metadata lacks 'steps'"),
    (meta(lambda found: found.update(format="revdistill-naive")), r"its metadata says format='revdistill-naive'"),
    (lambda state: state.update(step0__coef_=state["step0__coef_"][:, :3]),
     r"maps 3 -> 7 dims; the levels need 8 -> 12"),
    (lambda state: state.update(step0__coef_=np.array(["a", "b"])), r"could not convert string to float"),
])
def test_ladder_files_with_wrong_content(saved, tmp_path, edit, message):
    path = rewritten(saved / "ladder.npz", tmp_path / "edited.npz", edit)
    with unchanged(tmp_path, saved), pytest.raises(ValueError, match=message):
        DistillationLadder.load(path)


@pytest.mark.parametrize("edit", [
    meta(lambda found: found.update(dims=[8, 12])),
    meta(lambda found: found["params"].update(bogus=1)),
    meta(lambda found: found.update(steps=[1, 2])),
    meta(lambda found: found["params"].update(regressor="lasso")),
], ids=["dims too short", "unknown parameter", "steps not objects", "unknown regressor"])
def test_ladder_metadata_of_the_wrong_type_is_a_value_error(saved, tmp_path, edit):
    path = rewritten(saved / "ladder.npz", tmp_path / "edited.npz", edit)
    with pytest.raises(ValueError, match="edited.npz"):
        DistillationLadder.load(path)


@pytest.mark.parametrize("edit, message", [
    (lambda state: state.update(count=np.array([1, 2])), r"'count' must be one non-negative integer, got \[1, 2\]"),
    (lambda state: state.update(count=np.array(-5)), r"'count' must be one non-negative integer, got -5"),
    (lambda state: state.update(scatter=state["scatter"][:3]), r"scatter \(3, 36\); the metadata needs"),
    (lambda state: state.update(scatter=-state["scatter"]), r"'scatter' has negative variances for level\(s\)"),
    (lambda state: state.update(mean=np.array(["x"] * 36)), r"'mean' has dtype <U1; expected numbers"),
    (meta(lambda found: found.update(names=5)), r"moments metadata \(names, dims\) is damaged"),
    (meta(lambda found: found.update(dims=["x", "y", "z"])), r"moments metadata \(names, dims\) is damaged"),
    (lambda state: state.pop("mean"), r"moments state lacks the array\(s\) \['mean'\]"),
])
def test_moments_files_with_wrong_content(saved, tmp_path, edit, message):
    path = rewritten(saved / "moments.npz", tmp_path / "edited.npz", edit)
    with unchanged(tmp_path, saved), pytest.raises(ValueError, match=message):
        Moments.load(path)


def test_missing_and_folder_paths(saved, tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        DistillationLadder.load(tmp_path / "none.npz")
    with pytest.raises(ValueError, match="is a folder, not an .npz file"):
        Moments.load(saved)


# ------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("scale, message", [
    (1e160, r"Moments of level\(s\) \['L1'\]: the accumulated scatter became NaN or infinite after 600 residues"),
    (np.inf, r"values contains NaN or infinity \(first bad row: 0\): column L1\[0\], infinity"),
])
def test_overflowing_or_infinite_inputs_are_refused_naming_the_level(scale, message):
    levels = make_levels(600, dims=(8, 12, 16))
    levels["L1"] = levels["L1"] * scale
    with pytest.raises(ValueError, match=message):
        Moments.from_arrays(levels)


def test_a_refused_batch_leaves_the_moments_unchanged():
    levels = make_levels(600, dims=(8, 12, 16))
    moments = Moments.from_arrays(levels)
    count, scatter = moments.count, moments.scatter.clone()
    with pytest.raises(ValueError, match=r"level\(s\) \['L2'\]"):
        moments.update({**levels, "L2": levels["L2"] * 1e200})
    assert moments.count == count and torch.equal(moments.scatter, scatter)
    huge = Moments.from_arrays({**levels, "L0": levels["L0"] * 1e150})
    with pytest.raises(ValueError, match=r"level\(s\) \['L0'\]: the accumulated scatter became NaN or infinite"):
        for _ in range(40):  # sums of squares overflow after a few doublings
            huge.merge(huge.copy())
    assert np.isfinite(huge.scatter.numpy()).all() and huge.count % 600 == 0


@pytest.mark.parametrize("values, message", [
    (np.array(["1", "2"]), r"x must hold real numbers \(float or int\), got dtype <U1"),
    (np.array([1 + 2j]), r"got dtype complex128"),
    (np.array([True, False]), r"got dtype bool"),
    ([[1.0, 2.0], [3.0]], r"x must be a numeric array, got list"),
    (None, r"x must be a numeric array, got NoneType"),
    (np.array([{"a": 1}], dtype=object), r"got dtype object"),
])
def test_arrays_that_are_not_real_numbers(values, message):
    with pytest.raises(ValueError, match=message):
        as_float_tensor(values, "x")


def test_big_endian_and_integer_arrays_convert():
    assert as_float_tensor(np.array([1.5], dtype=">f8"), "x").item() == 1.5
    assert as_float_tensor(np.array([3], dtype=np.int16), "x").dtype == torch.float64
    with pytest.raises(ValueError, match=r"small contains NaN or infinity \(first bad row: 2\): column 1, NaN"):
        check_finite(np.array([[0.0, 1.0], [2.0, 3.0], [4.0, np.nan]]), "small")


# ------------------------------------------------------------------------------------- reference scalers
@pytest.mark.parametrize("setup, sizes, error, message", [
    (lambda folder: None, ("8M", "35M"), FileNotFoundError, r"expected exactly one file rd-scaler-8M-35M-pcr"),
    (lambda folder: None, "8M,35M", ValueError, r"sizes='8M,35M' must be a sequence of size tags"),
    (lambda folder: None, ("8M",), ValueError, r"sizes must name at least 2 consecutive ESM-2 sizes"),
    (lambda folder: (folder / "rd-scaler-8M-35M-pcr-fbpca-1000.npz").write_bytes(pickle.dumps([1])), ("8M", "35M"),
     ValueError, r"rd-scaler-8M-35M-pcr-fbpca-1000.npz is a pickle"),
    (lambda folder: np.savez(folder / "rd-scaler-8M-35M-pcr-fbpca-1000.npz", x=np.arange(3)), ("8M", "35M"),
     ValueError, r"rd-scaler-8M-35M-pcr-fbpca-1000.npz lacks the keys \['regressor__coef_'"),
    (lambda folder: [write_scaler(folder, "8M", "35M", 20, 30), write_scaler(folder, "35M", "150M", 25, 40)],
     ("8M", "35M", "150M"), ValueError, r"do not chain"),
    (lambda folder: [write_scaler(folder, "8M", "35M", 20, 30),
                     (folder / "rd-scaler-8M-35M-pcr-incremental-1000.npz").write_bytes(b"")], ("8M", "35M"),
     FileNotFoundError, r"expected exactly one file .* found \['rd-scaler-8M-35M-pcr-fbpca-1000.npz', "
                        r"'rd-scaler-8M-35M-pcr-incremental-1000.npz'\]"),
], ids=["empty folder", "sizes as one string", "one size", "pickle", "missing keys", "dims do not chain",
        "two candidates"])
def test_reference_scaler_folders(tmp_path, setup, sizes, error, message):
    folder = tmp_path / "scalers"
    folder.mkdir()
    setup(folder)
    with unchanged(folder), pytest.raises(error, match=message):
        load_reference_ladder(folder, sizes=sizes)


def test_reference_scaler_file_with_a_bad_crc(tmp_path):
    path, _ = write_scaler(tmp_path, "8M", "35M", 20, 30)
    flip_in_member(path, "regressor__coef_.npy")
    with pytest.raises(ValueError, match=r"is damaged \(entry 'regressor__coef_'\): Bad CRC-32"):
        load_reference_ladder(tmp_path, sizes=("8M", "35M"))
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_reference_ladder(tmp_path / "nowhere", sizes=("8M", "35M"))
