"""One ProteinGym assay: read, checked against its target, singles filtered, CV folds attached."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from revdistill.proteingym.data import load_reference, find_assay_csv, read_csv_checked, _unknown_assay
from revdistill.proteingym.folds import N_FOLDS, SCHEMES, generate_folds
from revdistill.proteingym.mutants import apply_mutant, check_mutants, mutant_positions, parse_mutant

logger = logging.getLogger(__name__)

__all__ = ["Assay", "read_assay", "MIN_VARIANTS"]

MIN_VARIANTS = 2 * N_FOLDS


@dataclass
class Assay:
    """One ProteinGym assay, singles only unless read with ``singles_only=False``.

    Attributes
    ----------
    dms_id : str
    target_seq : str
    variants : DataFrame
        Columns ``mutant, mutated_sequence, DMS_score, DMS_score_bin, position`` and one int column per
        CV scheme in :data:`SCHEMES`; one row per variant, ``(n_variants, ...)``.
    fold_source : dict
        ``{scheme: "official" | "generated"}``.
    uniprot_id, selection_type : str
        From the reference (``coarse_selection_type``); ``dms_id`` / ``"unknown"`` when absent.
    source : str
        Where the variants were read from.
    """

    dms_id: str
    target_seq: str
    variants: pd.DataFrame
    fold_source: dict[str, str] = field(default_factory=dict)
    uniprot_id: str = ""
    selection_type: str = "unknown"
    source: str = ""

    @property
    def n_variants(self) -> int:
        """Number of variants (rows)."""
        return len(self.variants)

    def folds(self, scheme: str) -> np.ndarray:
        """Fold of each variant under ``scheme``, ``(n_variants,)``."""
        if scheme not in self.fold_source:
            raise ValueError(f"scheme={scheme!r}; this assay has {sorted(self.fold_source)}")
        return self.variants[scheme].to_numpy(dtype=np.int64)


def _resolve_assay_source(id_or_csv, data_dir, reference):
    """Return (dms_id, csv path, zip member, source label, reference row or None)."""
    text = str(id_or_csv)
    as_path = Path(text).expanduser()
    if text.endswith(".csv") or as_path.exists():
        if not as_path.exists():
            raise FileNotFoundError(f"assay CSV {text!r} does not exist")
        dms_id = as_path.stem
        row = reference.loc[dms_id] if reference is not None and dms_id in reference.index else None
        return dms_id, as_path, None, str(as_path), row
    if reference is None:
        reference = load_reference(data_dir)
    if text not in reference.index:
        raise _unknown_assay(text, reference)
    label, path, member = find_assay_csv(text, data_dir)
    return text, path, member, f"{label}:{path.name}", reference.loc[text]


def _infer_target(variants: pd.DataFrame, dms_id: str) -> str:
    """Wild type from the first single mutant's mutated_sequence (for CSVs absent from the reference)."""
    if "mutated_sequence" not in variants.columns:
        raise ValueError(f"{dms_id} is not in the reference file and has no mutated_sequence column: cannot know the target sequence")
    singles = variants[~variants["mutant"].str.contains(":")]
    if singles.empty:
        raise ValueError(f"{dms_id}: no single mutants to infer the target sequence from")
    wild, position, _ = parse_mutant(singles["mutant"].iloc[0])[0]
    sequence = singles["mutated_sequence"].iloc[0]
    return sequence[: position - 1] + wild + sequence[position:]


def read_assay(
    id_or_csv: str | Path,
    data_dir: str | Path | None = None,
    reference: pd.DataFrame | None = None,
    singles_only: bool = True,
    seed: int = 42,
) -> Assay:
    """Read, check and fold one assay.

    Parameters
    ----------
    id_or_csv : str or Path
        A ProteinGym ``DMS_id`` (looked up in the reference and the data folder) or a CSV path with at
        least ``mutant`` and ``DMS_score`` columns. A CSV whose stem is a ``DMS_id`` of the reference
        is checked against that target; otherwise the target is inferred from its first single mutant.
    data_dir : str or Path, optional
        See :func:`resolve_data_dir`.
    reference : DataFrame, optional
        From :func:`load_reference`; read on demand.
    singles_only : bool
        Keep single substitutions only (ProteinGym's supervised protocol). With ``False``, generated
        folds place a multiple mutant by the position of its first substitution.
    seed : int
        Seed of generated random folds.

    Raises
    ------
    UnknownAssayError, FileNotFoundError, ValueError
        Unknown id (close matches listed), missing data (what to put where), malformed CSV, missing
        columns, non-numeric scores, duplicated mutants, wild-type mismatches (offenders listed),
        mutated_sequence disagreeing with the mutant, too few variants or positions for 5 folds.
    """
    if reference is None:
        try:
            reference = load_reference(data_dir)
        except FileNotFoundError:
            if not Path(str(id_or_csv)).expanduser().exists():
                raise
            logger.info("no reference file: the target of %s is inferred from its variants", id_or_csv)
    dms_id, path, member, source, row = _resolve_assay_source(id_or_csv, data_dir, reference)
    variants = read_csv_checked(path, what=f"assay {dms_id}", member=member)
    missing = [c for c in ("mutant", "DMS_score") if c not in variants.columns]
    if missing:
        raise ValueError(f"assay {dms_id} ({source}) lacks column(s) {missing}; has {list(variants.columns)}")
    variants = variants.copy()
    variants["mutant"] = variants["mutant"].astype(str)
    scores = pd.to_numeric(variants["DMS_score"], errors="coerce")
    if scores.isna().any():
        bad = variants["mutant"][scores.isna()].tolist()
        raise ValueError(f"assay {dms_id}: DMS_score is missing or not a number for {len(bad)} variant(s): {bad[:10]}")
    variants["DMS_score"] = scores.astype(float)
    if variants["mutant"].duplicated().any():
        raise ValueError(f"assay {dms_id}: duplicated mutants {variants['mutant'][variants['mutant'].duplicated()].tolist()[:10]}")
    target = str(row["target_seq"]) if row is not None else _infer_target(variants, dms_id)
    check_mutants(variants["mutant"].tolist(), target, dms_id)
    expected = [apply_mutant(target, m) for m in variants["mutant"]]
    if "mutated_sequence" in variants.columns:
        wrong = variants["mutant"][variants["mutated_sequence"].astype(str).to_numpy() != np.array(expected)].tolist()
        if wrong:
            raise ValueError(f"assay {dms_id}: mutated_sequence disagrees with target + mutant for "
                             f"{len(wrong)} variant(s): {wrong[:10]}")
    variants["mutated_sequence"] = expected
    if "DMS_score_bin" not in variants.columns:
        variants["DMS_score_bin"] = np.nan
    if singles_only:
        variants = variants[~variants["mutant"].str.contains(":")].reset_index(drop=True)
    if len(variants) < MIN_VARIANTS:
        raise ValueError(f"assay {dms_id}: {len(variants)} variant(s) after filtering; 5-fold CV needs at least {MIN_VARIANTS}")
    variants["position"] = mutant_positions(variants["mutant"].tolist())
    fold_source = {}
    for scheme in SCHEMES:
        if scheme in variants.columns and variants[scheme].notna().all():
            variants[scheme] = variants[scheme].astype(np.int64)
            fold_source[scheme] = "official"
        else:
            variants[scheme] = generate_folds(variants["position"], scheme, seed=seed)
            fold_source[scheme] = "generated"
        counts = np.bincount(variants[scheme], minlength=N_FOLDS)
        if len(counts) != N_FOLDS or (counts == 0).any():
            raise ValueError(f"assay {dms_id}: {scheme} ({fold_source[scheme]}) has fold sizes "
                             f"{counts.tolist()}; each of the {N_FOLDS} folds needs variants")
    columns = ["mutant", "mutated_sequence", "DMS_score", "DMS_score_bin", "position", *SCHEMES]
    return Assay(
        dms_id=dms_id,
        target_seq=target,
        variants=variants[columns],
        fold_source=fold_source,
        uniprot_id=str(row["UniProt_ID"]) if row is not None else dms_id,
        selection_type=str(row["coarse_selection_type"]) if row is not None else "unknown",
        source=source,
    )
