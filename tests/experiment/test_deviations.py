"""Notes on what departs from the released method: counted from the results, not asserted blindly."""
from __future__ import annotations

import pandas as pd

from revdistill.experiment.deviations import fold_source_counts, method_notes
from revdistill.experiment.ladders import Corpus

PIN1 = "PIN1_HUMAN_Tsuboyama_2023_1I6C"


def _table(assays, sources):
    rows = [{"assay": a, "scheme": s, "fit_on": f, "fold_source": sources[(a, s)]}
            for a in assays for s in ("fold_random_5", "fold_contiguous_5") for f in ("", "raw")]
    return pd.DataFrame(rows)


def test_notes_count_overlap_long_sequences_and_fold_sources():
    long_id = "A0A140D2T1_ZIKV_Sourisseau_2019"  # a 3,423-residue wild type in ProteinGym v1.3
    sources = {(PIN1, "fold_random_5"): "official", (PIN1, "fold_contiguous_5"): "generated",
               (long_id, "fold_random_5"): "official", (long_id, "fold_contiguous_5"): "official",
               ("mine", "fold_random_5"): "generated", ("mine", "fold_contiguous_5"): "generated"}
    table = _table([PIN1, long_id, "mine"], sources)
    counts = fold_source_counts(table)
    assert counts.loc["fold_random_5"].to_dict() == {"generated": 1, "official": 2}
    assert counts.loc["fold_contiguous_5"].to_dict() == {"generated": 2, "official": 1}
    corpus = Corpus.proteingym_wildtypes()
    provenance = {"corpus": corpus.summary(), "embedding": {"long_sequences": "truncate"}}
    notes = {note.topic: note for note in method_notes(table, [provenance])}
    assert notes["ladder corpus"].short.endswith("contains 2 of 3 test wild type(s)")
    wild = dict(zip(*[pd.read_csv(f"{__import__('revdistill').__path__[0]}/data/DMS_substitutions.csv")[c]
                      for c in ("DMS_id", "target_seq")]))
    overlap = len(wild[PIN1]) + len(wild[long_id])
    assert f"({overlap:,} of {corpus.n_residues:,} residues)" in notes["ladder corpus"].detail
    assert notes["long sequences"].short == "sequences > 1022: truncate (1 assay(s))" and long_id in notes[
        "long sequences"].detail
    assert notes["folds"].short == "folds random: 1 generated, 2 official; contiguous: 2 generated, 1 official"
    assert "fits in one batch" in notes["PCA"].detail and notes["fit convention"].short == "fit on raw"


def test_unknown_ladder_is_said_so():
    table = _table([PIN1], {(PIN1, "fold_random_5"): "official", (PIN1, "fold_contiguous_5"): "official"})
    notes = {note.topic: note for note in method_notes(table, [None])}
    assert notes["ladder corpus"].short == "ladder corpus unknown (ladder not in the cache)"
    assert "PCA" not in notes and "No fold here was generated" in notes["folds"].detail
