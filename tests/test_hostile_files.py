"""Files are trusted for what they are, not for what they say (issue 16): npz files that declare more than
they hold (zip bombs, forged headers), a ladder and its naive sidecar written and read as one pair.

Each test builds the hostile file or fault, asserts the clear message (file and entry named, what is
allowed) and that nothing on disk changed (SHA-256 digests).
"""
from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from revdistill import DistillationLadder, Moments, NaiveConcatPCA
from revdistill.io.files import load_npz, save_npz_together
from revdistill.experiment.ladders import ladder_from_file, save_ladder_pair

from conftest import make_levels
from filecheck import unchanged

LOADERS = {"ladder": DistillationLadder.load, "naive": NaiveConcatPCA.load, "moments": Moments.load}


@pytest.fixture(scope="module")
def fitted():
    moments = Moments.from_arrays(make_levels(600, dims=(8, 12, 16)))
    other = Moments.from_arrays(make_levels(600, dims=(8, 12, 16), seed=5))
    return {"moments": moments, "ladder": DistillationLadder().fit_moments(moments),
            "naive": NaiveConcatPCA().fit_moments(moments), "other_ladder": DistillationLadder().fit_moments(other),
            "other_naive": NaiveConcatPCA().fit_moments(other)}


def npy_header(shape, dtype="<f8") -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array_header_1_0(stream, {"descr": dtype, "fortran_order": False, "shape": shape})
    return stream.getvalue()


def write_bomb(path: Path, declared: int, entry: str = "step0__coef_") -> Path:
    """An npz whose entry declares ``declared`` bytes of zeros, deflated to about a thousandth of that."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open(f"{entry}.npy", "w", force_zip64=True) as stream:
            stream.write(npy_header((declared // 8,)))
            chunk = bytes(8 << 20)
            for _ in range(declared // len(chunk)):
                stream.write(chunk)
    return path


def with_entry(source: Path, target: Path, entry: str, data: bytes) -> Path:
    """A copy of npz ``source`` with the raw bytes of ``entry`` replaced (stored, uncompressed)."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            new.writestr(info.filename, data if info.filename == f"{entry}.npy" else old.read(info))
    return target


# ----------------------------------------------------------------------------------------- zip bombs
@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_a_zip_bomb_is_refused_naming_file_and_entry(tmp_path, kind):
    bomb = write_bomb(tmp_path / f"{kind}.npz", 64 << 20, entry="meta")
    assert bomb.stat().st_size < 200_000
    with unchanged(tmp_path), pytest.raises(ValueError, match=rf"{kind}\.npz: entry 'meta' declares 64\.0 MiB that "
                                                              r"compress to .* a zip bomb\?\); refusing to expand"):
        LOADERS[kind](bomb)


def test_a_zip_bomb_is_refused_without_allocating_under_a_memory_limit(tmp_path):
    """Under an address-space limit too small for the declared array, the bomb is refused by the check (not a
    MemoryError); the control, numpy's own reader, runs out of memory on the same file."""
    bomb = write_bomb(tmp_path / "bomb.npz", 512 << 20)
    script = textwrap.dedent(f"""
        import resource, sys
        import numpy as np
        from revdistill import DistillationLadder
        size = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + (256 << 20), resource.RLIM_INFINITY))
        try:
            DistillationLadder.load({str(bomb)!r})
        except ValueError as error:
            print("refused:", error)
        try:
            np.load({str(bomb)!r})["step0__coef_"]
        except MemoryError:
            print("control: MemoryError")
    """)
    environment = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    with unchanged(tmp_path):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environment,
                              timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"refused: {bomb}: entry 'step0__coef_' declares 512.0 MiB that compress to" in done.stdout, done.stdout
    assert "control: MemoryError" in done.stdout, done.stdout


def test_an_entry_whose_header_declares_terabytes_is_refused(fitted, tmp_path):
    source = fitted["ladder"].save(tmp_path / "good.npz")
    forged = with_entry(source, tmp_path / "forged.npz", "step0__coef_", npy_header(((7 << 40) // 8,)) + bytes(64))
    with unchanged(tmp_path), pytest.raises(ValueError, match=r"forged\.npz: entry 'step0__coef_': its header declares "
                                                              r"shape \(962072674304,\) of float64 \(7\.0 TiB\) but "
                                                              r"the archive declares 64 bytes"):
        DistillationLadder.load(forged)


def test_an_entry_larger_than_memory_is_refused_before_reading(fitted, tmp_path, monkeypatch):
    path = fitted["moments"].save(tmp_path / "moments.npz")
    monkeypatch.setattr("revdistill.io.files._memory_limit", lambda: 1000)
    with unchanged(tmp_path), pytest.raises(ValueError, match=r"moments\.npz: entry 'scatter' declares .*, more than "
                                                              r"the 1000 bytes of memory this process may use"):
        load_npz(path)


def test_an_entry_that_is_not_an_array_is_refused(fitted, tmp_path):
    source = fitted["naive"].save(tmp_path / "naive.npz")
    odd = tmp_path / "odd.npz"
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(odd, "w") as new:
        for info in old.infolist():
            new.writestr(info, old.read(info))
        new.writestr("notes.txt", b"hello")
    with unchanged(tmp_path), pytest.raises(ValueError, match=r"odd\.npz: entry 'notes\.txt' is not an \.npy array"):
        NaiveConcatPCA.load(odd)


# ----------------------------------------------------------------------------------------- pairs
def test_a_pair_round_trips_and_is_recognised(fitted, tmp_path):
    ladder_path, naive_path = save_ladder_pair(fitted["ladder"], fitted["naive"], tmp_path / "pair.npz")
    assert naive_path == tmp_path / "pair.naive.npz"
    loaded = ladder_from_file(ladder_path)
    np.testing.assert_array_equal(loaded.naive.components_[0], fitted["naive"].components_[0])
    assert loaded.ladder.to_arrays().keys() == fitted["ladder"].to_arrays().keys()


def test_a_sidecar_from_another_fit_is_refused(fitted, tmp_path):
    save_ladder_pair(fitted["ladder"], fitted["naive"], tmp_path / "a.npz")
    save_ladder_pair(fitted["other_ladder"], fitted["other_naive"], tmp_path / "b.npz")
    os.replace(tmp_path / "b.naive.npz", tmp_path / "a.naive.npz")
    with unchanged(tmp_path), pytest.raises(ValueError, match=r"naive baseline .*a\.naive\.npz was written with "
                                                              r"another ladder than .*a\.npz .*must come from one "
                                                              r"`revdistill fit`"):
        ladder_from_file(tmp_path / "a.npz")


def test_an_unpaired_sidecar_with_other_provenance_is_refused(tmp_path):
    moments = Moments.from_arrays(make_levels(400, dims=(8, 12)))
    ladder = DistillationLadder().fit_moments(moments, provenance={"corpus": {"name": "a"}, "fit_on": "nested"})
    naive = NaiveConcatPCA().fit_moments(moments, provenance={"corpus": {"name": "b"}, "fit_on": "nested"})
    ladder.save(tmp_path / "x.npz")
    naive.save(tmp_path / "x.naive.npz")  # written alone, as older versions did: no pair record
    with unchanged(tmp_path), pytest.raises(ValueError, match=r"x\.naive\.npz was fitted with another corpus"):
        ladder_from_file(tmp_path / "x.npz")


@pytest.mark.parametrize("fault", ["second rename", "second write"])
def test_a_pair_is_written_whole_or_not_at_all(fitted, tmp_path, monkeypatch, fault):
    """The second file of a pair cannot be written (permission, full disk): both files stay as they were."""
    save_ladder_pair(fitted["ladder"], fitted["naive"], tmp_path / "pair.npz")
    if fault == "second rename":
        replace = os.replace

        def failing(source, target):
            if str(target).endswith(".naive.npz") and str(source).endswith(".tmp"):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(target))
            return replace(source, target)
        monkeypatch.setattr("revdistill.io.files.os.replace", failing)
        message = r"could not write .*pair\.naive\.npz \(Permission denied\); .* nothing was changed \(neither file\)"
    else:
        savez = np.savez

        def failing(stream, **arrays):
            if ".naive.npz" in stream.name:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return savez(stream, **arrays)
        monkeypatch.setattr("revdistill.io.files.np.savez", failing)
        message = r"no space left .* pair\.npz and pair\.naive\.npz; nothing was changed \(neither file\)"
    with unchanged(tmp_path), pytest.raises(OSError, match=message):
        save_ladder_pair(fitted["other_ladder"], fitted["other_naive"], tmp_path / "pair.npz")


def test_a_new_pair_that_fails_half_way_leaves_no_file(fitted, tmp_path, monkeypatch):
    replace = os.replace
    monkeypatch.setattr("revdistill.io.files.os.replace", lambda source, target: (
        (_ for _ in ()).throw(OSError(errno.EIO, "I/O error")) if str(target).endswith("b.npz") else
        replace(source, target)))
    with pytest.raises(OSError, match=r"nothing was changed"):
        save_npz_together([(tmp_path / "a.npz", {"x": np.arange(3)}), (tmp_path / "b.npz", {"y": np.arange(2)})])
    assert sorted(os.listdir(tmp_path)) == []
