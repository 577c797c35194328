"""Protein records: FASTA reading and validation against fair-esm's alphabet."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping

__all__ = ["AMINO_ACIDS", "EXTRA_LETTERS", "read_fasta", "validate_records"]

#: The 20 standard amino acids.
AMINO_ACIDS = "ACDEFGHIKLMNPQRSTVWY"
#: Other residue letters fair-esm's ESM-1b alphabet accepts as tokens of their own.
EXTRA_LETTERS = "XBZUO"


def read_fasta(path: str | Path) -> list[tuple[str, str]]:
    """Read a FASTA file into ``(id, sequence)`` pairs; the id is the header's first word.

    Raises
    ------
    ValueError
        Sequence lines before any header, or a file with no records.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"FASTA file {path} does not exist")
    records: list[tuple[str, str]] = []
    header: str | None = None
    chunks: list[str] = []
    with path.open() as handle:
        for line_number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith(";"):
                continue
            if line.startswith(">"):
                if header is not None:
                    records.append((header, "".join(chunks)))
                words = line[1:].split()
                if not words:
                    raise ValueError(f"{path}:{line_number}: FASTA header has no id")
                header, chunks = words[0], []
            elif header is None:
                raise ValueError(f"{path}:{line_number}: sequence line before the first '>' header")
            else:
                chunks.append("".join(line.split()))
    if header is not None:
        records.append((header, "".join(chunks)))
    if not records:
        raise ValueError(f"{path} holds no FASTA records")
    return records


def validate_records(records: Iterable[tuple[str, str]] | Mapping[str, str]) -> list[tuple[str, str]]:
    """Check records and return them as ``(id, SEQUENCE)`` with upper-cased sequences.

    Raises
    ------
    ValueError
        Empty input, an empty id or sequence, duplicate ids, or a character outside the 20 amino acids
        plus X/B/Z/U/O; the message names the record and the 1-based position.
    """
    items = list(records.items()) if isinstance(records, Mapping) else list(records)
    if not items:
        raise ValueError("records is empty: give at least one (id, sequence) pair")
    allowed = set(AMINO_ACIDS + EXTRA_LETTERS)
    seen: dict[str, int] = {}
    clean = []
    for index, item in enumerate(items):
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"record {index} must be an (id, sequence) pair, got {item!r:.80}")
        record_id, sequence = str(item[0]), str(item[1])
        if not record_id:
            raise ValueError(f"record {index} has an empty id")
        if record_id in seen:
            raise ValueError(f"duplicate record id {record_id!r} (records {seen[record_id]} and {index})")
        seen[record_id] = index
        sequence = sequence.upper()
        if not sequence:
            raise ValueError(f"record {record_id!r} has an empty sequence")
        bad = set(sequence) - allowed
        if bad:
            position, letter = next((i, c) for i, c in enumerate(sequence, start=1) if c in bad)
            raise ValueError(
                f"record {record_id!r} has invalid character {letter!r} at position {position}; "
                f"allowed: {AMINO_ACIDS} and {EXTRA_LETTERS} (tokens of fair-esm's alphabet)"
            )
        clean.append((record_id, sequence))
    return clean
