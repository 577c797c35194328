"""ESM-2 forward passes: fair-esm's stock forward, the padded SDPA forward and the packed (unpadded) forward.

All three compute the same function of fair-esm's weights (token-dropout rescaling, pre-LN layers with
rotary self-attention, erf GELU, final layer norm); the lean ones build the rotary cos/sin tables in
float32 and cast only the result (casting a fair-esm model to bf16 also casts its rotary frequencies and
positions, which loses position precision past ~256) and compute everything else in the model's dtype.

* :func:`stock_forward` is fair-esm's own ``model(tokens)``.
* :func:`lean_forward` takes a padded ``(batch, length)`` token matrix and runs PyTorch SDPA with a
  key-padding mask.
* :func:`packed_forward` takes the batch's sequences concatenated without padding
  (:class:`PackedTokens`); the projections and MLPs see only real tokens, rotary positions restart at
  every sequence, and attention is variable-length. Its attention kernel is chosen by capability
  detection (:func:`packed_attention_kernel`): FlashAttention varlen
  (``torch.nn.attention.varlen.varlen_attn``, CUDA, fp16/bf16), else SDPA on jagged nested tensors,
  else SDPA over a padded scratch copy of q/k/v (correct on every device).

>>> from revdistill.esm.models.loading import tiny_esm2
>>> model, alphabet = tiny_esm2()
>>> packed = PackedTokens.from_rows([[0, 5, 6, 2], [0, 7, 2]])      # BOS ... EOS, no padding
>>> packed_forward(model, packed).shape
torch.Size([7, 32])
"""
from __future__ import annotations

import functools
import inspect
import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812 - torch's own convention

logger = logging.getLogger(__name__)

__all__ = ["ATTENTION_KERNELS", "PackedTokens", "lean_forward", "packed_attention_kernel", "packed_forward",
           "stock_forward"]

#: Attention kernels of the packed forward, in the order capability detection tries them.
ATTENTION_KERNELS = ("varlen", "jagged", "padded")
_ROTARY_CACHE: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
_KERNEL_CACHE: dict[tuple[str, torch.dtype, int], str] = {}
_TOKEN_DROPOUT_RATIO = 0.15 * 0.8  # fair-esm's mask_ratio_train


# ---------------------------------------------------------------------------------------------- rotary
def _rotary_tables(length: int, head_dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """fair-esm's rotary cos/sin tables, built and kept in float32, shape (length, head_dim).

    Row ``p`` depends only on ``p``, so one table per (head_dim, device) is grown and sliced.
    """
    key = (head_dim, str(device))
    cached = _ROTARY_CACHE.get(key)
    if cached is None or cached[0].shape[0] < length:
        if len(_ROTARY_CACHE) > 64:
            _ROTARY_CACHE.clear()
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        positions = torch.arange(max(length, 1024)).type_as(inv_freq)
        table = torch.cat((torch.einsum("i,j->ij", positions, inv_freq),) * 2, dim=-1)
        cached = _ROTARY_CACHE[key] = (table.cos().to(device), table.sin().to(device))
    return cached[0][:length], cached[1][:length]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


# ---------------------------------------------------------------------------------------------- layers
Attend = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor]


def _layers(model: torch.nn.Module, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
            attend: Attend) -> torch.Tensor:
    """fair-esm's transformer stack and final layer norm on token-major activations.

    Parameters
    ----------
    x : torch.Tensor of shape (..., n_tokens, dim)
    cos, sin : torch.Tensor of shape (n_tokens, head_dim), float32
        Rotary table rows of each token's position (computed in float32, then cast to ``x``'s dtype:
        the rotation itself runs in the model's dtype, one pass each for q and k).
    attend : callable
        ``attend(q, k, v, scale)`` on (..., n_tokens, heads, head_dim) tensors, returning the same shape.
    """
    heads = model.attention_heads
    shape = x.shape[:-1] + (heads, x.shape[-1] // heads)
    cos, sin = cos[:, None, :].to(x.dtype), sin[:, None, :].to(x.dtype)
    for layer in model.layers:
        attention = layer.self_attn
        hidden = layer.self_attn_layer_norm(x)
        q = _rotate(attention.q_proj(hidden).view(shape), cos, sin)
        k = _rotate(attention.k_proj(hidden).view(shape), cos, sin)
        v = attention.v_proj(hidden).view(shape)
        out = attend(q, k, v, attention.scaling)
        x = x + attention.out_proj(out.reshape(x.shape))
        x = x + layer.fc2(F.gelu(layer.fc1(layer.final_layer_norm(x))))
    return model.emb_layer_norm_after(x)


def stock_forward(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """fair-esm's own forward; returns the last layer's representation, shape (batch, length, dim)."""
    layer = model.num_layers
    return model(tokens, repr_layers=[layer])["representations"][layer]


def lean_forward(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """ESM-2 forward on a padded batch with fair-esm's weights, SDPA attention and float32 rotary tables.

    Parameters
    ----------
    model : esm.model.esm2.ESM2
    tokens : torch.Tensor of shape (batch, length), int64, on the model's device

    Returns
    -------
    torch.Tensor of shape (batch, length, dim), the model's dtype
        Rows at padding positions are not meaningful.
    """
    padding_mask = tokens.eq(model.padding_idx)
    x = model.embed_scale * model.embed_tokens(tokens)
    if model.token_dropout:
        x = x.masked_fill((tokens == model.mask_idx).unsqueeze(-1), 0.0)
        src_lengths = (~padding_mask).sum(-1)
        mask_ratio_observed = (tokens == model.mask_idx).sum(-1).to(x.dtype) / src_lengths
        x = x * (1 - _TOKEN_DROPOUT_RATIO) / (1 - mask_ratio_observed)[:, None, None]
    x = x * (1 - padding_mask.unsqueeze(-1).type_as(x))
    attn_mask = (~padding_mask)[:, None, None, :] if padding_mask.any() else None
    cos, sin = _rotary_tables(tokens.shape[1], model.embed_dim // model.attention_heads, x.device)

    def attend(q, k, v, scale):  # (batch, length, heads, head_dim) <-> SDPA's (batch, heads, length, head_dim)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=attn_mask, scale=scale)
        return out.transpose(1, 2)

    return _layers(model, x, cos, sin, attend)


# ---------------------------------------------------------------------------------------------- packing
@dataclass(frozen=True)
class PackedTokens:
    """Token sequences concatenated without padding (each one BOS ... EOS).

    Attributes
    ----------
    tokens : torch.Tensor of shape (n_tokens,), int64
    offsets : torch.Tensor of shape (n_sequences + 1,), int32
        Start of each sequence and the total (``cu_seqlens``).
    positions : torch.Tensor of shape (n_tokens,), int64
        Position of each token within its sequence (rotary positions restart at 0).
    segments : torch.Tensor of shape (n_tokens,), int64
        Sequence index of each token.
    lengths : tuple of int
        Tokens per sequence (on the host, so shapes never need a device sync).
    """

    tokens: torch.Tensor
    offsets: torch.Tensor
    positions: torch.Tensor
    segments: torch.Tensor
    lengths: tuple[int, ...]

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[int] | np.ndarray]) -> "PackedTokens":
        """Pack token rows of any lengths (host tensors; move them with :meth:`to`)."""
        lengths = tuple(int(len(row)) for row in rows)
        if not lengths or min(lengths) < 1:
            raise ValueError(f"rows must be a non-empty list of non-empty token rows, got lengths {lengths[:8]}")
        lengths_np = np.asarray(lengths, dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths_np)])
        segments = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths_np)
        positions = np.arange(offsets[-1], dtype=np.int64) - offsets[:-1][segments]
        tokens = np.concatenate([np.asarray(row, dtype=np.int64) for row in rows])
        return cls(torch.from_numpy(tokens), torch.from_numpy(offsets.astype(np.int32)),
                   torch.from_numpy(positions), torch.from_numpy(segments), lengths)

    def to(self, device: str | torch.device) -> "PackedTokens":
        """A copy on ``device``; on CUDA through pinned host memory, without blocking the host."""
        device = torch.device(device)
        if device.type == "cpu":
            return self
        pin = device.type == "cuda"

        def move(tensor):
            return (tensor.pin_memory() if pin else tensor).to(device, non_blocking=pin)

        return PackedTokens(move(self.tokens), move(self.offsets), move(self.positions), move(self.segments),
                            self.lengths)

    def numel(self) -> int:
        """Total number of tokens (no padding)."""
        return int(sum(self.lengths))

    @property
    def max_length(self) -> int:
        """Longest sequence, in tokens."""
        return max(self.lengths)


# ---------------------------------------------------------------------------------------------- kernels
@functools.lru_cache(maxsize=1)
def _varlen_parameters() -> frozenset[str]:
    from torch.nn.attention.varlen import varlen_attn  # noqa: PLC0415

    return frozenset(inspect.signature(varlen_attn).parameters)


def _attend_varlen(q, k, v, scale, packed: PackedTokens):
    from torch.nn.attention.varlen import varlen_attn  # noqa: PLC0415

    parameters = _varlen_parameters()
    extra = {"num_splits": 1} if "num_splits" in parameters else {}  # batch-invariant reductions
    if "scale" in parameters:
        extra["scale"] = scale
    elif abs(scale - q.shape[-1] ** -0.5) > 1e-12:  # older torch: only the default 1/sqrt(head_dim)
        q = q * (scale * q.shape[-1] ** 0.5)
    length = packed.max_length
    return varlen_attn(q, k, v, packed.offsets, packed.offsets, length, length, **extra)


def _attend_jagged(q, k, v, scale, packed: PackedTokens):
    offsets = packed.offsets.to(torch.int64)
    bounds = {"min_seqlen": min(packed.lengths), "max_seqlen": packed.max_length}  # known here: no device sync
    nested = [torch.nested.nested_tensor_from_jagged(t, offsets, **bounds).transpose(1, 2) for t in (q, k, v)]
    out = F.scaled_dot_product_attention(*nested, scale=scale)  # (n, heads, j, head_dim)
    return out.transpose(1, 2).values()


def _attend_padded(q, k, v, scale, packed: PackedTokens):
    """SDPA over a zero-padded scratch copy of q/k/v (n, heads, max_length, head_dim) with a key mask."""
    count, width = len(packed.lengths), packed.max_length
    index = packed.segments * width + packed.positions
    lengths = packed.offsets[1:] - packed.offsets[:-1]
    key_mask = (torch.arange(width, device=q.device)[None, :] < lengths[:, None])[:, None, None, :]

    def pad(t):
        scratch = t.new_zeros((count * width,) + t.shape[1:]).index_copy_(0, index, t)
        return scratch.view(count, width, *t.shape[1:]).transpose(1, 2)

    out = F.scaled_dot_product_attention(pad(q), pad(k), pad(v), attn_mask=key_mask, scale=scale)
    return out.transpose(1, 2).reshape((count * width,) + q.shape[1:]).index_select(0, index)


_KERNELS = {"varlen": _attend_varlen, "jagged": _attend_jagged, "padded": _attend_padded}
_CANDIDATES = {"cuda": ("varlen", "jagged")}  # tried in this order before the always-correct "padded"


def _probe(kernel: str, device: torch.device, dtype: torch.dtype, head_dim: int) -> bool:
    """True if ``kernel`` runs here and agrees with per-sequence SDPA on a small ragged problem."""
    if kernel == "varlen" and (device.type != "cuda" or dtype not in (torch.float16, torch.bfloat16)):
        return False  # FlashAttention: CUDA and half precision only
    generator = torch.Generator().manual_seed(0)
    scale = head_dim ** -0.5
    with torch.inference_mode():  # as in the embedder: every tensor an inference tensor
        packed = PackedTokens.from_rows([[0] * 5, [0] * 1, [0] * 9]).to(device)
        q, k, v = (torch.randn(15, 2, head_dim, generator=generator).to(device=device, dtype=dtype) for _ in range(3))
        try:
            got = _KERNELS[kernel](q, k, v, scale, packed).float()
        except (RuntimeError, NotImplementedError, ImportError, TypeError, ValueError, AssertionError) as error:
            logger.debug("packed attention kernel %r unavailable on %s/%s: %s", kernel, device, dtype, error)
            return False
        start, parts = 0, []
        for length in packed.lengths:
            rows = [t[start:start + length].float().transpose(0, 1)[None] for t in (q, k, v)]
            parts.append(F.scaled_dot_product_attention(*rows, scale=scale)[0].transpose(0, 1))
            start += length
        expected = torch.cat(parts)
    tolerance = 1e-4 if dtype == torch.float32 else 3e-2
    return got.shape == expected.shape and bool(torch.allclose(got, expected, atol=tolerance, rtol=tolerance))


def packed_attention_kernel(device: str | torch.device, dtype: torch.dtype, head_dim: int) -> str:
    """The first of :data:`ATTENTION_KERNELS` that works on this device/dtype/head width (cached).

    ``"padded"`` always works; on CUDA, ``"varlen"`` then ``"jagged"`` are tried on a small ragged
    problem and kept only if they agree with per-sequence SDPA. CPUs use ``"padded"``: jagged SDPA
    runs there (and is exact) but about 8x slower than the padded scratch copy (torch 2.13, measured).
    """
    device = torch.device(device)
    key = (str(device), dtype, int(head_dim))
    if key not in _KERNEL_CACHE:
        candidates = _CANDIDATES.get(device.type, ())
        chosen = next((kernel for kernel in candidates if _probe(kernel, device, dtype, head_dim)), "padded")
        logger.info("packed attention on %s/%s, head width %d: %s", device, dtype, head_dim, chosen)
        _KERNEL_CACHE[key] = chosen
    return _KERNEL_CACHE[key]


def packed_forward(model: torch.nn.Module, packed: PackedTokens, *, kernel: str = "auto") -> torch.Tensor:
    """ESM-2 forward on sequences packed without padding; same math as :func:`stock_forward`.

    Parameters
    ----------
    model : esm.model.esm2.ESM2
    packed : PackedTokens
        On the model's device.
    kernel : {"auto", "varlen", "jagged", "padded"}, default="auto"
        Attention kernel; ``"auto"`` takes :func:`packed_attention_kernel`'s choice.

    Returns
    -------
    torch.Tensor of shape (n_tokens, dim), the model's dtype
        One row per packed token (BOS and EOS rows included), in packed order.
    """
    head_dim = model.embed_dim // model.attention_heads
    if kernel == "auto":
        kernel = packed_attention_kernel(packed.tokens.device, next(model.parameters()).dtype, head_dim)
    elif kernel not in _KERNELS:
        raise ValueError(f"kernel={kernel!r} must be 'auto' or one of {ATTENTION_KERNELS}")
    tokens = packed.tokens
    x = model.embed_scale * model.embed_tokens(tokens)
    if model.token_dropout:  # per sequence, exactly as fair-esm does per padded row
        is_mask = tokens == model.mask_idx
        x = x.masked_fill(is_mask.unsqueeze(-1), 0.0)
        masked = torch.zeros(len(packed.lengths), dtype=torch.int64, device=x.device)
        masked.index_add_(0, packed.segments, is_mask.to(torch.int64))
        lengths = packed.offsets[1:] - packed.offsets[:-1]
        x = x * (1 - _TOKEN_DROPOUT_RATIO) / (1 - masked.to(x.dtype) / lengths)[packed.segments, None]
    cos, sin = _rotary_tables(packed.max_length, head_dim, x.device)
    cos, sin = cos.index_select(0, packed.positions), sin.index_select(0, packed.positions)
    attend = _KERNELS[kernel]
    return _layers(model, x, cos, sin, lambda q, k, v, scale: attend(q, k, v, scale, packed))
