"""One ProteinGym assay: read, checked against its target, singles filtered, CV folds attached."""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from revdistill.esm.sequences import AMINO_ACIDS, EXTRA_LETTERS
from revdistill.proteingym.data import load_reference, find_assay_csv, read_csv_checked, _unknown_assay
from revdistill.proteingym.folds import N_FOLDS, SCHEMES, generate_folds
from revdistill.proteingym.mutants import MUTANT_SYNTAX, apply_mutant, check_mutants, mutant_positions, parse_mutant

logger = logging.getLogger(__name__)

__all__ = ["Assay", "read_assay", "assay_source", "MIN_VARIANTS", "MAX_ABS_SCORE"]

MIN_VARIANTS = 2 * N_FOLDS
#: Largest magnitude a DMS score may have: far beyond any assay, far below float64 overflow of the squares
#: and sums a probe computes (a score of 1e308 would turn every metric into NaN).
MAX_ABS_SCORE = 1e100


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


def assay_source(id_or_csv: str | Path, data_dir: str | Path | None = None,
                 reference: pd.DataFrame | None = None) -> tuple[str, str]:
    """``(DMS id, where its CSV is)`` of an assay id or CSV path, without reading the variants.

    Raises the errors :func:`read_assay` raises for an unknown id, a missing file or a missing CSV.
    """
    dms_id, _, _, source, _ = _resolve_assay_source(id_or_csv, data_dir, reference)
    return dms_id, source


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


def _infer_target(variants: pd.DataFrame, parsed: list, where: str) -> str:
    """Wild type by majority over every single mutant's ``mutated_sequence`` with its substitution undone.

    One row that disagrees (a wrong wild type, a wrong sequence) is outvoted and then reported by the
    checks that follow, naming that row, instead of making every other row look wrong.
    """
    if "mutated_sequence" not in variants.columns:
        raise ValueError(f"{where} is not in the reference file and has no mutated_sequence column: the target "
                         f"sequence cannot be known; add a mutated_sequence column")
    votes: Counter = Counter()
    for mutations, sequence in zip(parsed, variants["mutated_sequence"].tolist()):
        if len(mutations) != 1 or not isinstance(sequence, str):
            continue
        wild, position, new = mutations[0]
        if position <= len(sequence) and sequence[position - 1] == new:
            votes[sequence[: position - 1] + wild + sequence[position:]] += 1
    if not votes:
        raise ValueError(f"{where}: no single mutant whose mutated_sequence carries its substitution: cannot infer "
                         f"the target sequence")
    ranked = votes.most_common(2)
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        raise ValueError(f"{where}: the single mutants disagree on the target sequence ({len(votes)} different "
                         f"wild types, none in the majority); check the mutant and mutated_sequence columns")
    return ranked[0][0]


def _lines_text(lines: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(line)) for line in lines[:limit])
    return f"CSV line(s) {shown}" + (f", ... ({len(lines)} in all)" if len(lines) > limit else "")


def _check_mutant_column(variants: pd.DataFrame, lines: np.ndarray, where: str) -> list:
    """Parse every mutant; refuse blanks, padding and malformed strings naming the CSV lines."""
    raw = variants["mutant"]
    blank = raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy()
    if blank.any():
        raise ValueError(f"{where}: column 'mutant' is empty at {_lines_text(lines[blank])}; allowed: {MUTANT_SYNTAX}")
    parsed, bad = [], []
    for line, mutant in zip(lines, raw.astype(str).tolist()):
        try:
            parsed.append(parse_mutant(mutant))
        except ValueError:
            parsed.append(None)
            bad.append(f"{mutant!r} (CSV line {line})")
    if bad:
        shown = ", ".join(bad[:10]) + (f", ... ({len(bad)} in all)" if len(bad) > 10 else "")
        raise ValueError(f"{where}: column 'mutant' has {len(bad)} value(s) that are not mutations: {shown}; "
                         f"allowed: {MUTANT_SYNTAX}")
    return parsed


def _check_sequence_column(variants: pd.DataFrame, lines: np.ndarray, where: str) -> None:
    """Every ``mutated_sequence`` is upper-case residue letters; else name the CSV lines and character columns."""
    if "mutated_sequence" not in variants.columns:
        return
    raw = variants["mutated_sequence"]
    allowed = AMINO_ACIDS + EXTRA_LETTERS
    good = raw.astype(str).str.fullmatch(f"[{allowed}]+").to_numpy() & raw.notna().to_numpy()
    if good.all():
        return
    examples = []
    for line, value in zip(lines[~good][:10], raw[~good].tolist()[:10]):
        if not isinstance(value, str) or not value:
            examples.append(f"line {line}: empty")
            continue
        column = next(i for i, letter in enumerate(value) if letter not in allowed)
        examples.append(f"line {line}, character {column + 1}: {value[column]!r}")
    more = f", ... ({int((~good).sum())} rows in all)" if (~good).sum() > 10 else ""
    raise ValueError(f"{where}: column 'mutated_sequence' holds letters that are not residues at "
                     f"{'; '.join(examples)}{more}; allowed: upper-case one-letter codes {allowed} (no lower case, "
                     f"no '*' stop, no gaps)")


def _check_scores(variants: pd.DataFrame, lines: np.ndarray, where: str) -> np.ndarray:
    raw = variants["DMS_score"]
    scores = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    missing = np.isnan(scores)
    if missing.any():
        examples = ", ".join("empty" if pd.isna(value) else repr(value) for value in raw[missing].tolist()[:5])
        raise ValueError(f"{where}: column 'DMS_score' is missing or not a number at {_lines_text(lines[missing])} "
                         f"(values {examples}); allowed: finite numbers")
    huge = ~(np.abs(scores) < MAX_ABS_SCORE)
    if huge.any():
        examples = ", ".join(repr(value) for value in scores[huge].tolist()[:5])
        raise ValueError(f"{where}: column 'DMS_score' is infinite or too large at {_lines_text(lines[huge])} "
                         f"(values {examples}); allowed: finite numbers with |score| < {MAX_ABS_SCORE:g}")
    return scores


def _official_folds(variants: pd.DataFrame, lines: np.ndarray, scheme: str, where: str) -> np.ndarray:
    """A fold column as int64: every cell an integer 0..N_FOLDS-1, else an error naming the column and lines."""
    raw = variants[scheme]
    values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
    allowed = f"allowed: whole numbers 0 to {N_FOLDS - 1} in every row (or drop the column to generate the folds)"
    blank = raw.isna().to_numpy()
    if blank.any():
        raise ValueError(f"{where}: column {scheme!r} is empty at {_lines_text(lines[blank])}; {allowed}")
    wrong = np.isnan(values) | (values != np.round(values)) | (values < 0) | (values > N_FOLDS - 1)
    if wrong.any():
        examples = ", ".join(repr(value) for value in raw[wrong].tolist()[:5])
        raise ValueError(f"{where}: column {scheme!r} has invalid folds at {_lines_text(lines[wrong])} "
                         f"(values {examples}); {allowed}")
    return values.astype(np.int64)


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
        is checked against that target; otherwise the target is the wild type most single mutants agree
        on (their ``mutated_sequence`` with the substitution undone).
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
        columns, blank/padded/malformed mutants, missing, non-numeric, infinite or huge
        (``|score| >= MAX_ABS_SCORE``) scores, duplicated mutants, wild-type mismatches,
        mutated_sequence disagreeing with the mutant, fold columns with blank, fractional or
        out-of-range cells, too few variants or positions for 5 folds. Each message names the
        file, the column, the 1-based CSV lines and what is allowed.
    """
    if reference is None:
        try:
            reference = load_reference(data_dir)
        except FileNotFoundError:
            if not Path(str(id_or_csv)).expanduser().exists():
                raise
            logger.info("no reference file: the target of %s is inferred from its variants", id_or_csv)
    dms_id, path, member, source, row = _resolve_assay_source(id_or_csv, data_dir, reference)
    where = f"assay {dms_id} ({source})"
    variants = read_csv_checked(path, what=f"assay {dms_id}", member=member)
    missing = [c for c in ("mutant", "DMS_score") if c not in variants.columns]
    if missing:
        raise ValueError(f"{where} lacks column(s) {missing}; has {list(variants.columns)}")
    variants = variants.reset_index(drop=True)
    lines = np.arange(len(variants)) + 2  # 1-based CSV lines; line 1 is the header
    parsed = _check_mutant_column(variants, lines, where)
    _check_sequence_column(variants, lines, where)
    variants["mutant"] = variants["mutant"].astype(str)
    variants["DMS_score"] = _check_scores(variants, lines, where)
    duplicated = variants["mutant"].duplicated(keep=False).to_numpy()
    if duplicated.any():
        examples = sorted(set(variants["mutant"][duplicated]))[:10]
        raise ValueError(f"{where}: column 'mutant' repeats {examples} at {_lines_text(lines[duplicated])}; "
                         f"allowed: each variant once")
    target = str(row["target_seq"]) if row is not None else _infer_target(variants, parsed, where)
    check_mutants(variants["mutant"].tolist(), target, where, lines=lines.tolist())
    expected = [apply_mutant(target, m) for m in variants["mutant"]]
    if "mutated_sequence" in variants.columns:
        wrong = variants["mutated_sequence"].astype(str).to_numpy() != np.array(expected)
        if wrong.any():
            mutants = variants["mutant"][wrong].tolist()
            raise ValueError(f"{where}: column 'mutated_sequence' disagrees with target + mutant at "
                             f"{_lines_text(lines[wrong])} ({len(mutants)} variant(s): {mutants[:10]}); allowed: the "
                             f"target sequence with the mutant's substitutions")
    variants["mutated_sequence"] = expected
    if "DMS_score_bin" not in variants.columns:
        variants["DMS_score_bin"] = np.nan
    if singles_only:
        keep = ~variants["mutant"].str.contains(":").to_numpy()
        variants, lines = variants[keep].reset_index(drop=True), lines[keep]
    if len(variants) < MIN_VARIANTS:
        raise ValueError(f"{where}: {len(variants)} variant(s) after filtering; 5-fold CV needs at least "
                         f"{MIN_VARIANTS}")
    if variants["DMS_score"].nunique() < 2:
        value = float(variants["DMS_score"].iloc[0])
        raise ValueError(f"{where}: column 'DMS_score' has one value ({value!r}) for all {len(variants)} variants: "
                         f"there is nothing to predict and every metric would be empty; allowed: scores that vary")
    variants["position"] = mutant_positions(variants["mutant"].tolist())
    fold_source = {}
    for scheme in SCHEMES:
        if scheme in variants.columns:
            variants[scheme] = _official_folds(variants, lines, scheme, where)
            fold_source[scheme] = "official"
        else:
            variants[scheme] = generate_folds(variants["position"], scheme, seed=seed)
            fold_source[scheme] = "generated"
        counts = np.bincount(variants[scheme], minlength=N_FOLDS)
        if len(counts) != N_FOLDS or (counts == 0).any():
            raise ValueError(f"{where}: {scheme} ({fold_source[scheme]}) has fold sizes "
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
