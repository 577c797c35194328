"""Mutation strings (``A12G``, ``A12G:K15R``): parsing, applying, checking against a target.

A mutation is ``<wild type><1-based position><new residue>`` with upper-case one-letter codes (the 20
amino acids and X/B/Z/U/O for the new residue); several are joined by ``:``. Whitespace is not part of
the syntax: a padded ``" Y18H "`` is refused rather than silently becoming a second variant.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from revdistill.esm.sequences import AMINO_ACIDS, EXTRA_LETTERS

__all__ = ["parse_mutant", "apply_mutant", "check_mutants", "mutant_positions", "MUTANT_SYNTAX"]

_MUTATION = re.compile(rf"^([A-Z])([1-9][0-9]*)([{AMINO_ACIDS}{EXTRA_LETTERS}])$")
#: What a mutant string must look like (for messages).
MUTANT_SYNTAX = ("<wild type><1-based position><new residue>, e.g. A12G, several joined by ':' (A12G:K15R), "
                 f"upper case, no spaces; new residues from {AMINO_ACIDS}{EXTRA_LETTERS}")


def parse_mutant(mutant: str) -> list[tuple[str, int, str]]:
    """Parse ``"A12G"`` or ``"A12G:K15R"`` into ``[(wild type, 1-based position, mutant), ...]``.

    Raises
    ------
    ValueError
        Anything else (including surrounding whitespace or lower case); the message says what is allowed.
    """
    if not isinstance(mutant, str) or not mutant:
        raise ValueError(f"mutant={mutant!r} is not a mutation string: expected {MUTANT_SYNTAX}")
    if mutant != mutant.strip() or any(part != part.strip() for part in mutant.split(":")):
        raise ValueError(f"mutant={mutant!r} has spaces around it or its parts: expected {MUTANT_SYNTAX}")
    parsed = []
    for part in mutant.split(":"):
        match = _MUTATION.match(part)
        if match is None:
            raise ValueError(f"mutant={mutant!r}: {part!r} is not of the form {MUTANT_SYNTAX}")
        parsed.append((match.group(1), int(match.group(2)), match.group(3)))
    positions = [position for _, position, _ in parsed]
    if len(set(positions)) != len(positions):
        raise ValueError(f"mutant={mutant!r} changes one position twice")
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


def check_mutants(mutants: Sequence[str], target_seq: str, dms_id: str = "assay",
                  lines: Sequence[int] | None = None) -> None:
    """Raise one ``ValueError`` listing every mutant whose wild type does not match ``target_seq``.

    Parameters
    ----------
    mutants : sequence of str
    target_seq : str
    dms_id : str
        Names the assay (and its file) in the message.
    lines : sequence of int, optional
        Where each mutant comes from (1-based CSV lines), quoted in the message.
    """
    bad = []
    for index, mutant in enumerate(mutants):
        for wild, position, _ in parse_mutant(mutant):
            if position > len(target_seq) or target_seq[position - 1] != wild:
                found = target_seq[position - 1] if position <= len(target_seq) else "past the end"
                where = f"; CSV line {lines[index]}" if lines is not None else ""
                bad.append(f"{mutant} (position {position} is {found}{where})")
                break
    if bad:
        shown = ", ".join(bad[:20]) + (f", ... ({len(bad)} in all)" if len(bad) > 20 else "")
        raise ValueError(f"{dms_id}: column 'mutant': {len(bad)} mutant(s) do not match the target sequence "
                         f"(length {len(target_seq)}): {shown}; each wild-type letter must be the target's "
                         f"residue at that position")


def mutant_positions(mutants: Sequence[str]) -> np.ndarray:
    """1-based position of the first substitution of each mutant, ``(n_variants,)`` int."""
    return np.array([parse_mutant(m)[0][1] for m in mutants], dtype=np.int64)
