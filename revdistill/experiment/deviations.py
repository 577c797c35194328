"""What was done, said plainly: where our benchmark differs from the released method and from ProteinGym.

:func:`method_notes` turns a results table and the ladders' provenance into notes, each with a short
form (figure captions, :meth:`ExperimentResult.caption`) and a detailed one (``revdistill report``):

- the ladder corpus' overlap with the test assays' wild types (ProteinGym's wild types contain each
  test assay's own; no scores are used);
- exact PCA of the corpus moments vs the released IncrementalPCA (batches of 131,072 residues);
- overlapping windows vs the authors' truncation at 1,022 residues for long sequences;
- generated vs official CV folds (random folds cannot equal ProteinGym's);
- the fit convention (``nested``: ours; ``raw``: the released one).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

__all__ = ["Note", "method_notes", "fold_source_counts", "ladder_provenance", "INCREMENTAL_BATCH"]

#: Residues per batch of the released fit's sklearn IncrementalPCA.
INCREMENTAL_BATCH = 131_072


@dataclass(frozen=True)
class Note:
    """One deviation or choice: ``topic``, a ``short`` phrase for captions and a ``detail`` for reports."""

    topic: str
    short: str
    detail: str


def fold_source_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Assays per scheme and fold source (``official`` / ``generated``), ``(n_schemes, n_sources)``."""
    if "fold_source" not in table.columns:
        return pd.DataFrame()
    per_assay = table.drop_duplicates(["assay", "scheme"])
    counts = per_assay.groupby(["scheme", "fold_source"]).size().unstack(fill_value=0)
    return counts.reindex([s for s in dict.fromkeys(per_assay["scheme"])])


def ladder_provenance(ladder_id: str, cache: str | Path | None = None) -> dict[str, Any] | None:
    """The provenance saved with a cached reference ladder ``<cache>/ladders/<ladder_id>.npz`` (None if absent or
    unreadable); read from the file's ``meta`` entry alone, not the whole ladder."""
    from revdistill.experiment.ladders import fit_path  # noqa: PLC0415
    from revdistill.io.files import read_npz_meta  # noqa: PLC0415

    path = fit_path(ladder_id, cache) if ladder_id else None
    if path is None or not path.is_file():
        return None
    provenance = (read_npz_meta(path) or {}).get("provenance")
    return dict(provenance) if isinstance(provenance, dict) else None


def _shipped_wild_types() -> dict[str, str]:
    from revdistill.proteingym.data import packaged_reference_path  # noqa: PLC0415

    reference = pd.read_csv(packaged_reference_path(), usecols=["DMS_id", "target_seq"])
    return dict(zip(reference["DMS_id"].astype(str), reference["target_seq"].astype(str)))


def method_notes(table: pd.DataFrame, provenances: Sequence[Mapping[str, Any] | None] = (),
                 wild_types: Mapping[str, str] | None = None) -> list[Note]:
    """Notes on every choice that departs from the released method or from ProteinGym.

    Parameters
    ----------
    table : DataFrame
        A results table (``assay``, ``scheme``, ``fit_on``, ``fold_source``).
    provenances : sequence of dict or None
        The ladders' provenance (``DistillationLadder.provenance_``: corpus, embedding numerics); None
        where unknown (a ladder not in the cache).
    wild_types : mapping, optional
        Assay name → wild-type sequence (default: ProteinGym v1.3's, shipped with the package).
    """
    from revdistill.esm.batching import MAX_RESIDUES, WINDOW_OVERLAP  # noqa: PLC0415
    from revdistill.experiment.ladders import DEFAULT_CORPUS  # noqa: PLC0415

    shipped = _shipped_wild_types()  # read once per call: the default wild types and the default corpus
    wild_types = dict(shipped if wild_types is None else wild_types)
    assays = list(dict.fromkeys(table["assay"]))
    known = {a: wild_types[a] for a in assays if a in wild_types}
    notes = []
    corpora = [p.get("corpus", {}) for p in provenances if p]
    if not corpora:
        notes.append(Note("ladder corpus", "ladder corpus unknown (ladder not in the cache)",
                          "The ladder's provenance was not found, so its corpus and its overlap with the test wild "
                          "types are not stated here; `revdistill fit` / the cache keep it beside the ladder."))
    for corpus in {c.get("name", ""): c for c in corpora}.values():
        name, residues = corpus.get("name", ""), int(corpus.get("n_residues", 0))
        if name == DEFAULT_CORPUS:
            corpus_set = set(shipped.values())
            inside = sorted({seq for seq in known.values() if seq in corpus_set}, key=len)
            overlap = sum(len(s) for s in inside)
            notes.append(Note(
                "ladder corpus",
                f"ladder corpus (ProteinGym wild types) contains {len(inside)} of {len(assays)} test wild type(s)",
                f"The ladder was fitted on the {corpus.get('n_sequences', '?')} distinct ProteinGym v1.3 wild types "
                f"({residues:,} residues), which contain the wild type of {len(inside)} of the {len(assays)} "
                f"assay(s) tested here ({overlap:,} of {residues:,} residues). Harmless for the probe (no scores "
                f"are used in the fit) but not a held-out corpus."))
        elif name.startswith("assays:"):
            notes.append(Note("ladder corpus", "ladder fitted on the assays' own variants (explicit choice)",
                              f"The ladder was fitted on the tested assays' own variants ({residues:,} residues): "
                              f"an explicit choice, not the reference corpus."))
        else:
            notes.append(Note("ladder corpus", f"ladder corpus {name}",
                              f"The ladder was fitted on {name} ({residues:,} residues); its overlap with the test "
                              f"wild types is not checked."))
        over = "exceeds" if residues > INCREMENTAL_BATCH else "fits in"
        notes.append(Note(
            "PCA", "exact PCA (released: IncrementalPCA, 131,072-residue batches)",
            f"Each step's PCA is exact (eigendecomposition of the corpus' moments); the released fit uses "
            f"scikit-learn's IncrementalPCA in batches of {INCREMENTAL_BATCH:,} residues. They agree up to one batch; "
            f"this corpus ({residues:,} residues) {over} one batch (beyond it, 2.8–6.1 % score differences were "
            f"measured on decaying spectra)."))
    handling = {p.get("embedding", {}).get("long_sequences") for p in provenances if p} - {None}
    handling_text = "/".join(sorted(handling)) or "window (the default; not recorded with the results)"
    long = sorted(a for a, seq in known.items() if len(seq) > MAX_RESIDUES)
    notes.append(Note(
        "long sequences", f"sequences > {MAX_RESIDUES}: {handling_text} ({len(long)} assay(s))",
        f"Wild types longer than {MAX_RESIDUES} residues: {len(long)} of the {len(assays)} assay(s)"
        f"{' (' + ', '.join(long[:5]) + (' ...' if len(long) > 5 else '') + ')' if long else ''}. Handling: "
        f"{handling_text}. 'window' embeds overlapping {MAX_RESIDUES}-residue windows (overlap {WINDOW_OVERLAP}) "
        f"and keeps each "
        f"residue's vector from the nearest window centre; the authors' extract.py truncates at {MAX_RESIDUES}."))
    counts = fold_source_counts(table)
    if not counts.empty:
        parts = [f"{scheme.replace('fold_', '').replace('_5', '')}: "
                 + ", ".join(f"{int(n)} {source}" for source, n in row.items() if n)
                 for scheme, row in counts.iterrows()]
        generated = int(counts.get("generated", pd.Series(dtype=int)).sum())
        notes.append(Note(
            "folds", "folds " + "; ".join(parts),
            "CV folds per scheme (assays): " + "; ".join(parts) + ". Official fold columns are used where the "
            "assay file has them; otherwise folds are generated. Generated modulo and contiguous folds equal "
            "ProteinGym's; generated random folds cannot (ProteinGym's script draws every assay from one global "
            "RNG; 22 % agreement measured on Kennouche)." + ("" if generated else " No fold here was generated.")))
    conventions = sorted(set(table.get("fit_on", pd.Series(dtype=str)).fillna("")) - {""})
    labels = {"nested": "nested (ours: each step fitted on the input it is applied to)",
              "raw": "raw (the released method: fitted on raw embeddings, applied to nested ones)"}
    if conventions:
        notes.append(Note("fit convention", "fit on " + " and ".join(conventions),
                          "Ladder fit convention: " + "; ".join(labels.get(c, c) for c in conventions) + "."))
    return notes
