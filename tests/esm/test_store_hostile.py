"""A store is trusted for what it is (issue 16): it may not reach outside itself, lose its checksums, mix vectors
made two ways, or lose its link; any text is a valid record id."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from revdistill.esm.store import EmbeddingStore, StoreDamagedError

from conftest import embed_into, random_records
from filecheck import unchanged

MODELS = ("tiny-32", "tiny-48")
SECRET = b"known bytes outside the store " * 40
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def store(tmp_path):
    store = EmbeddingStore(tmp_path / "store" / "s.h5")
    embed_into(store, random_records(6, low=10, high=30, seed=2, prefix="q"), MODELS)
    return store


def outside_file(folder) -> str:
    """A file outside the store holding known bytes (and an HDF5 file beside it with a dataset of them)."""
    path = folder / "outside.bin"
    path.write_bytes(SECRET)
    with h5py.File(folder / "outside.h5", "w") as handle:
        handle["data"] = np.frombuffer(SECRET[:6 * 32 * 4], dtype=np.float32).reshape(6, 32)
    return str(path)


def make_hostile(path, how: str, outside: str) -> None:
    """Replace ``pooled/tiny-32`` (6 x 32 float32) with a dataset or link of the kind ``how``."""
    name = "pooled/tiny-32"
    with h5py.File(path, "a") as handle:
        values = handle[name][()]
        del handle[name]
        if how == "external storage":
            handle.create_dataset(name, shape=values.shape, dtype=values.dtype,
                                  external=[(outside, 0, values.nbytes)])
        elif how == "external link":
            handle[name] = h5py.ExternalLink(outside.replace(".bin", ".h5"), "/data")
        elif how == "soft link":
            handle.create_dataset("elsewhere", data=values, chunks=values.shape, fletcher32=True)
            handle[name] = h5py.SoftLink("/elsewhere")
        elif how == "virtual dataset":
            layout = h5py.VirtualLayout(shape=values.shape, dtype=values.dtype)
            layout[:] = h5py.VirtualSource(outside.replace(".bin", ".h5"), "data", shape=values.shape)
            handle.create_virtual_dataset(name, layout)
        elif how == "no fletcher32":
            handle.create_dataset(name, data=values, chunks=values.shape)
        else:
            raise ValueError(how)


HOSTILE = {
    "external storage": r"pooled/tiny-32 keeps its data in external file\(s\) \[.*outside\.bin",
    "external link": r"pooled/tiny-32 is an external link to .*outside\.h5:/data",
    "soft link": r"pooled/tiny-32 is a soft link to /elsewhere",
    "virtual dataset": r"pooled/tiny-32 is a virtual dataset",
    "no fletcher32": r"pooled/tiny-32 has lost its fletcher32 checksum filter",
}


@pytest.mark.parametrize("how", sorted(HOSTILE))
def test_a_store_reaching_outside_itself_is_refused_on_open_and_merge(store, tmp_path, how):
    store._consolidate_unlocked = lambda: 0  # new records wait in part files
    embed_into(store, random_records(9, low=10, high=30, seed=2, prefix="q"), MODELS)
    del store._consolidate_unlocked
    assert store._pending_parts()
    make_hostile(store.path, how, outside_file(tmp_path))
    with unchanged(tmp_path):
        with pytest.raises(ValueError, match=rf"store .*s\.h5: {HOSTILE[how]}.*a store may only hold its own"):
            EmbeddingStore(store.path)
        with pytest.raises(ValueError, match=HOSTILE[how]):
            store.pooled("tiny-32")
        with pytest.raises(ValueError, match=HOSTILE[how]):  # the outside bytes are never copied into a merge
            store.consolidate()


def test_the_fletcher32_check_is_made_on_every_read_too(store, monkeypatch):
    """Even past the check on open, a dataset read without its filter is refused."""
    from revdistill.esm import _hdf5

    make_hostile(store.path, "no fletcher32", "unused")
    monkeypatch.setattr(_hdf5, "check_self_contained", lambda handle, what: None)
    with pytest.raises(StoreDamagedError, match=r"s\.h5 is damaged: pooled/tiny-32: has lost its fletcher32"):
        store.pooled("tiny-32")


@pytest.mark.parametrize("first, second, differs", [
    ({"long_sequences": "truncate"}, {"long_sequences": "window"}, "long_sequences"),
    ({"dtype": "fp32"}, {"dtype": "bf16"}, "dtype"),
])
def test_a_rerun_with_other_numerics_is_refused(tmp_path, first, second, differs):
    store = EmbeddingStore(tmp_path / "s.h5")
    data = random_records(4, low=10, high=30, seed=4)
    embed_into(store, data, MODELS, **first)
    with unchanged(tmp_path), pytest.raises(ValueError, match=rf"store .*s\.h5 holds vectors made with .*; this run "
                                                              rf"makes them with .*\(differs: {differs}\)\. Vectors "
                                                              rf"made two ways cannot share a store: use another "
                                                              rf"--store"):
        embed_into(store, data + random_records(2, seed=9, prefix="new"), MODELS, **second)
    assert embed_into(store, data, MODELS, **first) == 0  # the same settings: nothing to add, as before


def test_parts_made_two_ways_are_not_merged(tmp_path):
    store = EmbeddingStore(tmp_path / "s.h5")
    data = random_records(6, low=10, high=30, seed=4)
    store._consolidate_unlocked = lambda: 0  # parts stay pending
    embed_into(store, data[:3], MODELS, long_sequences="truncate")
    embed_into(store, data[3:], MODELS, long_sequences="window")
    del store._consolidate_unlocked
    with unchanged(tmp_path), pytest.raises(ValueError, match=r"part file .* holds vectors made with dtype=fp32, "
                                                              r"long_sequences=(window|truncate), .* vectors made "
                                                              r"two ways cannot share a store"):
        store.consolidate()


def test_a_store_reached_through_a_symlink_is_updated_where_it_points(store, tmp_path):
    link = tmp_path / "link.h5"
    link.symlink_to(store.path)
    before = store.ids()
    embed_into(EmbeddingStore(link), random_records(9, low=10, high=30, seed=2, prefix="q")
               + [("extra", "MKVLAAG")], MODELS)
    assert link.is_symlink() and os.path.realpath(link) == str(store.path)
    assert EmbeddingStore(link).parts_dir == store.parts_dir  # one store: one lock, one parts folder
    assert not (tmp_path / "link.h5.lock").exists() and not (tmp_path / "link.h5.parts").exists()
    assert store.ids() == before + ["q6", "q7", "q8", "extra"]
    assert EmbeddingStore(link).ids() == store.ids()


def test_non_ascii_record_ids_are_stored_as_utf8(tmp_path):
    store = EmbeddingStore(tmp_path / "s.h5")
    ids = ["prot_ü", "essai_é", "蛋白", "plain"]
    embed_into(store, [(record_id, "MKVLAAGIVG"[: 5 + i]) for i, record_id in enumerate(ids)], MODELS,
               per_residue=["prot_ü"])
    assert store.ids() == ids
    assert store.per_residue_ids() == ["prot_ü"]
    assert store.per_residue("tiny-32", "prot_ü").shape == (5, 32)
    with h5py.File(store.path) as handle:
        assert h5py.check_string_dtype(handle["ids"].dtype).encoding == "utf-8"
    store.verify()
