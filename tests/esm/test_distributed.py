"""``torchrun --nproc-per-node 2 -m revdistill embed``: records sharded over 2 gloo ranks on the CPU."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import torch

from revdistill.esm.embed import LadderEmbedder
from revdistill.esm.models.loading import tiny_ladder
from revdistill.esm.store import EmbeddingStore

MODELS = ("tiny-32", "tiny-48")


def test_two_gloo_ranks_shard_records_and_combine_moments_exactly(tmp_path):
    rng = np.random.default_rng(0)
    amino = np.array(list("ACDEFGHIKLMNPQRSTVWY"))
    records = [(f"r{i}", "".join(rng.choice(amino, rng.integers(8, 60)))) for i in range(21)]
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{record_id}\n{sequence}\n" for record_id, sequence in records))
    store_path = tmp_path / "dist.h5"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "revdistill", "-v", "embed", str(fasta), "--models", ",".join(MODELS), "--out", str(store_path),
         "--device", "cpu", "--flush-every", "4", "--no-progress"],
        capture_output=True, text=True, timeout=180, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 ranks embedded" in done.stderr and "all-reduced moments match the store" in done.stderr
    assert done.stdout.count("added 21 record(s)") == 1  # printed by rank 0 only

    store = EmbeddingStore(store_path)
    ids = store.ids()
    assert sorted(ids) == sorted(record_id for record_id, _ in records) and len(set(ids)) == len(ids)
    with torch.inference_mode():
        expected = LadderEmbedder(tiny_ladder(MODELS), progress=False).run(records)
    position = {record_id: index for index, record_id in enumerate(expected.ids)}
    for model in MODELS:
        _, pooled = store.pooled(model)
        np.testing.assert_allclose(pooled, expected.pooled[model][[position[i] for i in ids]],
                                   rtol=1e-5, atol=1e-6)
    moments = store.moments()
    assert moments.count == expected.moments.count == sum(len(sequence) for _, sequence in records)
    torch.testing.assert_close(moments.mean, expected.moments.mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(moments.scatter, expected.moments.scatter, rtol=1e-6, atol=1e-4)
