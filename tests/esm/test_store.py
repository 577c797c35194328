"""The HDF5 embedding store: round trip, resume after kill -9, idempotent merging, clear errors."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import h5py
import numpy as np
import pytest
import torch

from revdistill.esm.embed import LadderEmbedder
from revdistill.esm.models.loading import tiny_ladder
from revdistill.esm.store import EmbeddingStore, sequence_hash

from conftest import embed_into, random_records as make_records

MODELS = ("tiny-32", "tiny-48", "tiny-64")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_records(n: int, seed: int = 0) -> list[tuple[str, str]]:
    return make_records(n, low=10, high=70, seed=seed, prefix="p")


def reference(records):
    return LadderEmbedder(tiny_ladder(), progress=False).run(records, per_residue=True)


def assert_store_matches(store: EmbeddingStore, records, expected) -> None:
    ids = store.ids()
    assert sorted(ids) == sorted(record_id for record_id, _ in records)  # nothing lost, nothing twice
    position = {record_id: index for index, record_id in enumerate(expected.ids)}
    order = [position[record_id] for record_id in ids]
    for model in MODELS:
        pooled_ids, pooled = store.pooled(model)
        assert pooled_ids == ids
        np.testing.assert_allclose(pooled, expected.pooled[model][order], rtol=1e-5, atol=1e-6)
    moments = store.moments()
    assert moments.names == MODELS and moments.count == expected.moments.count
    torch.testing.assert_close(moments.mean, expected.moments.mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(moments.scatter, expected.moments.scatter, rtol=1e-6, atol=1e-4)
    assert store.sequence_hashes() == {record_id: sequence_hash(seq) for record_id, seq in records}
    np.testing.assert_array_equal(store.lengths(), [len(dict(records)[record_id]) for record_id in ids])


def test_round_trip_and_resume_computes_only_missing_records(tmp_path):
    records = random_records(30)
    store = EmbeddingStore(tmp_path / "s.h5")
    assert not store.exists() and len(store) == 0
    assert embed_into(store, records[:12], MODELS, flush_every=5, per_residue=["p3"]) == 12
    assert embed_into(store, records, list(MODELS), flush_every=5, per_residue=["p3", "p20"]) == 18
    assert embed_into(store, records, "tiny-32,tiny-48,tiny-64") == 0
    expected = reference(records)
    assert_store_matches(store, records, expected)
    assert store.per_residue_ids() == ["p3", "p20"]
    np.testing.assert_allclose(store.per_residue("tiny-48", "p20"), expected.per_residue["tiny-48"]["p20"],
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(KeyError, match="no per-residue values stored for record 'p4'"):
        store.per_residue("tiny-48", "p4")
    assert store.info()["dims"] == [32, 48, 64] and store.models() == list(MODELS)
    assert not list(store.parts_dir.glob("*.h5"))  # all parts merged and removed


def test_kill_9_mid_run_then_rerun_loses_and_duplicates_nothing(tmp_path):
    records = random_records(40, seed=1)
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{record_id}\n{sequence}\n" for record_id, sequence in records))
    path = tmp_path / "killed.h5"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(f"""
        import time, torch
        from revdistill.esm.embed import LadderEmbedder
        from revdistill.esm.sequences import read_fasta
        from revdistill.esm.runner import EmbedOptions, LocalEmbedder
        from revdistill.esm.store import EmbeddingStore
        torch.set_num_threads(1)
        forward = LadderEmbedder._forward
        def slow_forward(self, tokens):  # a slow model, so the kill lands mid-run
            time.sleep(0.05)
            return forward(self, tokens)
        LadderEmbedder._forward = slow_forward
        LocalEmbedder(EmbedOptions(flush_every=3)).embed(EmbeddingStore({str(path)!r}),
                                                         read_fasta({str(fasta)!r}), {MODELS!r})
    """))
    process = subprocess.Popen([sys.executable, str(script)], stderr=subprocess.PIPE)
    parts_dir = tmp_path / "killed.h5.parts"
    deadline = time.monotonic() + 60
    while len(list(parts_dir.glob("part-*.h5"))) < 2:
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "no part file appeared"
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL
    done_before = sum(len(h5py.File(part, "r")["ids"]) for part in parts_dir.glob("part-*.h5"))
    assert 0 < done_before < len(records)

    store = EmbeddingStore(path)
    with pytest.raises(FileNotFoundError, match="holds only part files of an interrupted run"):
        store.ids()  # readers never write; the parts are merged by the next writer
    (parts_dir / ".part-x-r0-000009.h5.tmp").write_bytes(b"half written")  # what a kill leaves behind
    added = embed_into(store, records, MODELS, flush_every=3)  # the same command again
    assert not list(parts_dir.iterdir())
    assert added == len(records) - done_before
    assert_store_matches(store, records, reference(records))


def test_a_part_merged_before_a_crash_is_not_counted_twice(tmp_path):
    records = random_records(8, seed=2)
    store = EmbeddingStore(tmp_path / "s.h5")
    embed_into(store, records[:4], MODELS)
    store.consolidate = lambda: 0  # write parts for the rest without merging them, then keep a copy of one
    embed_into(store, records, MODELS, flush_every=2)
    del store.consolidate
    parts = sorted(store.parts_dir.glob("part-*.h5"))
    assert len(parts) == 2
    kept = tmp_path / "copy.h5"
    shutil.copy(parts[0], kept)
    assert store.consolidate() == 2
    shutil.copy(kept, parts[0])  # as if the process died between os.replace and deleting the parts
    assert store.consolidate() == 0 and not parts[0].exists()
    assert_store_matches(store, records, reference(records))


def test_float16_storage_and_changed_inputs(tmp_path):
    records = random_records(6, seed=3)
    store = EmbeddingStore(tmp_path / "half.h5")
    embed_into(store, records, MODELS[:2], storage_dtype="float16", per_residue=True)
    with h5py.File(store.path) as handle:
        assert handle["pooled/tiny-32"].dtype == np.float16
    expected = LadderEmbedder(tiny_ladder(MODELS[:2]), progress=False).run(records)
    ids, pooled = store.pooled("tiny-32")
    assert pooled.dtype == np.float32
    np.testing.assert_allclose(pooled, expected.pooled["tiny-32"], rtol=2e-3, atol=2e-3)
    with pytest.raises(ValueError, match="record 'p1' is already stored in .* with a different sequence"):
        embed_into(store, [("p1", "MKVLA")], MODELS[:2], storage_dtype="float16")
    with pytest.raises(ValueError, match=r"holds models \['tiny-32', 'tiny-48'\]; asked for \['tiny-32'\]"):
        embed_into(store, records, ["tiny-32"], storage_dtype="float16")
    with pytest.raises(ValueError, match="created with storage_dtype='float16'"):
        embed_into(store, records, MODELS[:2])
    with pytest.raises(ValueError, match=r"model 'tiny-64' is not in this store"):
        store.pooled("tiny-64")
    with pytest.raises(ValueError, match="storage_dtype='int8' must be one of"):
        embed_into(EmbeddingStore(tmp_path / "other.h5"), records, MODELS, storage_dtype="int8")


def test_corrupt_and_foreign_files_are_clear_errors(tmp_path):
    corrupt = tmp_path / "corrupt.h5"
    corrupt.write_bytes(b"\x89HDF\r\n\x1a\n" + os.urandom(2000))
    with pytest.raises(ValueError, match="is not a readable HDF5 file"):
        EmbeddingStore(corrupt)
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as handle:
        handle["x"] = np.arange(3)
    with pytest.raises(ValueError, match="is an HDF5 file but not a revdistill embedding store"):
        EmbeddingStore(foreign)
    future = tmp_path / "future.h5"
    with h5py.File(future, "w") as handle:
        handle.attrs["format"] = "revdistill-embedding-store"
        handle.attrs["version"] = 99
    with pytest.raises(ValueError, match="has store format version 99"):
        EmbeddingStore(future)
    with pytest.raises(FileNotFoundError, match="does not exist yet"):
        EmbeddingStore(tmp_path / "new.h5").pooled("tiny-32")


def test_concurrent_writers_take_turns_and_report_progress(tmp_path):
    """Two writers on one store (e.g. two dashboard visitors) serialise on the store's lock: each
    record is stored once and the later writer finds everything already embedded."""
    import threading

    records = random_records(12, seed=4)
    path = tmp_path / "shared.h5"
    added, errors, parts = [], [], []

    def write(report):
        try:
            added.append(embed_into(EmbeddingStore(path), records, MODELS, flush_every=5, on_progress=report))
        except Exception as error:  # noqa: BLE001 - collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(lambda done, total: parts.append((done, total)),))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert sorted(added) == [0, 12]
    assert parts == [(5, 12), (10, 12), (12, 12)]  # only the writer that embedded reports parts
    assert_store_matches(EmbeddingStore(path), records, reference(records))
