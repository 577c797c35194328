"""Reference ladders: a declared corpus, ids that are digests of the declaration, one fit reused by id."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from conftest import TINY, random_records
from revdistill.esm.runner import EmbedOptions, LocalEmbedder
from revdistill.experiment.ladders import Corpus, LadderSpec, ladder_from_file, reference_ladder


def test_corpus_is_its_distinct_sequences_whatever_their_names_or_order():
    records = random_records(12, seed=1)
    corpus = Corpus.from_records("a", records + records[:3])
    shuffled = Corpus.from_records("b", [(f"x{i}", s.lower()) for i, (_, s) in enumerate(reversed(records))])
    assert corpus.n_sequences == 12 and corpus.digest == shuffled.digest
    assert corpus.records == shuffled.records  # canonical ids and order
    assert Corpus.from_records("c", records[:11]).digest != corpus.digest


def test_default_corpus_is_the_proteingym_wild_types(proteingym_dir):
    import pandas as pd

    corpus = Corpus.proteingym_wildtypes()
    reference = pd.read_csv(proteingym_dir / "reference_files" / "DMS_substitutions.csv")
    assert corpus.n_sequences == reference["target_seq"].nunique() == 187
    assert corpus.n_residues == 72_933 and "187 sequences" in corpus.description
    assert corpus.digest == Corpus.proteingym_wildtypes(reference).digest  # the shipped file is the real one


def _spec(**changes):
    corpus = Corpus.from_records("toy", random_records(20, seed=2))
    values = dict(models=TINY, corpus=corpus, fit_on="nested", regressor="pcr", alpha=1.0,
                  numerics=(("dtype", "fp32"), ("long_sequences", "window")))
    values.update(changes)
    return LadderSpec(**values)


def test_ids_change_when_any_input_of_the_fit_changes():
    base = _spec()
    other_corpus = Corpus.from_records("toy", random_records(21, seed=2))
    variants = [_spec(models=TINY[:2]), _spec(corpus=other_corpus), _spec(fit_on="raw"), _spec(regressor="ols"),
                _spec(numerics=(("dtype", "bf16"), ("long_sequences", "window"))),
                _spec(numerics=(("dtype", "fp32"), ("long_sequences", "truncate")))]
    ids = {spec.ladder_id for spec in variants} | {base.ladder_id}
    assert len(ids) == len(variants) + 1
    assert base.ladder_id.startswith("rdl-") and base.naive_id.startswith("nvb-")
    assert _spec(regressor="ols").naive_id == base.naive_id  # the naive baseline has no regressor
    assert _spec(fit_on="raw").naive_id != base.naive_id
    assert _spec(alpha=5.0).ladder_id == base.ladder_id  # alpha only matters for ridge
    assert _spec(regressor="ridge", alpha=5.0).ladder_id != _spec(regressor="ridge").ladder_id


def test_ids_are_stable_across_processes():
    code = ("from revdistill.experiment.ladders import Corpus, LadderSpec\n"
            "c = Corpus.proteingym_wildtypes()\n"
            "s = LadderSpec(models=('tiny-32', 'tiny-48'), corpus=c, fit_on='raw')\n"
            "print(s.ladder_id, s.naive_id)")
    runs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)}
    spec = LadderSpec(models=("tiny-32", "tiny-48"), corpus=Corpus.proteingym_wildtypes(), fit_on="raw")
    assert runs == {f"{spec.ladder_id} {spec.naive_id}\n"}


def test_reference_ladder_is_fitted_once_and_reused_by_id(tiny_cache, tiny_ladders):
    nested = tiny_ladders["nested"]
    assert nested.models == TINY and nested.fit_on == "nested"
    assert nested.ladder.provenance_["corpus"]["n_sequences"] == 187
    assert (tiny_cache / "ladders" / f"{nested.ladder_id}.npz").is_file()
    again = reference_ladder(TINY, fit_on="nested", cache=tiny_cache)  # from the cache, no embedding
    assert again.ladder.affine_weights_.tobytes() == nested.ladder.affine_weights_.tobytes()
    assert tiny_ladders["raw"].ladder_id != nested.ladder_id
    assert "ProteinGym v1.3 wild types" in nested.describe() and nested.ladder_id in nested.describe()


def test_a_fresh_fit_in_another_process_gives_the_same_bytes(tiny_cache, tmp_path):
    """The same declaration fitted from scratch elsewhere (new cache, new corpus store) is the same model."""
    code = (f"import torch; torch.set_num_threads(1)\n"
            f"from revdistill.experiment.ladders import reference_ladder\n"
            f"r = reference_ladder({TINY!r}, cache={str(tmp_path)!r})\n"
            f"print(r.ladder_id)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    cached = reference_ladder(TINY, cache=tiny_cache)
    assert out[-1] == cached.ladder_id
    fresh = (tmp_path / "ladders" / f"{cached.ladder_id}.npz").read_bytes()
    assert fresh == (tiny_cache / "ladders" / f"{cached.ladder_id}.npz").read_bytes()


def test_a_cached_file_that_does_not_match_its_id_is_refused(tiny_cache, tmp_path):
    import shutil

    nested = reference_ladder(TINY, cache=tiny_cache)
    raw = reference_ladder(TINY, fit_on="raw", cache=tiny_cache)
    (tmp_path / "ladders").mkdir()
    shutil.copy(tiny_cache / "ladders" / f"{raw.ladder_id}.npz", tmp_path / "ladders" / f"{nested.ladder_id}.npz")
    shutil.copy(tiny_cache / "ladders" / f"{nested.naive_id}.npz", tmp_path / "ladders")
    with pytest.raises(ValueError, match=f"{nested.ladder_id}.npz does not match its id"):
        reference_ladder(TINY, cache=tmp_path)


def test_embedding_numerics_are_part_of_the_identity(tiny_cache):
    bf16 = LocalEmbedder(EmbedOptions(dtype="bf16"))
    nested = reference_ladder(TINY, cache=tiny_cache)
    corpus = Corpus.proteingym_wildtypes()
    other = LadderSpec(models=TINY, corpus=corpus, numerics=tuple(sorted(bf16.options.numerics().items())))
    assert other.ladder_id != nested.ladder_id


def test_ladder_from_file_keeps_the_id(tiny_cache, tmp_path):
    nested = reference_ladder(TINY, cache=tiny_cache)
    path = nested.ladder.save(tmp_path / "ladder.npz")
    nested.naive.save(tmp_path / "ladder.naive.npz")
    loaded = ladder_from_file(path)
    assert (loaded.ladder_id, loaded.naive_id) == (nested.ladder_id, nested.naive_id)
    levels = {name: np.random.default_rng(0).normal(size=(5, dim)) for name, dim in zip(TINY, (32, 48, 64))}
    assert loaded.ladder.transform(levels).values.tobytes() == nested.ladder.transform(levels).values.tobytes()


def test_wrong_declarations_are_clear_errors():
    corpus = Corpus.from_records("toy", random_records(3))
    with pytest.raises(ValueError, match="at least 2 models"):
        LadderSpec(models=("tiny-32",), corpus=corpus)
    with pytest.raises(ValueError, match="fit_on='both' is not a fit convention"):
        LadderSpec(models=TINY, corpus=corpus, fit_on="both")
    with pytest.raises(ValueError, match="unknown model 'huge'"):
        LadderSpec(models=("tiny-32", "huge"), corpus=corpus)
    with pytest.raises(ValueError, match="invalid character"):
        Corpus.from_records("bad", [("a", "MK1")])
