"""Packed (unpadded) ESM-2 forward against fair-esm's stock forward, one sequence at a time."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from revdistill.esm.forward import (ATTENTION_KERNELS, PackedTokens, _probe, lean_forward, packed_attention_kernel,
                                    packed_forward, stock_forward)
from revdistill.esm.models.loading import tiny_esm2

from conftest import random_records

pytestmark = pytest.mark.usefixtures("one_torch_thread")

CPU_KERNELS = ("padded", "jagged")  # varlen is FlashAttention: CUDA only


def rel_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.double(), ref.double()
    return float((got - ref).abs().max() / ref.abs().max())


def ragged_rows(alphabet, lengths, seed: int, masked: int = 3) -> list[np.ndarray]:
    """BOS + random residues + EOS per length; ``masked`` <mask> tokens sprinkled (token-dropout path)."""
    rng = np.random.default_rng(seed)
    records = [(f"r{i}", "".join(rng.choice(list("ACDEFGHIKLMNPQRSTVWY"), n))) for i, n in enumerate(lengths)]
    rows = [tokens[:len(sequence) + 2].numpy().copy()
            for (_, sequence), tokens in zip(records, alphabet.get_batch_converter()(records)[2])]
    for _ in range(masked):
        row = rows[int(rng.integers(len(rows)))]
        row[int(rng.integers(1, len(row) - 1))] = alphabet.mask_idx
    return rows


def stock_rows(model, rows) -> torch.Tensor:
    """Reference: stock fair-esm fp32 on each sequence alone (no padding), concatenated, (n_tokens, dim)."""
    with torch.inference_mode():
        return torch.cat([stock_forward(model, torch.as_tensor(row)[None])[0] for row in rows])


@pytest.fixture(scope="module")
def tiny():
    return tiny_esm2(3, 64, 4, seed=21)


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
@pytest.mark.parametrize("kernel", CPU_KERNELS + ("auto",))
def test_packed_forward_matches_stock_fair_esm_on_ragged_sequences(tiny, kernel):
    model, alphabet = tiny
    rows = ragged_rows(alphabet, [1, 7, 1022, 2, 130, 1], seed=0)
    reference = stock_rows(model, rows)
    with torch.inference_mode():
        packed = packed_forward(model, PackedTokens.from_rows(rows), kernel=kernel)
    assert packed.shape == reference.shape == (sum(len(row) for row in rows), 64)
    assert rel_error(packed, reference) <= 1e-5


def test_packed_forward_matches_stock_on_a_full_size_8m_architecture():
    """Random-init ESM-2 8M (6 layers, 320 wide, 20 heads of 16): every token, 1- to 1022-residue sequences."""
    from esm.model.esm2 import ESM2

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        model = ESM2(6, 320, 20, alphabet="ESM-1b").eval()
    rows = ragged_rows(model.alphabet, [1022, 1, 250, 33, 2], seed=1, masked=4)
    reference = stock_rows(model, rows)
    with torch.inference_mode():
        packed = packed_forward(model, PackedTokens.from_rows(rows))
    assert rel_error(packed, reference) <= 1e-5


def test_masked_tokens_rescale_their_own_sequence_only(tiny):
    """Token dropout: a <mask> in one sequence changes that sequence's scaling, not its neighbours'."""
    model, alphabet = tiny
    rows = ragged_rows(alphabet, [40, 60], seed=2, masked=0)
    masked = [rows[0].copy(), rows[1]]
    masked[0][5] = alphabet.mask_idx
    with torch.inference_mode():
        plain = packed_forward(model, PackedTokens.from_rows(rows))
        changed = packed_forward(model, PackedTokens.from_rows(masked))
    assert rel_error(changed, stock_rows(model, masked)) <= 1e-5
    assert rel_error(changed[42:], plain[42:]) <= 1e-6          # the second sequence is untouched
    assert rel_error(changed[:42], plain[:42]) > 1e-3           # the first one really changed


def test_lean_padded_forward_still_matches_stock(tiny):
    model, alphabet = tiny
    records = random_records(5, 1, 300, seed=4)
    tokens = alphabet.get_batch_converter()(records)[2]
    with torch.inference_mode():
        valid = tokens.ne(alphabet.padding_idx)
        assert rel_error(lean_forward(model, tokens)[valid], stock_forward(model, tokens)[valid]) <= 1e-5


def test_packed_tokens_layout():
    packed = PackedTokens.from_rows([[0, 9, 2], [0, 2], [0, 5, 6, 7, 2]])
    assert packed.lengths == (3, 2, 5) and packed.numel() == 10 and packed.max_length == 5
    assert packed.offsets.tolist() == [0, 3, 5, 10] and packed.offsets.dtype == torch.int32
    assert packed.positions.tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3, 4]   # rotary restarts per sequence
    assert packed.segments.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2, 2]
    assert packed.tokens.tolist() == [0, 9, 2, 0, 2, 0, 5, 6, 7, 2]
    assert packed.to("cpu") is packed
    with pytest.raises(ValueError, match="non-empty list of non-empty token rows"):
        PackedTokens.from_rows([[0, 2], []])


@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors")
def test_kernel_choice_is_capability_detection(tiny):
    """On a CPU: varlen (FlashAttention) is refused, jagged SDPA really runs and agrees, padded is chosen."""
    assert ATTENTION_KERNELS == ("varlen", "jagged", "padded")
    assert not _probe("varlen", torch.device("cpu"), torch.float32, 16)
    assert _probe("jagged", torch.device("cpu"), torch.float32, 16)
    assert packed_attention_kernel("cpu", torch.float32, 16) == "padded"
    model, alphabet = tiny
    with pytest.raises(ValueError, match="kernel='flash' must be 'auto' or one of"):
        packed_forward(model, PackedTokens.from_rows([[0, 5, 2]]), kernel="flash")


def test_packed_bf16_keeps_rotary_precision_at_long_positions():
    """bf16 weights with float32 rotary tables: per-residue cosine to stock fp32 >= 0.999 up to position 1000."""
    reference, alphabet = tiny_esm2(2, 64, 4, seed=12)
    low, _ = tiny_esm2(2, 64, 4, seed=12)
    low = low.to(torch.bfloat16)
    rows = ragged_rows(alphabet, [1000, 300, 1], seed=5, masked=0)
    with torch.inference_mode():
        got = packed_forward(low, PackedTokens.from_rows(rows)).float()
    cosine = torch.nn.functional.cosine_similarity(got, stock_rows(reference, rows), dim=-1)
    assert cosine.mean() >= 0.999 and cosine[900:1000].mean() >= 0.999


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_packed_kernels_match_stock_fp32(dtype):
    """Every kernel that runs on this GPU, on a full-size 8M architecture, against stock fp32 on the CPU."""
    from esm.model.esm2 import ESM2

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        reference = ESM2(6, 320, 20, alphabet="ESM-1b").eval()
    model = ESM2(6, 320, 20, alphabet="ESM-1b").eval()
    model.load_state_dict(reference.state_dict())
    model = model.to(device="cuda", dtype=dtype)
    rows = ragged_rows(reference.alphabet, [1022, 1, 250, 33, 2, 700], seed=6)
    expected = stock_rows(reference, rows)
    packed = PackedTokens.from_rows(rows).to("cuda")
    ran = []
    for kernel in ATTENTION_KERNELS:
        if kernel != "padded" and not _probe(kernel, torch.device("cuda"), dtype, 16):
            continue
        with torch.inference_mode():
            got = packed_forward(model, packed, kernel=kernel).float().cpu()
        if dtype == torch.float32:
            assert rel_error(got, expected) <= 1e-4, kernel
        else:
            assert torch.nn.functional.cosine_similarity(got, expected, dim=-1).mean() >= 0.999, kernel
        ran.append(kernel)
    assert packed_attention_kernel("cuda", dtype, 16) in ran and len(ran) >= 2
