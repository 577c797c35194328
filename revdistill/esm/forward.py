"""ESM-2 forward passes: fair-esm's stock forward and the lean SDPA forward with float32 rotary tables."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["lean_forward", "stock_forward"]

_ROTARY_CACHE: dict[tuple[int, int, str], tuple[torch.Tensor, torch.Tensor]] = {}


def _rotary_tables(length: int, head_dim: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """fair-esm's rotary cos/sin tables, built and kept in float32, shape (length, head_dim)."""
    key = (length, head_dim, str(device))
    if key not in _ROTARY_CACHE:
        if len(_ROTARY_CACHE) > 64:
            _ROTARY_CACHE.clear()
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2).float() / head_dim))
        positions = torch.arange(length).type_as(inv_freq)
        freqs = torch.einsum("i,j->ij", positions, inv_freq)
        table = torch.cat((freqs, freqs), dim=-1)
        _ROTARY_CACHE[key] = (table.cos().to(device), table.sin().to(device))
    return _ROTARY_CACHE[key]


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


def stock_forward(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """fair-esm's own forward; returns the last layer's representation, shape (batch, length, dim)."""
    layer = model.num_layers
    return model(tokens, repr_layers=[layer])["representations"][layer]


def lean_forward(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """ESM-2 forward with fair-esm's weights, SDPA attention and float32 rotary tables.

    Computes in the model's parameter dtype; rotary embedding is applied in float32 and cast back.
    Matches :func:`stock_forward` (same math: token-dropout rescaling, pre-LN layers, erf GELU,
    final layer norm).

    Parameters
    ----------
    model : esm.model.esm2.ESM2
    tokens : torch.Tensor of shape (batch, length), int64, on the model's device

    Returns
    -------
    torch.Tensor of shape (batch, length, dim), the model's dtype
    """
    padding_mask = tokens.eq(model.padding_idx)
    x = model.embed_scale * model.embed_tokens(tokens)
    if model.token_dropout:
        x = x.masked_fill((tokens == model.mask_idx).unsqueeze(-1), 0.0)
        mask_ratio_train = 0.15 * 0.8
        src_lengths = (~padding_mask).sum(-1)
        mask_ratio_observed = (tokens == model.mask_idx).sum(-1).to(x.dtype) / src_lengths
        x = x * (1 - mask_ratio_train) / (1 - mask_ratio_observed)[:, None, None]
    x = x * (1 - padding_mask.unsqueeze(-1).type_as(x))
    attn_mask = (~padding_mask)[:, None, None, :] if padding_mask.any() else None
    batch, length, dim = x.shape
    heads = model.attention_heads
    head_dim = dim // heads
    cos, sin = _rotary_tables(length, head_dim, x.device)
    for layer in model.layers:
        attention = layer.self_attn
        hidden = layer.self_attn_layer_norm(x)
        q = attention.q_proj(hidden).view(batch, length, heads, head_dim).transpose(1, 2)
        k = attention.k_proj(hidden).view(batch, length, heads, head_dim).transpose(1, 2)
        v = attention.v_proj(hidden).view(batch, length, heads, head_dim).transpose(1, 2)
        q = _rotate(q.float() * attention.scaling, cos, sin).to(x.dtype)
        k = _rotate(k.float(), cos, sin).to(x.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=1.0)
        x = x + attention.out_proj(out.transpose(1, 2).reshape(batch, length, dim))
        hidden = layer.final_layer_norm(x)
        x = x + layer.fc2(F.gelu(layer.fc1(hidden)))
    return model.emb_layer_norm_after(x)
