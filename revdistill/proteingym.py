"""ProteinGym v1.3 substitution assays: data location and download, reference file, mutants, CV folds.

Where the data come from, in order: the ``data_dir`` argument, the ``REVDISTILL_PROTEINGYM_DIR``
environment variable, then the cache ``$XDG_CACHE_HOME/revdistill/proteingym`` (``~/.cache/...``).
Inside that folder any of these layouts is read:

- ``DMS_substitutions.csv`` or ``reference_files/DMS_substitutions.csv`` (the reference file);
- ``cv_folds_singles_substitutions/<DMS_id>.csv`` or the zip of the same name (singles with the official
  folds; preferred), then ``DMS_ProteinGym_substitutions/<DMS_id>.csv`` or its zip, then
  ``assays/<DMS_id>.csv`` or ``<DMS_id>.csv``. Zips are read in place, never extracted.

:func:`download_proteingym` is the one place that downloads (resumable, SHA-256 recorded).

Folds follow ProteinGym's supervised protocol. Official ``fold_random_5``, ``fold_modulo_5`` and
``fold_contiguous_5`` columns are used when present; otherwise they are generated the way ProteinGym's
fold script does and labelled ``generated``: *random* draws each variant's fold uniformly with a fixed
seed; *modulo* sorts the distinct mutated positions and gives the i-th position fold ``i mod 5``
(equal to ``(position - 1) mod 5`` when every position is mutated); *contiguous* cuts the sorted
distinct positions into 5 consecutive blocks whose sizes differ by at most one (larger blocks first).
"""
from __future__ import annotations

import difflib
import io
import logging
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from revdistill._proteingym_download import download_file, read_checksums

logger = logging.getLogger(__name__)

__all__ = [
    "ENV_VAR", "PROTEINGYM_FILES", "SCHEMES", "Assay", "UnknownAssayError",
    "default_cache_dir", "resolve_data_dir", "download_proteingym", "load_reference", "find_assay_csv",
    "parse_mutant", "apply_mutant", "check_mutants", "mutant_positions", "generate_folds", "read_assay",
    "list_assays", "suggest_assays",
]

ENV_VAR = "REVDISTILL_PROTEINGYM_DIR"
BASE_URL = "https://marks.hms.harvard.edu/proteingym/ProteinGym_v1.3"
REFERENCE_COMMIT = "bb685245f8f4bb95a5b54b470396c23826cd6284"  # ProteinGym v1.3-era commit (PR #83 merge)
PROTEINGYM_FILES: dict[str, str] = {
    "DMS_ProteinGym_substitutions.zip": f"{BASE_URL}/DMS_ProteinGym_substitutions.zip",
    "cv_folds_singles_substitutions.zip": f"{BASE_URL}/cv_folds_singles_substitutions.zip",
    "DMS_substitutions.csv": (
        f"https://raw.githubusercontent.com/OATML-Markslab/ProteinGym/{REFERENCE_COMMIT}"
        "/reference_files/DMS_substitutions.csv"
    ),
}
SCHEMES: tuple[str, ...] = ("fold_random_5", "fold_modulo_5", "fold_contiguous_5")
N_FOLDS = 5
MIN_VARIANTS = 2 * N_FOLDS
REFERENCE_COLUMNS = ("DMS_id", "target_seq", "UniProt_ID", "coarse_selection_type")
_ASSAY_FOLDERS = ("cv_folds_singles_substitutions", "DMS_ProteinGym_substitutions", "assays", ".")
_MUTATION = re.compile(r"^([A-Z])([1-9][0-9]*)([A-Z])$")


class UnknownAssayError(ValueError):
    """An assay id that is not in the reference file (the message lists close matches)."""


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/revdistill/proteingym``, ``~/.cache/revdistill/proteingym`` without it."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "revdistill" / "proteingym"


def resolve_data_dir(data_dir: str | Path | None = None) -> Path:
    """Return the ProteinGym folder: ``data_dir``, else ``$REVDISTILL_PROTEINGYM_DIR``, else the cache."""
    if data_dir is not None:
        path = Path(data_dir).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"ProteinGym data_dir={str(path)!r} is not a folder")
        return path
    if os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR]).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"{ENV_VAR}={str(path)!r} is not a folder")
        return path
    return default_cache_dir()


def _missing_data_message(what: str, folder: Path) -> str:
    return (
        f"{what} not found under {folder}. Either run `revdistill proteingym --download` (needs internet; "
        f"fetches {', '.join(PROTEINGYM_FILES)} from {BASE_URL} and GitHub), or copy those files "
        f"(zips as they are, or extracted) into one folder and pass it with --data-dir / data_dir= or "
        f"set {ENV_VAR}=/that/folder. An assay CSV can also be given by its path."
    )


def download_proteingym(
    cache_dir: str | Path | None = None,
    names: Sequence[str] | None = None,
    expected_sha256: Mapping[str, str] | None = None,
    urls: Mapping[str, str] | None = None,
) -> Path:
    """Download the ProteinGym v1.3 substitution files into ``cache_dir`` (resumable) and return it.

    Parameters
    ----------
    cache_dir : str or Path, optional
        Target folder; default :func:`resolve_data_dir` (argument, environment variable, cache).
    names : sequence of str, optional
        Subset of :data:`PROTEINGYM_FILES` keys; default all three.
    expected_sha256 : mapping, optional
        ``{name: hex digest}`` to check; digests already recorded in ``SHA256SUMS`` are checked too.
    urls : mapping, optional
        Override the source URL per name (mirrors).
    """
    folder = Path(cache_dir) if cache_dir is not None else resolve_data_dir()
    folder.mkdir(parents=True, exist_ok=True)
    recorded = read_checksums(folder)
    for name in names if names is not None else tuple(PROTEINGYM_FILES):
        if name not in PROTEINGYM_FILES:
            raise ValueError(f"name={name!r} is not a ProteinGym file; choose from {sorted(PROTEINGYM_FILES)}")
        url = (urls or {}).get(name, PROTEINGYM_FILES[name])
        expected = (expected_sha256 or {}).get(name) or recorded.get(name)
        digest = download_file(url, folder / name, expected_sha256=expected)
        logger.info("%s sha256 %s", name, digest)
    return folder


def load_reference(data_dir: str | Path | None = None, path: str | Path | None = None) -> pd.DataFrame:
    """Read ``DMS_substitutions.csv`` (one row per assay, indexed by ``DMS_id``).

    Raises
    ------
    FileNotFoundError
        No reference file, with a message saying what to put where.
    ValueError
        A required column (:data:`REFERENCE_COLUMNS`) is missing or ``DMS_id`` repeats.
    """
    if path is None:
        folder = resolve_data_dir(data_dir)
        candidates = [folder / "DMS_substitutions.csv", folder / "reference_files" / "DMS_substitutions.csv"]
        path = next((c for c in candidates if c.exists()), None)
        if path is None:
            raise FileNotFoundError(_missing_data_message("ProteinGym reference file DMS_substitutions.csv", folder))
    reference = _read_csv(Path(path), what="reference file")
    missing = [c for c in REFERENCE_COLUMNS if c not in reference.columns]
    if missing:
        raise ValueError(f"reference file {path} lacks column(s) {missing}; has {list(reference.columns)[:12]}...")
    if reference["DMS_id"].duplicated().any():
        repeated = reference["DMS_id"][reference["DMS_id"].duplicated()].tolist()
        raise ValueError(f"reference file {path}: DMS_id repeats: {repeated[:5]}")
    return reference.set_index("DMS_id", drop=False)


def list_assays(reference: pd.DataFrame, max_variants: int | None = None) -> list[str]:
    """Assay ids in the reference, optionally only those with at most ``max_variants`` single mutants."""
    ids = reference["DMS_id"]
    if max_variants is not None:
        counts = reference.get("DMS_number_single_mutants", reference.get("DMS_total_number_mutants"))
        ids = ids[counts.astype(float) <= max_variants]
    return [str(x) for x in ids]


def suggest_assays(name: str, known: Sequence[str], n: int = 5) -> list[str]:
    """Close matches to ``name`` among ``known``: ids it starts, difflib matches, ids sharing its first token."""
    lowered = {k.lower(): k for k in known}
    hits = [k for k in known if k.lower().startswith(name.lower())]
    hits += [lowered[c] for c in difflib.get_close_matches(name.lower(), list(lowered), n=n, cutoff=0.5) if lowered[c] not in hits]
    prefix = name.split("_")[0].lower()
    hits += [k for k in known if k.lower().startswith(prefix) and k not in hits]
    return hits[:n]


def _unknown_assay(name: str, reference: pd.DataFrame) -> UnknownAssayError:
    matches = suggest_assays(name, list(reference["DMS_id"]))
    hint = f"; did you mean {', '.join(matches)}?" if matches else ""
    return UnknownAssayError(f"unknown ProteinGym assay id {name!r} ({len(reference)} assays in the reference){hint}")


def find_assay_csv(dms_id: str, data_dir: str | Path | None = None) -> tuple[str, Path, str | None]:
    """Locate an assay's CSV: returns ``(source label, folder or zip path, zip member or None)``."""
    folder = resolve_data_dir(data_dir)
    for sub in _ASSAY_FOLDERS:
        csv = folder / sub / f"{dms_id}.csv"
        if csv.exists():
            return sub, csv, None
        archive = folder / f"{sub}.zip"
        if sub != "." and archive.exists():
            with zipfile.ZipFile(archive) as zf:
                member = next((m for m in zf.namelist() if Path(m).name == f"{dms_id}.csv"), None)
            if member is not None:
                return sub, archive, member
    raise FileNotFoundError(_missing_data_message(f"assay file {dms_id}.csv", folder))


def _read_csv(path: Path, what: str, member: str | None = None) -> pd.DataFrame:
    try:
        if member is not None:
            with zipfile.ZipFile(path) as zf:
                return pd.read_csv(io.BytesIO(zf.read(member)), low_memory=False)
        return pd.read_csv(path, low_memory=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        where = f"{path}!{member}" if member else str(path)
        raise ValueError(f"malformed {what} {where}: {error}") from error


def parse_mutant(mutant: str) -> list[tuple[str, int, str]]:
    """Parse ``"A12G"`` or ``"A12G:K15R"`` into ``[(wild type, 1-based position, mutant), ...]``."""
    if not isinstance(mutant, str) or not mutant:
        raise ValueError(f"mutant={mutant!r} is not a mutation string like 'A12G' or 'A12G:K15R'")
    parsed = []
    for part in mutant.split(":"):
        match = _MUTATION.match(part.strip())
        if match is None:
            raise ValueError(f"mutant={mutant!r}: {part!r} is not of the form <wild type><position><mutant>, e.g. A12G")
        parsed.append((match.group(1), int(match.group(2)), match.group(3)))
    return parsed


def apply_mutant(target_seq: str, mutant: str) -> str:
    """Return ``target_seq`` with the substitutions of ``mutant`` applied (wild types are checked)."""
    residues = list(target_seq)
    for wild, position, new in parse_mutant(mutant):
        if position > len(residues) or residues[position - 1] != wild:
            found = residues[position - 1] if position <= len(residues) else "past the end"
            raise ValueError(f"mutant {mutant!r}: position {position} is {found!r} in the target, not {wild!r}")
        residues[position - 1] = new
    return "".join(residues)


def check_mutants(mutants: Sequence[str], target_seq: str, dms_id: str = "assay") -> None:
    """Raise one ``ValueError`` listing every mutant whose wild type does not match ``target_seq``."""
    bad = []
    for mutant in mutants:
        for wild, position, _ in parse_mutant(mutant):
            if position > len(target_seq) or target_seq[position - 1] != wild:
                found = target_seq[position - 1] if position <= len(target_seq) else "past the end"
                bad.append(f"{mutant} (position {position} is {found})")
                break
    if bad:
        shown = ", ".join(bad[:20]) + (f", ... ({len(bad)} in all)" if len(bad) > 20 else "")
        raise ValueError(f"{dms_id}: {len(bad)} mutant(s) do not match the target sequence (length {len(target_seq)}): {shown}")


def mutant_positions(mutants: Sequence[str]) -> np.ndarray:
    """1-based position of the first substitution of each mutant, ``(n_variants,)`` int."""
    return np.array([parse_mutant(m)[0][1] for m in mutants], dtype=np.int64)


def generate_folds(positions: Sequence[int], scheme: str, n_folds: int = N_FOLDS, seed: int = 42) -> np.ndarray:
    """Assign folds the way ProteinGym's fold script does (see the module docstring).

    Parameters
    ----------
    positions : sequence of int
        Mutated position of each variant, ``(n_variants,)``.
    scheme : {"fold_random_5", "fold_modulo_5", "fold_contiguous_5"}
    seed : int
        Seed of the random scheme (``numpy.random.RandomState(seed).randint``).

    Returns
    -------
    ndarray of int, ``(n_variants,)`` with values in ``0..n_folds-1``.
    """
    positions = np.asarray(positions, dtype=np.int64)
    distinct = np.unique(positions)
    if len(distinct) < n_folds:
        raise ValueError(f"{scheme}: only {len(distinct)} distinct mutated position(s); {n_folds} folds need at least {n_folds}")
    if scheme == "fold_random_5":
        return np.random.RandomState(seed).randint(0, n_folds, size=len(positions)).astype(np.int64)
    elif scheme == "fold_modulo_5":
        fold_of = dict(zip(distinct.tolist(), (np.arange(len(distinct)) % n_folds).tolist()))
    elif scheme == "fold_contiguous_5":
        size, extra = divmod(len(distinct), n_folds)
        blocks = np.repeat(np.arange(n_folds), [size + (i < extra) for i in range(n_folds)])
        fold_of = dict(zip(distinct.tolist(), blocks.tolist()))
    else:
        raise ValueError(f"scheme={scheme!r}; choose from {SCHEMES}")
    return np.array([fold_of[p] for p in positions.tolist()], dtype=np.int64)


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
    variants = _read_csv(path, what=f"assay {dms_id}", member=member)
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
