"""Planning the forward passes: records -> pieces (long records cut into windows) -> batches -> tokens.

A *piece* is a contiguous slice of one record embedded in one forward row. Records over 1022 residues
(ESM-2's training length) are cut into overlapping windows (``"window"``, merged back by
:func:`merge_windows`: each residue takes the vector of the window whose centre is nearest), truncated
(``"truncate"``) or refused (``"error"``). Batches are length-sorted under a token budget: padded rows
(``rows * (longest + 2) <= budget``) or packed rows (``sum(length + 2) <= budget``, real tokens only).

The same rule tells how many residues the forward passes run for a record of a given length
(:func:`embedded_residues`, what time estimates count). torch is imported only where tensors are made.

>>> pieces, counts = plan([("a", "M" * 2000), ("b", "MKV")], "window", 256, 1022)
>>> [(p.record, p.start, p.stop) for p in pieces], counts
([(0, 0, 1022), (0, 766, 1788), (0, 978, 2000), (1, 0, 3)], {0: 3, 1: 1})
>>> embedded_residues(2000), embedded_residues(2000, "truncate"), embedded_residues(3)
(3066, 1022, 3)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from revdistill.esm.sequences import AMINO_ACIDS, EXTRA_LETTERS

if TYPE_CHECKING:
    import torch

__all__ = ["LONG_MODES", "MAX_RESIDUES", "WINDOW_OVERLAP", "Piece", "plan", "embedded_residues", "padded_batches",
           "packed_batches", "token_rows", "padded_tokens", "merge_windows"]

#: What to do with records over the window length.
LONG_MODES = ("window", "truncate", "error")
#: Residues per forward pass ESM-2 was trained on (1024 positions minus BOS and EOS).
MAX_RESIDUES = 1022
#: Residues shared by consecutive windows of a long record (the default of ``window_overlap``).
WINDOW_OVERLAP = 256


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


def _spans(record_id: str, length: int, long_sequences: str, window_overlap: int,
           max_residues: int) -> list[tuple[int, int]]:
    """The ``[start, stop)`` slices of one record that go through the model, one per forward row."""
    if length <= max_residues:
        return [(0, length)]
    if long_sequences == "window":
        return [(start, start + max_residues) for start in _window_starts(length, max_residues, window_overlap)]
    elif long_sequences == "truncate":
        return [(0, max_residues)]
    elif long_sequences == "error":
        raise ValueError(
            f"record {record_id!r} has {length} residues, more than {max_residues}; "
            f"use long_sequences='window' or 'truncate'"
        )
    else:
        raise ValueError(f"long_sequences={long_sequences!r} must be one of {LONG_MODES}")


def embedded_residues(length: int, long_sequences: str = "window", window_overlap: int = WINDOW_OVERLAP,
                      max_residues: int = MAX_RESIDUES) -> int:
    """Residues the forward passes run for one record of ``length`` residues (windows counted in full).

    ``"error"`` counts a long record as it is (it would be refused before any work).
    """
    if long_sequences == "error" and length > max_residues:
        return int(length)
    return sum(stop - start for start, stop in _spans("", int(length), long_sequences, window_overlap, max_residues))


def plan(records: Sequence[tuple[str, str]], long_sequences: str, window_overlap: int,
          max_residues: int) -> tuple[list[Piece], dict[int, int]]:
    """Split records into forward rows; return the pieces and, per record, the number of pieces."""
    pieces: list[Piece] = []
    counts: dict[int, int] = {}
    long_ids = []
    for index, (record_id, sequence) in enumerate(records):
        length = len(sequence)
        spans = _spans(record_id, length, long_sequences, window_overlap, max_residues)
        if length > max_residues:
            long_ids.append(f"{record_id} ({length})")
        pieces.extend(Piece(index, start, stop) for start, stop in spans)
        counts[index] = len(spans)
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
    import torch  # noqa: PLC0415 - planning needs no torch; only the tensors do

    return torch.from_numpy(tokens)


def _lookup_table(alphabet) -> np.ndarray:
    """Byte -> token index for the residue letters (validated records only contain those)."""
    table = np.full(256, alphabet.unk_idx, dtype=np.int64)
    for letter in AMINO_ACIDS + EXTRA_LETTERS:
        table[ord(letter)] = alphabet.tok_to_idx[letter]
    return table


def merge_windows(pieces: Sequence[Piece], values: Sequence[torch.Tensor]) -> torch.Tensor:
    """Join overlapping windows; each residue comes from the window whose centre is nearest."""
    import torch  # noqa: PLC0415 - planning needs no torch; only the tensors do

    order = sorted(range(len(pieces)), key=lambda i: pieces[i].start)
    parts = []
    for rank, i in enumerate(order):
        piece = pieces[i]
        lo = piece.start if rank == 0 else (piece.start + pieces[order[rank - 1]].stop) // 2
        hi = piece.stop if rank == len(order) - 1 else (pieces[order[rank + 1]].start + piece.stop) // 2
        parts.append(values[i][lo - piece.start:hi - piece.start])
    return torch.cat(parts, dim=0)
