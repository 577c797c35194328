"""Planning the forward passes: records -> pieces (long records cut into windows) -> batches -> tokens.

A *piece* is a contiguous slice of one record embedded in one forward row. Records over 1022 residues
(ESM-2's training length) are cut into overlapping windows (``"window"``, merged back by
:func:`merge_windows`: each residue takes the vector of the window whose centre is nearest), truncated
(``"truncate"``) or refused (``"error"``). Batches are length-sorted under a token budget: padded rows
(``rows * (longest + 2) <= budget``) or packed rows (``sum(length + 2) <= budget``, real tokens only).

>>> pieces, counts = plan([("a", "M" * 2000), ("b", "MKV")], "window", 256, 1022)
>>> [(p.record, p.start, p.stop) for p in pieces], counts
([(0, 0, 1022), (0, 766, 1788), (0, 978, 2000), (1, 0, 3)], {0: 3, 1: 1})
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from revdistill.esm.sequences import AMINO_ACIDS, EXTRA_LETTERS

__all__ = ["LONG_MODES", "Piece", "plan", "padded_batches", "packed_batches", "token_rows", "padded_tokens",
           "merge_windows"]

#: What to do with records over the window length.
LONG_MODES = ("window", "truncate", "error")


@dataclass(frozen=True)
class Piece:
    """A contiguous slice ``[start, stop)`` of record ``record`` embedded in one forward row."""

    record: int
    start: int
    stop: int

    @property
    def length(self) -> int:
        return self.stop - self.start


def _window_starts(length: int, window: int, overlap: int) -> list[int]:
    stride = window - overlap
    starts = list(range(0, length - window, stride))
    return starts + [length - window]


def plan(records: Sequence[tuple[str, str]], long_sequences: str, window_overlap: int,
          max_residues: int) -> tuple[list[Piece], dict[int, int]]:
    """Split records into forward rows; return the pieces and, per record, the number of pieces."""
    pieces: list[Piece] = []
    counts: dict[int, int] = {}
    long_ids = []
    for index, (record_id, sequence) in enumerate(records):
        length = len(sequence)
        if length <= max_residues:
            pieces.append(Piece(index, 0, length))
            counts[index] = 1
            continue
        long_ids.append(f"{record_id} ({length})")
        if long_sequences == "window":
            starts = _window_starts(length, max_residues, window_overlap)
            pieces.extend(Piece(index, start, start + max_residues) for start in starts)
            counts[index] = len(starts)
        elif long_sequences == "truncate":
            pieces.append(Piece(index, 0, max_residues))
            counts[index] = 1
        elif long_sequences == "error":
            raise ValueError(
                f"record {record_id!r} has {length} residues, more than {max_residues}; "
                f"use long_sequences='window' or 'truncate'"
            )
        else:  # pragma: no cover - checked by the caller
            raise ValueError(f"long_sequences={long_sequences!r} must be one of {LONG_MODES}")
    if long_ids:
        shown = ", ".join(long_ids[:20]) + (f" and {len(long_ids) - 20} more" if len(long_ids) > 20 else "")
        how = (f"overlapping {max_residues}-residue windows (overlap {window_overlap}) merged"
               if long_sequences == "window" else f"truncated to the first {max_residues} residues")
        message = f"{len(long_ids)} record(s) longer than {max_residues} residues, {how}: {shown}"
        warnings.warn(message, stacklevel=3)
    return pieces, counts


def padded_batches(pieces: Sequence[Piece], token_budget: int) -> list[list[Piece]]:
    """Length-sorted (longest first) batches with ``rows * (longest + 2) <= token_budget``."""
    ordered = sorted(pieces, key=lambda piece: (-piece.length, piece.record, piece.start))
    batches: list[list[Piece]] = []
    current: list[Piece] = []
    for piece in ordered:
        width = (current[0].length if current else piece.length) + 2
        if current and (len(current) + 1) * width > token_budget:
            batches.append(current)
            current = []
        current.append(piece)
    if current:
        batches.append(current)
    return batches


def packed_batches(pieces: Sequence[Piece], token_budget: int) -> list[list[Piece]]:
    """Length-sorted (longest first) batches with ``sum(length + 2) <= token_budget`` (no padding)."""
    ordered = sorted(pieces, key=lambda piece: (-piece.length, piece.record, piece.start))
    batches: list[list[Piece]] = []
    current: list[Piece] = []
    used = 0
    for piece in ordered:
        if current and used + piece.length + 2 > token_budget:
            batches.append(current)
            current, used = [], 0
        current.append(piece)
        used += piece.length + 2
    if current:
        batches.append(current)
    return batches


def token_rows(batch: Sequence[Piece], records: Sequence[tuple[str, str]], alphabet) -> list[np.ndarray]:
    """BOS, residue tokens, EOS of every piece, shape (length + 2,) each."""
    lookup = _lookup_table(alphabet)
    rows = []
    for piece in batch:
        residues = records[piece.record][1][piece.start:piece.stop].encode("ascii")
        row = np.empty(piece.length + 2, dtype=np.int64)
        row[0], row[-1] = alphabet.cls_idx, alphabet.eos_idx
        row[1:-1] = lookup[np.frombuffer(residues, dtype=np.uint8)]
        rows.append(row)
    return rows


def padded_tokens(batch: Sequence[Piece], records: Sequence[tuple[str, str]], alphabet) -> torch.Tensor:
    """Padded token matrix, shape (len(batch), longest + 2)."""
    rows = token_rows(batch, records, alphabet)
    tokens = np.full((len(rows), max(len(row) for row in rows)), alphabet.padding_idx, dtype=np.int64)
    for index, row in enumerate(rows):
        tokens[index, :len(row)] = row
    return torch.from_numpy(tokens)


def _lookup_table(alphabet) -> np.ndarray:
    """Byte -> token index for the residue letters (validated records only contain those)."""
    table = np.full(256, alphabet.unk_idx, dtype=np.int64)
    for letter in AMINO_ACIDS + EXTRA_LETTERS:
        table[ord(letter)] = alphabet.tok_to_idx[letter]
    return table


def merge_windows(pieces: Sequence[Piece], values: Sequence[torch.Tensor]) -> torch.Tensor:
    """Join overlapping windows; each residue comes from the window whose centre is nearest."""
    order = sorted(range(len(pieces)), key=lambda i: pieces[i].start)
    parts = []
    for rank, i in enumerate(order):
        piece = pieces[i]
        lo = piece.start if rank == 0 else (piece.start + pieces[order[rank - 1]].stop) // 2
        hi = piece.stop if rank == len(order) - 1 else (pieces[order[rank + 1]].start + piece.stop) // 2
        parts.append(values[i][lo - piece.start:hi - piece.start])
    return torch.cat(parts, dim=0)
