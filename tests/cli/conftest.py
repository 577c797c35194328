"""Fixtures of the command-line tests."""
from __future__ import annotations

import pytest

from revdistill.esm.store import EmbeddingStore

from cli_errors import MODELS
from conftest import embed_into, random_records


@pytest.fixture
def work(tmp_path):
    """A FASTA file and a store holding its first 4 records (embedded without per-residue values)."""
    records = random_records(6, low=8, high=30, seed=3, prefix="r")
    fasta = tmp_path / "in.fasta"
    fasta.write_text("".join(f">{record_id} protein\n{sequence}\n" for record_id, sequence in records))
    store = tmp_path / "store.h5"
    embed_into(EmbeddingStore(store), records[:4], MODELS)
    return tmp_path, fasta, store
