"""Faults the store must survive: flipped bytes, a full disk, a consolidation during a write, read-only stores."""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest

from revdistill.io.files import LockBusyError
from revdistill.esm import _hdf5
from revdistill.esm.store import EmbeddingStore, StoreDamagedError

from conftest import embed_into, random_records
from filecheck import digests, unchanged

MODELS = ("tiny-32", "tiny-48")
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def records(n: int = 12, seed: int = 7):
    return random_records(n, low=10, high=40, seed=seed, prefix="q")


def snapshot(store: EmbeddingStore) -> dict:
    """Everything a reader can get out of a store."""
    info = store.info()
    info.pop("path")
    found = {"ids": store.ids(), "info": info, "hashes": store.sequence_hashes(), "lengths": store.lengths().tolist()}
    for model in store.models():
        found[model] = store.pooled(model)[1].tobytes()
        found[f"per-residue {model}"] = [store.per_residue(model, i).tobytes() for i in store.per_residue_ids()]
    moments = store.moments()
    found["moments"] = (moments.count, moments.mean.numpy().tobytes(), moments.scatter.numpy().tobytes())
    return found


def with_pending_parts(path, data, first: int = 6, flush_every: int = 3) -> EmbeddingStore:
    """A store holding ``data[:first]`` plus unmerged part files for the rest."""
    store = EmbeddingStore(path)
    embed_into(store, data[:first], MODELS, per_residue=[data[0][0]])
    store._consolidate_unlocked = lambda: 0  # the runner's merges do nothing: the parts stay pending
    embed_into(store, data, MODELS, flush_every=flush_every)
    del store._consolidate_unlocked
    assert len(store._pending_parts()) >= 2
    return store


def flip(path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x04
    path.write_bytes(bytes(data))


def offset_of(path, values: np.ndarray) -> int:
    offset = path.read_bytes().find(np.ascontiguousarray(values).tobytes())
    assert offset >= 0
    return offset


# ------------------------------------------------------------------------------------------- flipped bytes
def test_flipped_bytes_anywhere_are_reported_or_harmless(tmp_path):
    """A byte flipped anywhere in the file: every read gives the original values or a StoreDamagedError /
    ValueError naming the file; never other values (a full sweep of every 5th byte found no exception)."""
    path = tmp_path / "s.h5"
    store = with_pending_parts(path, records())
    store.consolidate()
    good = snapshot(store)
    size = path.stat().st_size
    damaged = tmp_path / "damaged.h5"
    outcomes = {"same": 0, "reported": 0}
    for offset in np.linspace(0, size - 1, 61).astype(int):
        damaged.write_bytes(path.read_bytes())
        flip(damaged, int(offset))
        try:
            found = snapshot(EmbeddingStore(damaged))
            EmbeddingStore(damaged).verify()
        except ValueError as error:
            assert str(damaged) in str(error)
            outcomes["reported"] += 1
        else:
            assert found == good, f"flip at byte {offset} changed what readers get"
            outcomes["same"] += 1
    assert outcomes["reported"] > 40


def test_a_flip_in_the_vectors_names_the_dataset(tmp_path):
    path = tmp_path / "s.h5"
    store = EmbeddingStore(path)
    embed_into(store, records(), MODELS)
    flip(path, offset_of(path, store.pooled("tiny-48")[1][3]) + 2)
    with pytest.raises(StoreDamagedError, match=rf"store {path} is damaged: pooled/tiny-48: .*filter"):
        store.pooled("tiny-48")
    store.pooled("tiny-32")  # the other datasets still read
    with pytest.raises(StoreDamagedError, match="pooled/tiny-48"):
        store.verify()
    with unchanged(path), pytest.raises(StoreDamagedError, match=rf"store {path} is damaged: pooled/tiny-48"):
        embed_into(store, records(14), MODELS)  # the merge reads the main file, refuses it and leaves it alone
    assert len(store._pending_parts()) == 1  # the new records wait in their part for a repaired store


def test_a_damaged_part_is_set_aside_and_its_records_embedded_again(tmp_path, caplog):
    data = records(12)
    path = tmp_path / "s.h5"
    store = with_pending_parts(path, data)
    part = store._pending_parts()[1]
    with h5py.File(part) as handle:
        first = handle["pooled/tiny-32"][0]
    flip(part, offset_of(part, first) + 1)
    with caplog.at_level(logging.WARNING, logger="revdistill.esm.store"):
        added = embed_into(store, data, MODELS)
    assert added == 3  # the damaged part's records, embedded again
    assert f"part file {part} is damaged: pooled/tiny-32" in caplog.text
    assert f"set aside as {part.name}.corrupt" in caplog.text
    assert (part.parent / f"{part.name}.corrupt").exists() and not store._pending_parts()
    clean = EmbeddingStore(tmp_path / "clean.h5")
    embed_into(clean, data, MODELS)
    assert sorted(store.ids()) == sorted(clean.ids())
    np.testing.assert_allclose(store.moments().scatter, clean.moments().scatter, rtol=1e-6, atol=1e-4)
    store.verify()


def test_version_1_stores_are_read_and_upgraded_by_the_next_merge(tmp_path):
    data = records(10)
    store = EmbeddingStore(tmp_path / "s.h5")
    embed_into(store, data[:6], MODELS)
    expected = snapshot(store)
    downgrade_to_version_1(store.path)
    expected["info"]["numerics"] = None  # version 1 does not record how its vectors were made
    assert snapshot(EmbeddingStore(store.path)) == expected
    embed_into(store, data, MODELS)
    with h5py.File(store.path) as handle:
        assert handle.attrs["version"] == b"3"
    assert store.info()["numerics"] == {"dtype": "fp32", "long_sequences": "window"}  # recorded by the merge
    assert store.ids()[:6] == expected["ids"] and len(store.ids()) == 10
    store.verify()


def downgrade_to_version_1(path) -> None:
    """Rewrite a store the way revdistill 0.2 wrote it: variable-length strings, no checksums."""
    with h5py.File(path) as source:
        arrays = {}
        source.visititems(lambda name, item: arrays.update({name: item[()]})
                          if isinstance(item, h5py.Dataset) else None)
        attrs = {key: bytes(source.attrs[key]).decode() for key in ("format", "models", "dims", "storage_dtype")}
    with h5py.File(path, "w") as out:
        out.attrs.update(attrs)
        out.attrs["version"] = 1
        for name, values in arrays.items():
            if values.dtype.kind == "S":
                out.create_dataset(name, data=[v.decode() for v in values], dtype=h5py.string_dtype())
            else:
                out.create_dataset(name, data=values)


# ------------------------------------------------------------------------------------------- full disk
def test_full_disk_during_a_merge_changes_nothing_and_the_retry_succeeds(tmp_path, monkeypatch):
    """The disk fills up half-way through a merge (injected ENOSPC): one clear error, the partial copy
    removed, the store and its parts untouched; with space again, the same call gives the clean result."""
    data = records()
    store = with_pending_parts(tmp_path / "s.h5", data)
    copy_rows = _hdf5.copy_rows
    calls = []

    def fill_up(*args, **kwargs):
        calls.append(args[2])
        if len(calls) == 4:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return copy_rows(*args, **kwargs)

    monkeypatch.setattr("revdistill.esm._parts.copy_rows", fill_up)
    with unchanged(tmp_path), pytest.raises(OSError, match=r"no space left on the device of store .*s\.h5 while "
                                                           r"merging part files; nothing was changed") as caught:
        store.consolidate()
    assert caught.value.errno == errno.ENOSPC
    assert not list(tmp_path.glob(".s.h5.*.tmp"))
    monkeypatch.setattr("revdistill.esm._parts.copy_rows", copy_rows)
    assert store.consolidate() == 2
    clean = EmbeddingStore(tmp_path / "clean.h5")
    embed_into(clean, data[:6], MODELS, per_residue=[data[0][0]])
    embed_into(clean, data, MODELS, flush_every=3)
    assert snapshot(store) == snapshot(clean)


@contextlib.contextmanager
def mounted_tmpfs(folder, size: str):
    """A small tmpfs at ``folder`` (needs root and mount rights); skips the test where it cannot be mounted."""
    folder.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.decode().strip()}); the injected-ENOSPC test covers it")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


RACE = textwrap.dedent("""
    import json, os, sys
    from pathlib import Path
    from revdistill.esm import _hdf5
    from revdistill.esm.store import EmbeddingStore
    root, check = Path(sys.argv[1]), sys.argv[2]
    if check == "skip":  # the free-space check passes, then the disk fills up while HDF5 writes
        _hdf5.ensure_space = lambda *args: None
    free = os.statvfs(root).f_bavail * os.statvfs(root).f_frsize
    (root / "filler").write_bytes(bytes(free - 40_000))
    store = EmbeddingStore(root / "s.h5")
    try:
        store.consolidate()
        first = "merged"
    except OSError as error:
        first = f"errno={error.errno}: {error.strerror}"
    left = sorted(p.name for p in root.iterdir()) + sorted(p.name for p in (root / "s.h5.parts").iterdir())
    (root / "filler").unlink()
    print(json.dumps({"first": first, "left": left, "second": store.consolidate(), "n": len(store.ids())}))
""")


@pytest.mark.parametrize("check", ["keep", "skip"])
def test_a_real_full_disk_on_a_small_tmpfs(tmp_path, check):
    """On a 1 MB tmpfs: the merge is refused before HDF5 writes (``keep``), or HDF5 hits ENOSPC mid-write
    (``skip``: the check bypassed); either way one clean error, nothing changed, no crash at exit, and
    the retry with space freed merges everything."""
    data = records()
    source = with_pending_parts(tmp_path / "src" / "s.h5", data)
    with mounted_tmpfs(tmp_path / "mnt", "1m") as root:
        subprocess.run(["cp", "-r", str(source.path), str(source.parts_dir), str(root)], check=True)
        before = digests(root)
        done = subprocess.run([sys.executable, "-c", RACE, str(root), check], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]  # no segmentation fault at exit
        report = json.loads(done.stdout)
        assert report["first"].startswith("errno=28: ") and "nothing was changed" in report["first"]
        parts = sorted(part.name for part in source._pending_parts())
        assert report["left"] == ["filler", "s.h5", "s.h5.lock", "s.h5.parts", *parts]  # nothing else, nothing lost
        assert report["second"] == 2 and report["n"] == len(data)
        assert before != digests(root)
        source.consolidate()
        assert snapshot(EmbeddingStore(root / "s.h5")) == snapshot(source)  # the clean result


# ------------------------------------------------------------------------------------------- concurrency
WRITER = textwrap.dedent("""
    import sys, time, torch
    from revdistill.esm.embed import LadderEmbedder
    from revdistill.esm.runner import EmbedOptions, LocalEmbedder
    from revdistill.esm.store import EmbeddingStore
    torch.set_num_threads(1)
    forward = LadderEmbedder._forward
    def slow_forward(self, tokens):  # a slow model, so the other process acts mid-run
        time.sleep(0.1)
        return forward(self, tokens)
    LadderEmbedder._forward = slow_forward
    records = [(f"w{i}", "MKVLAAGIVG"[: 5 + i % 5] * 3) for i in range(24)]
    store = EmbeddingStore(sys.argv[1])
    print(LocalEmbedder(EmbedOptions(flush_every=2)).embed(store, records, ("tiny-32", "tiny-48")))
""")


def test_consolidate_during_another_process_write_waits_and_kills_nothing(tmp_path):
    path = tmp_path / "shared.h5"
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    parts = tmp_path / "shared.h5.parts"
    deadline = time.monotonic() + 60
    while not list(parts.glob("part-*.h5")):
        assert writer.poll() is None, writer.stderr.read()
        assert time.monotonic() < deadline, "the writer wrote no part"
        time.sleep(0.01)
    store = EmbeddingStore(path)
    with pytest.raises(LockBusyError, match="held by another process"):
        store.consolidate(wait=False)
    assert store.consolidate() == 0  # waits for the writer, which merged its own parts
    out, err = writer.communicate(timeout=120)
    assert writer.returncode == 0, err
    assert out.strip() == "24" and len(store.ids()) == 24
    store.verify()


# ------------------------------------------------------------------------------------------- read-only
@contextlib.contextmanager
def read_only(folder):
    """Make ``folder`` read-only for this process: a read-only tmpfs remount as root, chmod otherwise."""
    if os.geteuid() != 0:
        modes = {path: path.stat().st_mode for path in [folder, *folder.rglob("*")]}
        for path in modes:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    done = subprocess.run(["mount", "-o", "remount,ro", str(folder)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot remount read-only here: {done.stderr.decode().strip()}")
    try:
        yield
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(folder)], check=False)


def test_a_read_only_store_is_read_and_nothing_needs_the_lock(tmp_path):
    from revdistill.cli import main

    data = records(8)
    with mounted_tmpfs(tmp_path / "shared", "4m") as folder:
        store = EmbeddingStore(folder / "s.h5")
        embed_into(store, data, MODELS)
        (folder / "s.h5.lock").unlink()  # a shared store whose lock file was never made, or cleaned up
        fasta = tmp_path / "in.fasta"
        fasta.write_text("".join(f">{i}\n{s}\n" for i, s in data))
        expected = snapshot(store)
        with read_only(folder), unchanged(folder):
            assert snapshot(EmbeddingStore(folder / "s.h5")) == expected
            assert embed_into(EmbeddingStore(folder / "s.h5"), data, MODELS) == 0  # nothing to embed: no lock needed
            assert main(["embed", str(fasta), "--models", ",".join(MODELS), "--out", str(folder / "s.h5"),
                         "--device", "cpu", "--no-progress"]) == 0
            fasta.write_text(fasta.read_text() + ">new\nMKVLA\n")
            assert main(["embed", str(fasta), "--models", ",".join(MODELS), "--out", str(folder / "s.h5"),
                         "--device", "cpu", "--no-progress"]) == 2
