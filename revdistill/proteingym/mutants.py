"""Mutation strings (``A12G``, ``A12G:K15R``): parsing, applying, checking against a target."""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

__all__ = ["parse_mutant", "apply_mutant", "check_mutants", "mutant_positions"]

_MUTATION = re.compile(r"^([A-Z])([1-9][0-9]*)([A-Z])$")


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
