"""Sequences -> per-residue and mean-pooled ESM-2 embeddings, for one model or a whole ladder at once.

Every chosen model sees the same token batch, and the joint per-residue :class:`~revdistill.Moments`
of all levels is accumulated on the fly (on the device), so fitting the ladder needs no per-residue storage.

Two batch layouts (``attention=``), both reusing fair-esm's weights with float32 rotary tables and the
weights in the chosen dtype (``bf16`` on GPUs), see :mod:`revdistill.esm.forward`:

* ``"packed"`` (the default on CUDA): length-sorted sequences are concatenated without padding under a
  budget of *real* tokens (``sum(length + 2) <= token_budget``) and attention is variable-length
  (FlashAttention varlen or SDPA on jagged tensors, whichever this torch/device supports). Host copies
  go through pinned memory without blocking; the next batch's tokens are prepared while the device works.
* ``"padded"`` (the default on CPUs, and the fallback): length-sorted batches with
  ``n_sequences * padded_length <= token_budget`` and SDPA with a key-padding mask.

In float32 both match stock fair-esm to ~1e-6 relative error. A record's vectors do not depend on
which other records share its batch beyond float rounding (pooled means are summed in float64).

Long sequences (more than 1022 residues, ESM-2's training length): ``long_sequences="window"``
(the default) embeds overlapping 1022-residue windows (overlap ``window_overlap=256``) and gives each
residue the vector from the window whose centre is nearest (cut at the middle of each overlap);
``"truncate"`` keeps the first 1022 residues; ``"error"`` refuses. A warning names the records affected.

Examples
--------
>>> from revdistill.esm.models.loading import tiny_ladder
>>> from revdistill.esm.embed import LadderEmbedder
>>> result = LadderEmbedder(tiny_ladder(), progress=False).run([("ubq", "MQIFVKTLTGK")])
>>> result.pooled["tiny-64"].shape, result.moments.count
((1, 64), 11)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from revdistill.esm.batching import (LONG_MODES, MAX_RESIDUES, WINDOW_OVERLAP, Piece, merge_windows, packed_batches,
                                     padded_batches, padded_tokens, plan, token_rows)
from revdistill.esm.forward import PackedTokens, lean_forward, packed_forward, stock_forward
from revdistill.esm.sequences import validate_records

logger = logging.getLogger(__name__)

__all__ = ["ATTENTION_MODES", "MAX_RESIDUES", "WINDOW_OVERLAP", "EmbeddingResult", "LadderEmbedder", "embed",
           "stock_forward"]

#: Batch layouts of :class:`LadderEmbedder` (``"auto"``: packed on CUDA, padded elsewhere).
ATTENTION_MODES = ("auto", "packed", "padded")
_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16,
           "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}


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


class _NoBar:
    """Stands in for a tqdm bar when progress is off (tqdm is not imported then)."""

    def update(self, count: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class _Run:
    """What one :meth:`LadderEmbedder.run` accumulates (pooled vectors stay on the device until the end)."""

    records: list[tuple[str, str]]
    counts: dict[int, int]
    keep: set[str]
    pooled: dict[str, torch.Tensor]
    lengths: np.ndarray
    kept: dict[str, dict[str, np.ndarray]]
    moments: object | None
    pending: dict[int, list[tuple[Piece, dict[str, torch.Tensor]]]] = field(default_factory=dict)


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
        Max tokens per batch: ``rows * padded_length`` (padded) or real tokens (packed). Default 16384
        on CUDA, 4096 otherwise. Halved and retried on CUDA out-of-memory (logged).
    long_sequences : {"window", "truncate", "error"}, default="window"
    window_overlap : int, default=256
        Residues shared by consecutive windows in ``"window"`` mode.
    fast : bool, default=True
        Use the lean forwards; False runs fair-esm's stock forward (padded batches).
    progress : bool, default=True
        Show a tqdm bar in residues/s.
    attention : {"auto", "packed", "padded"}, default="auto"
        Batch layout (see the module docstring); ``"auto"`` is packed on CUDA and padded elsewhere.
    """

    def __init__(self, models: Mapping[str, torch.nn.Module], alphabet=None, *, device: str | torch.device = "cpu",
                 dtype: str | torch.dtype = "fp32", token_budget: int | None = None,
                 long_sequences: str = "window", window_overlap: int = WINDOW_OVERLAP, fast: bool = True,
                 progress: bool = True, attention: str = "auto") -> None:
        if not models:
            raise ValueError("models is empty: give at least one {name: model}")
        if long_sequences not in LONG_MODES:
            raise ValueError(f"long_sequences={long_sequences!r} must be one of {LONG_MODES}")
        if not 0 <= int(window_overlap) < MAX_RESIDUES // 2:
            raise ValueError(f"window_overlap={window_overlap} must be between 0 and {MAX_RESIDUES // 2 - 1}")
        if attention not in ATTENTION_MODES:
            raise ValueError(f"attention={attention!r} must be one of {ATTENTION_MODES}")
        if attention == "packed" and not fast:
            raise ValueError("attention='packed' needs fast=True (fair-esm's stock forward takes padded batches)")
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
        if attention == "auto":
            attention = "packed" if self.fast and self.device.type == "cuda" else "padded"
        self.attention = attention
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
        pieces, counts = plan(records, self.long_sequences, self.window_overlap, MAX_RESIDUES)
        pooled = {name: torch.zeros(len(records), dim, device=self.device) for name, dim in self.dims.items()}
        state = _Run(records, counts, keep_ids(records, per_residue), pooled=pooled,
                     lengths=np.zeros(len(records), dtype=np.int64), kept={name: {} for name in self.models},
                     moments=self._new_moments() if moments else None)
        queue = self._batches(pieces)
        own_bar = bar is None
        if own_bar:
            bar = self._progress_bar(sum(piece.length for piece in pieces))
        try:
            prepared = None
            while queue:
                batch = queue.pop(0)
                host = prepared[1] if prepared is not None and prepared[0] is batch else \
                    self._host_tokens(batch, records)
                residues = self._forward_with_retry(batch, host, queue)
                if residues is None:  # batch was split and re-queued after an OOM
                    prepared = None
                    continue
                prepared = (queue[0], self._host_tokens(queue[0], records)) if queue else None  # overlaps the device
                self._collect(batch, residues, state)
                bar.update(sum(piece.length for piece in batch))
        finally:
            if own_bar:
                bar.close()
        return EmbeddingResult(ids=[record_id for record_id, _ in records], lengths=state.lengths,
                               pooled={name: value.cpu().numpy() for name, value in state.pooled.items()},
                               per_residue={name: value for name, value in state.kept.items() if value},
                               moments=state.moments)

    # -------------------------------------------------------------------------------- internals
    def _batches(self, pieces: Sequence[Piece]) -> list[list[Piece]]:
        if self.attention == "packed":
            return packed_batches(pieces, self.token_budget)
        return padded_batches(pieces, self.token_budget)

    def _host_tokens(self, batch: Sequence[Piece], records) -> PackedTokens | torch.Tensor:
        if self.attention == "packed":
            return PackedTokens.from_rows(token_rows(batch, records, self.alphabet))
        return padded_tokens(batch, records, self.alphabet)

    def _to_device(self, values: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Host -> device through pinned memory, not blocking the host (CUDA)."""
        values = torch.as_tensor(values)
        if self.device.type != "cuda":
            return values.to(self.device)
        return values.pin_memory().to(self.device, non_blocking=True)

    def _residues(self, batch: Sequence[Piece], outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Residue rows (BOS/EOS/padding dropped) of every piece, in batch order: (n_residues, dim) float32."""
        sizes = np.array([piece.length for piece in batch], dtype=np.int64)
        first = next(iter(outputs.values()))
        if self.attention == "packed":
            bases = np.concatenate([[0], np.cumsum(sizes + 2)[:-1]])
        else:
            bases = np.arange(len(batch), dtype=np.int64) * first.shape[1]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        index = np.arange(int(sizes.sum()), dtype=np.int64) + np.repeat(bases + 1 - starts, sizes)
        index = self._to_device(index)
        return {name: out.reshape(-1, out.shape[-1]).index_select(0, index).float() for name, out in outputs.items()}

    def _collect(self, batch: Sequence[Piece], residues: dict[str, torch.Tensor], state: _Run) -> None:
        """Pool, keep and accumulate the moments of one batch's residues (batch order, see _residues)."""
        sizes = np.array([piece.length for piece in batch], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        whole = [row for row, piece in enumerate(batch) if state.counts[piece.record] == 1]
        done: dict[str, list[torch.Tensor]] = {name: [] for name in self.models}
        if whole:
            segments = self._to_device(np.repeat(np.arange(len(batch)), sizes))
            rows = self._to_device(np.array(whole, dtype=np.int64))
            targets = self._to_device(np.array([batch[row].record for row in whole], dtype=np.int64))
            divisor = self._to_device(sizes[whole].astype(np.float64))[:, None]
            selected = None if len(whole) == len(batch) else self._to_device(
                np.concatenate([np.arange(starts[row], starts[row] + sizes[row]) for row in whole]))
            for name, values in residues.items():
                sums = torch.zeros(len(batch), values.shape[1], dtype=torch.float64, device=values.device)
                sums.index_add_(0, segments, values.to(torch.float64))
                state.pooled[name].index_copy_(0, targets, (sums.index_select(0, rows) / divisor).float())
                done[name].append(values if selected is None else values.index_select(0, selected))
        for row, piece in enumerate(batch):
            span = slice(int(starts[row]), int(starts[row] + sizes[row]))
            if state.counts[piece.record] == 1:
                state.lengths[piece.record] = piece.length
                record_id = state.records[piece.record][0]
                if record_id in state.keep:
                    for name, values in residues.items():
                        state.kept[name][record_id] = values[span].cpu().numpy()
                continue
            parts = state.pending.setdefault(piece.record, [])
            parts.append((piece, {name: values[span] for name, values in residues.items()}))
            if len(parts) == state.counts[piece.record]:
                self._finish_windows(state.pending.pop(piece.record), state, done)
        if state.moments is not None and done[next(iter(self.models))]:
            state.moments.update({name: torch.cat(values) if len(values) > 1 else values[0]
                                  for name, values in done.items()})

    def _finish_windows(self, parts, state: _Run, done: dict[str, list[torch.Tensor]]) -> None:
        """Merge the windows of one long record once all of them are embedded."""
        record = parts[0][0].record
        record_id = state.records[record][0]
        for name in self.models:
            value = merge_windows([piece for piece, _ in parts], [values[name] for _, values in parts])
            state.lengths[record] = value.shape[0]
            state.pooled[name][record] = value.to(torch.float64).mean(dim=0).float()
            done[name].append(value)
            if record_id in state.keep:
                state.kept[name][record_id] = value.cpu().numpy()

    def _new_moments(self):
        from revdistill.core.moments import Moments  # noqa: PLC0415

        return Moments(tuple(self.models), tuple(self.dims.values()), device=self.device)

    def _progress_bar(self, total: int, leave: bool = False):
        """A tqdm bar counting residues (its rate reads residues/s); a no-op bar when progress is off."""
        if not self.progress:
            return _NoBar()
        from tqdm.auto import tqdm  # noqa: PLC0415

        return tqdm(total=total, unit="res", unit_scale=True, desc="embedding", leave=leave)

    def _forward(self, tokens: PackedTokens | torch.Tensor) -> dict[str, torch.Tensor]:
        """Every model on one batch: packed (n_tokens, dim) or padded (rows, width, dim) outputs."""
        with torch.inference_mode():
            if isinstance(tokens, PackedTokens):
                return {name: packed_forward(model, tokens) for name, model in self.models.items()}
            forward = lean_forward if self.fast else stock_forward
            return {name: forward(model, tokens) for name, model in self.models.items()}

    def _forward_with_retry(self, batch: list[Piece], host: PackedTokens | torch.Tensor,
                            queue: list[list[Piece]]) -> dict[str, torch.Tensor] | None:
        """The batch's residue rows per model (see ``_residues``), or None after an OOM re-queued it split."""
        tokens = host.to(self.device) if isinstance(host, PackedTokens) else self._to_device(host)
        try:
            return self._residues(batch, self._forward(tokens))
        except RuntimeError as error:
            if not _is_oom(error):
                raise
            width = max(piece.length for piece in batch) + 2
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
            queue[:0] = self._batches(batch)
            return None


def embed(records: Iterable[tuple[str, str]] | Mapping[str, str], model: torch.nn.Module, alphabet=None, *,
          name: str = "model", device: str | torch.device = "cpu", dtype: str | torch.dtype = "fp32",
          token_budget: int | None = None, long_sequences: str = "window", per_residue: bool | Iterable[str] = True,
          moments: bool = False, fast: bool = True, progress: bool = False, attention: str = "auto") -> EmbeddingResult:
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
    attention : {"auto", "packed", "padded"}, default="auto"

    Returns
    -------
    EmbeddingResult
        ``result.pooled[name]`` has shape (n_records, dim); ``result.per_residue[name][id]`` (length, dim).
    """
    engine = LadderEmbedder({name: model}, alphabet, device=device, dtype=dtype, token_budget=token_budget,
                            long_sequences=long_sequences, fast=fast, progress=progress, attention=attention)
    return engine.run(records, per_residue=per_residue, moments=moments)


def keep_ids(records: Sequence[tuple[str, str]], per_residue: bool | Iterable[str], strict: bool = False) -> set[str]:
    """Ids whose per-residue values are kept: all (``True``), none (``False``/``None``) or the given ones.

    With ``strict``, given ids that are not among the records are an error (never silently nothing);
    otherwise they are ignored.
    """
    ids = {record_id for record_id, _ in records}
    if per_residue is True:
        return ids
    if per_residue is False or per_residue is None:
        return set()
    wanted = {per_residue} if isinstance(per_residue, str) else {str(record_id) for record_id in per_residue}
    unknown = sorted(wanted - ids)
    if strict and unknown:
        raise ValueError(f"per_residue names {len(unknown)} id(s) that are not among the records: "
                         f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
    return wanted & ids
