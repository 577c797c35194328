"""Sequences -> per-residue and mean-pooled ESM-2 embeddings, for one model or a whole ladder at once.

Every chosen model sees the same token batch, and the joint per-residue :class:`~revdistill.Moments`
of all levels is accumulated on the fly, so fitting the ladder needs no per-residue storage.

Speed (the GPU fast path): records are length-sorted and packed into batches under a token budget
(``n_sequences * padded_length <= token_budget``); the *lean* forward reuses fair-esm's weights with
PyTorch SDPA attention, keeps the rotary cos/sin tables in float32 (casting a fair-esm model to bf16
also casts its rotary tables and loses position precision past ~256), and runs the weights in the
chosen dtype (``bf16`` on GPUs). SDPA's fused kernels accumulate the softmax in float32 for bf16
inputs. In float32 the lean forward matches stock fair-esm to ~1e-6 relative error. Batches are padded
(length sorting keeps padding small); packed/unpadded varlen attention is not used.

Long sequences (more than 1022 residues, ESM-2's training length): ``long_sequences="window"``
(the default) embeds overlapping 1022-residue windows (overlap ``window_overlap=256``) and gives each
residue the vector from the window whose centre is nearest (cut at the middle of each overlap);
``"truncate"`` keeps the first 1022 residues; ``"error"`` refuses. A warning names the records affected.

Examples
--------
>>> from revdistill.esm.models import tiny_ladder
>>> from revdistill.esm.embed import LadderEmbedder
>>> result = LadderEmbedder(tiny_ladder(), progress=False).run([("ubq", "MQIFVKTLTGK")])
>>> result.pooled["tiny-64"].shape, result.moments.count
((1, 64), 11)
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from revdistill.esm.forward import lean_forward, stock_forward
from revdistill.esm.sequences import AMINO_ACIDS, EXTRA_LETTERS, validate_records

logger = logging.getLogger(__name__)

__all__ = ["MAX_RESIDUES", "EmbeddingResult", "LadderEmbedder", "embed"]

#: Residues per forward pass ESM-2 was trained on (1024 positions minus BOS and EOS).
MAX_RESIDUES = 1022
_LONG_MODES = ("window", "truncate", "error")
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


# ---------------------------------------------------------------------------------------------- planning
@dataclass(frozen=True)
class _Piece:
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


def _plan(records: Sequence[tuple[str, str]], long_sequences: str, window_overlap: int,
          max_residues: int) -> tuple[list[_Piece], dict[int, int]]:
    """Split records into forward rows; return the pieces and, per record, the number of pieces."""
    pieces: list[_Piece] = []
    counts: dict[int, int] = {}
    long_ids = []
    for index, (record_id, sequence) in enumerate(records):
        length = len(sequence)
        if length <= max_residues:
            pieces.append(_Piece(index, 0, length))
            counts[index] = 1
            continue
        long_ids.append(f"{record_id} ({length})")
        if long_sequences == "window":
            starts = _window_starts(length, max_residues, window_overlap)
            pieces.extend(_Piece(index, start, start + max_residues) for start in starts)
            counts[index] = len(starts)
        elif long_sequences == "truncate":
            pieces.append(_Piece(index, 0, max_residues))
            counts[index] = 1
        elif long_sequences == "error":
            raise ValueError(
                f"record {record_id!r} has {length} residues, more than {max_residues}; "
                f"use long_sequences='window' or 'truncate'"
            )
        else:  # pragma: no cover - checked by the caller
            raise ValueError(f"long_sequences={long_sequences!r} must be one of {_LONG_MODES}")
    if long_ids:
        shown = ", ".join(long_ids[:20]) + (f" and {len(long_ids) - 20} more" if len(long_ids) > 20 else "")
        how = (f"overlapping {max_residues}-residue windows (overlap {window_overlap}) merged"
               if long_sequences == "window" else f"truncated to the first {max_residues} residues")
        message = f"{len(long_ids)} record(s) longer than {max_residues} residues, {how}: {shown}"
        warnings.warn(message, stacklevel=3)
    return pieces, counts


def _batches(pieces: Sequence[_Piece], token_budget: int) -> list[list[_Piece]]:
    """Length-sorted (longest first) batches with ``rows * (longest + 2) <= token_budget``."""
    ordered = sorted(pieces, key=lambda piece: (-piece.length, piece.record, piece.start))
    batches: list[list[_Piece]] = []
    current: list[_Piece] = []
    for piece in ordered:
        width = (current[0].length if current else piece.length) + 2
        if current and (len(current) + 1) * width > token_budget:
            batches.append(current)
            current = []
        current.append(piece)
    if current:
        batches.append(current)
    return batches


def _tokens(batch: Sequence[_Piece], records: Sequence[tuple[str, str]], alphabet) -> torch.Tensor:
    width = max(piece.length for piece in batch) + 2
    tokens = np.full((len(batch), width), alphabet.padding_idx, dtype=np.int64)
    lookup = _lookup_table(alphabet)
    for row, piece in enumerate(batch):
        residues = records[piece.record][1][piece.start:piece.stop].encode("ascii")
        tokens[row, 0] = alphabet.cls_idx
        tokens[row, 1:piece.length + 1] = lookup[np.frombuffer(residues, dtype=np.uint8)]
        tokens[row, piece.length + 1] = alphabet.eos_idx
    return torch.from_numpy(tokens)


def _lookup_table(alphabet) -> np.ndarray:
    """Byte -> token index for the residue letters (validated records only contain those)."""
    table = np.full(256, alphabet.unk_idx, dtype=np.int64)
    for letter in AMINO_ACIDS + EXTRA_LETTERS:
        table[ord(letter)] = alphabet.tok_to_idx[letter]
    return table


def _merge_windows(pieces: Sequence[_Piece], values: Sequence[torch.Tensor]) -> torch.Tensor:
    """Join overlapping windows; each residue comes from the window whose centre is nearest."""
    order = sorted(range(len(pieces)), key=lambda i: pieces[i].start)
    parts = []
    for rank, i in enumerate(order):
        piece = pieces[i]
        lo = piece.start if rank == 0 else (piece.start + pieces[order[rank - 1]].stop) // 2
        hi = piece.stop if rank == len(order) - 1 else (pieces[order[rank + 1]].start + piece.stop) // 2
        parts.append(values[i][lo - piece.start:hi - piece.start])
    return torch.cat(parts, dim=0)


# ---------------------------------------------------------------------------------------------- engine
@dataclass
class EmbeddingResult:
    """Embeddings of a list of records, in input order.

    Attributes
    ----------
    ids : list of str
    lengths : np.ndarray of shape (n_records,)
        Residues embedded per record (after truncation, if chosen).
    pooled : dict of str to np.ndarray of shape (n_records, dim), float32
        Mean over residues (BOS/EOS/padding excluded), one array per model.
    per_residue : dict of str to dict of str to np.ndarray of shape (length, dim), float32
        Per-residue values of the requested records, per model.
    moments : Moments or None
        Joint per-residue moments of all models (levels in the models' order).
    """

    ids: list[str]
    lengths: np.ndarray
    pooled: dict[str, np.ndarray]
    per_residue: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    moments: object | None = None


def _resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        if dtype not in _DTYPES.values():
            raise ValueError(f"dtype={dtype} must be one of float32, bfloat16, float16")
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} must be one of {sorted(set(_DTYPES))}")
    return _DTYPES[dtype]


def _is_oom(error: BaseException) -> bool:
    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    return isinstance(error, oom)


class LadderEmbedder:
    """Run several ESM-2 models over the same token batches.

    Parameters
    ----------
    models : mapping of str to ESM2
        Models in ladder order (small to large); the keys name the levels. They must share an alphabet.
        The modules are moved to ``device`` and cast to ``dtype`` **in place** (as ``nn.Module.to``).
    alphabet : esm.data.Alphabet, optional
        Defaults to the first model's ``alphabet`` attribute.
    device : str or torch.device, default="cpu"
    dtype : {"fp32", "bf16", "fp16"} or torch.dtype, default="fp32"
        Weight and activation dtype; rotary tables and pooling stay in float32, moments in float64.
    token_budget : int, optional
        Max ``rows * padded_length`` per batch. Default 16384 on CUDA, 4096 otherwise.
        Halved and retried on CUDA out-of-memory (logged).
    long_sequences : {"window", "truncate", "error"}, default="window"
    window_overlap : int, default=256
        Residues shared by consecutive windows in ``"window"`` mode.
    fast : bool, default=True
        Use :func:`lean_forward` (SDPA); False runs fair-esm's stock forward.
    progress : bool, default=True
        Show a tqdm bar in residues/s.
    """

    def __init__(self, models: Mapping[str, torch.nn.Module], alphabet=None, *, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "fp32", token_budget: int | None = None,
                 long_sequences: str = "window", window_overlap: int = 256, fast: bool = True,
                 progress: bool = True) -> None:
        if not models:
            raise ValueError("models is empty: give at least one {name: model}")
        if long_sequences not in _LONG_MODES:
            raise ValueError(f"long_sequences={long_sequences!r} must be one of {_LONG_MODES}")
        if not 0 <= int(window_overlap) < MAX_RESIDUES // 2:
            raise ValueError(f"window_overlap={window_overlap} must be between 0 and {MAX_RESIDUES // 2 - 1}")
        self.device = torch.device(device)
        self.dtype = _resolve_dtype(dtype)
        if token_budget is None:
            token_budget = 16384 if self.device.type == "cuda" else 4096
        if int(token_budget) < 3:
            raise ValueError(f"token_budget={token_budget} must be at least 3 tokens")
        self.token_budget = int(token_budget)
        self.long_sequences = long_sequences
        self.window_overlap = int(window_overlap)
        self.fast = bool(fast)
        self.progress = bool(progress)
        self.models = {str(name): model.eval().to(device=self.device, dtype=self.dtype)
                       for name, model in models.items()}
        first = next(iter(self.models.values()))
        self.alphabet = alphabet if alphabet is not None else first.alphabet
        self.dims = {name: int(model.embed_dim) for name, model in self.models.items()}

    # -------------------------------------------------------------------------------- public
    def run(self, records: Iterable[tuple[str, str]] | Mapping[str, str], *,
            per_residue: bool | Iterable[str] = False, moments: bool = True, bar=None) -> EmbeddingResult:
        """Embed ``records`` with every model.

        Parameters
        ----------
        records : sequence of (id, sequence) or mapping id -> sequence
        per_residue : bool or iterable of str, default=False
            Keep per-residue arrays for all records (True) or for the given ids.
        moments : bool, default=True
            Accumulate the joint per-residue :class:`~revdistill.Moments` (on ``device``, float64).
        bar : tqdm progress bar, optional
            Update this bar (residues) instead of opening one; it is left open.

        Returns
        -------
        EmbeddingResult
        """
        records = validate_records(records)
        keep = self._keep_set(records, per_residue)
        pieces, counts = _plan(records, self.long_sequences, self.window_overlap, MAX_RESIDUES)
        lengths = np.zeros(len(records), dtype=np.int64)
        pooled = {name: np.zeros((len(records), dim), dtype=np.float32) for name, dim in self.dims.items()}
        kept: dict[str, dict[str, np.ndarray]] = {name: {} for name in self.models}
        accumulator = self._new_moments() if moments else None
        pending: dict[int, list[tuple[_Piece, dict[str, torch.Tensor]]]] = {}
        queue = _batches(pieces, self.token_budget)
        own_bar = bar is None
        if own_bar:
            bar = self._progress_bar(sum(piece.length for piece in pieces))
        try:
            while queue:
                batch = queue.pop(0)
                outputs = self._forward_with_retry(batch, records, queue)
                if outputs is None:  # batch was split and re-queued after an OOM
                    continue
                done = self._collect_whole(batch, outputs, records, counts, keep, pooled, kept, lengths)
                for row, piece in enumerate(batch):
                    if counts[piece.record] == 1:
                        continue
                    values = {name: out[row, 1:piece.length + 1].float() for name, out in outputs.items()}
                    pending.setdefault(piece.record, []).append((piece, values))
                    if len(pending[piece.record]) < counts[piece.record]:
                        continue
                    parts = pending.pop(piece.record)
                    record_id = records[piece.record][0]
                    for name in self.models:
                        value = _merge_windows([p for p, _ in parts], [v[name] for _, v in parts])
                        lengths[piece.record] = value.shape[0]
                        pooled[name][piece.record] = value.mean(dim=0).cpu().numpy()
                        done[name].append(value)
                        if record_id in keep:
                            kept[name][record_id] = value.cpu().numpy()
                if accumulator is not None and done[next(iter(self.models))]:
                    accumulator.update({name: torch.cat(values) for name, values in done.items()})
                bar.update(sum(piece.length for piece in batch))
        finally:
            if own_bar:
                bar.close()
        return EmbeddingResult(ids=[record_id for record_id, _ in records], lengths=lengths, pooled=pooled,
                               per_residue={name: value for name, value in kept.items() if value},
                               moments=accumulator)

    # -------------------------------------------------------------------------------- internals
    def _collect_whole(self, batch, outputs, records, counts, keep, pooled, kept, lengths) -> dict[str, list]:
        """Pooled / kept values of the batch rows that hold a whole record, in one pass per model.

        Returns, per model, the list of residue blocks (n_residues, dim) for the moments update.
        """
        done: dict[str, list[torch.Tensor]] = {name: [] for name in self.models}
        rows = [row for row, piece in enumerate(batch) if counts[piece.record] == 1]
        if not rows:
            return done
        device = next(iter(outputs.values())).device
        row_index = torch.tensor(rows, device=device)
        sizes = torch.tensor([batch[row].length for row in rows], device=device)
        width = next(iter(outputs.values())).shape[1]
        positions = torch.arange(width, device=device)
        mask = (positions >= 1) & (positions <= sizes[:, None])  # (rows, width): residues only
        record_index = [batch[row].record for row in rows]
        for row in rows:
            lengths[batch[row].record] = batch[row].length
        for name, out in outputs.items():
            values = out.index_select(0, row_index).float()
            sums = (values * mask[..., None]).sum(dim=1)
            pooled[name][record_index] = (sums / sizes[:, None]).cpu().numpy()
            done[name].append(values[mask])
            for position, row in enumerate(rows):
                record_id = records[batch[row].record][0]
                if record_id in keep:
                    kept[name][record_id] = values[position, 1:batch[row].length + 1].cpu().numpy()
        return done

    def _keep_set(self, records: Sequence[tuple[str, str]], per_residue: bool | Iterable[str]) -> set[str]:
        ids = {record_id for record_id, _ in records}
        if per_residue is True:
            return ids
        if per_residue is False or per_residue is None:
            return set()
        wanted = {per_residue} if isinstance(per_residue, str) else {str(record_id) for record_id in per_residue}
        return wanted & ids

    def _new_moments(self):
        from revdistill.core.moments import Moments

        return Moments(tuple(self.models), tuple(self.dims.values()), device=self.device)

    def _progress_bar(self, total: int, leave: bool = False):
        """A tqdm bar counting residues (its rate reads residues/s)."""
        from tqdm.auto import tqdm

        return tqdm(total=total, unit="res", unit_scale=True, desc="embedding", disable=not self.progress,
                    leave=leave)

    def _forward(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        forward = lean_forward if self.fast else stock_forward
        with torch.inference_mode():
            return {name: forward(model, tokens) for name, model in self.models.items()}

    def _forward_with_retry(self, batch: list[_Piece], records, queue: list[list[_Piece]]):
        tokens = _tokens(batch, records, self.alphabet).to(self.device)
        try:
            return self._forward(tokens)
        except RuntimeError as error:
            if not _is_oom(error):
                raise
            width = tokens.shape[1]
            del tokens
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(batch) == 1 or self.token_budget // 2 < width:
                raise RuntimeError(
                    f"out of memory on {self.device} with a single batch of {len(batch)} row(s) of "
                    f"{width} tokens at token_budget={self.token_budget}; use a smaller model, "
                    f"dtype='bf16', or another device"
                ) from error
            self.token_budget //= 2
            logger.warning("out of memory on %s; halving token_budget to %d and retrying",
                           self.device, self.token_budget)
            queue[:0] = _batches(batch, self.token_budget)
            return None


def embed(records: Iterable[tuple[str, str]] | Mapping[str, str], model: torch.nn.Module, alphabet=None, *,
          name: str = "model", device: str | torch.device = "cpu", dtype: str | torch.dtype = "fp32",
          token_budget: int | None = None, long_sequences: str = "window", per_residue: bool | Iterable[str] = True,
          moments: bool = False, fast: bool = True, progress: bool = False) -> EmbeddingResult:
    """Embed records with one ESM-2 model (a one-level :class:`LadderEmbedder`).

    Parameters
    ----------
    records : sequence of (id, sequence) or mapping id -> sequence
    model : esm.model.esm2.ESM2
        Moved to ``device`` / cast to ``dtype`` in place.
    alphabet : esm.data.Alphabet, optional
    name : str, default="model"
        Key of this model in the result's dicts.
    per_residue : bool or iterable of str, default=True

    Returns
    -------
    EmbeddingResult
        ``result.pooled[name]`` has shape (n_records, dim); ``result.per_residue[name][id]`` (length, dim).
    """
    engine = LadderEmbedder({name: model}, alphabet, device=device, dtype=dtype, token_budget=token_budget,
                            long_sequences=long_sequences, fast=fast, progress=progress)
    return engine.run(records, per_residue=per_residue, moments=moments)
