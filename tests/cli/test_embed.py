"""``revdistill embed`` and ``revdistill fit`` end to end on the bundled demo set with the tiny models."""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from revdistill import DistillationLadder
from revdistill.cli import main
from revdistill.esm.embed import LadderEmbedder
from revdistill.esm.sequences import read_fasta
from revdistill.esm.models.loading import tiny_ladder
from revdistill.esm.store import EmbeddingStore

DEMO = Path(str(resources.files("revdistill") / "data" / "demo.fasta"))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def cli(*argv) -> int:
    return main([str(arg) for arg in argv])


def test_embed_then_fit_from_the_stored_moments(tmp_path, capsys):
    store_path, ladder_path = tmp_path / "demo.h5", tmp_path / "ladder.npz"
    assert cli("embed", DEMO, "--models", "tiny-32,tiny-48,tiny-64", "--out", store_path,
               "--device", "cpu", "--per-residue", "sp|P0CG48|UBC_HUMAN", "--no-progress") == 0
    records = read_fasta(DEMO)
    assert f"added {len(records)} record(s)" in capsys.readouterr().out
    store = EmbeddingStore(store_path)
    expected = LadderEmbedder(tiny_ladder(), progress=False).run(records)
    ids, pooled = store.pooled("tiny-64")
    assert ids == expected.ids
    np.testing.assert_allclose(pooled, expected.pooled["tiny-64"], rtol=1e-5, atol=1e-6)
    assert store.per_residue("tiny-32", "sp|P0CG48|UBC_HUMAN").shape == (76, 32)

    assert cli("embed", DEMO, "--models", "tiny-32,tiny-48,tiny-64", "--out", store_path, "--device", "cpu",
               "--no-progress") == 0  # rerun: resumes, nothing to do
    assert "added 0 record(s)" in capsys.readouterr().out

    assert cli("fit", store_path, "--out", ladder_path) == 0
    out = capsys.readouterr().out
    assert "tiny-32 -> tiny-48" in out and "tiny-48 -> tiny-64" in out and "r2=" in out
    ladder = DistillationLadder.load(ladder_path)
    assert ladder.level_names_ == ("tiny-32", "tiny-48", "tiny-64") and ladder.dims_ == (32, 48, 64)
    reference = DistillationLadder().fit_moments(expected.moments)
    np.testing.assert_allclose(ladder.transform(expected.pooled).values,
                               reference.transform(expected.pooled).values, rtol=1e-6, atol=1e-6)


def test_errors_are_reported_with_exit_status_2(tmp_path, capsys):
    assert cli("embed", tmp_path / "missing.fasta", "--models", "tiny-32", "--out", tmp_path / "s.h5") == 2
    assert "missing.fasta does not exist" in capsys.readouterr().err
    assert cli("embed", DEMO, "--models", "tiny-32,9M", "--out", tmp_path / "s.h5", "--no-progress") == 2
    assert "unknown model '9M'" in capsys.readouterr().err
    assert cli("embed", DEMO, "--models", "650M", "--out", tmp_path / "s.h5", "--device", "cpu",
               "--weights-dir", tmp_path, "--no-progress") == 2
    assert "esm2_t33_650M_UR50D.pt" in capsys.readouterr().err
    assert cli("fit", tmp_path / "none.h5", "--out", tmp_path / "l.npz") == 2
    assert "does not exist" in capsys.readouterr().err
