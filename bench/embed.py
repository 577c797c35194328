"""Embedding throughput: the three stock ways vs revdistill's engine, in the same run.

All methods embed the same synthetic sequences (lognormal lengths, median 300, clipped to 30..1022)
with random-init ESM-2 architectures of full size (weights do not change the speed):

* ``authors``  fp32, fixed batches of ``--authors-batch-size`` sequences in input order, stock fair-esm
* ``extract``  fp32, fair-esm ``extract.py``'s length-sorted 4096-token batches, stock fair-esm
* ``bf16``     fair-esm cast to bf16, length-sorted 16k-token batches, stock fair-esm forward
* ``ours``     :class:`revdistill.esm.embed.LadderEmbedder`: packed (unpadded) varlen attention on CUDA,
  padded SDPA on CPUs, fp32 rotary tables, length-sorted token-budget batches, pooled vectors and
  joint moments accumulated on the device

Printed per model and method: residues/s, useful TFLOP/s (padding excluded), peak memory (CUDA:
``max_memory_allocated``; CPU: the process's peak RSS so far), the speed-up over ``authors``, the
agreement of ``ours`` with stock fp32 (mean cosine of pooled vectors) and, for several models, the
cost of the whole ladder in one pass vs the largest model alone.

    python bench/embed.py                                     # CPU smoke run: 8M, 16 sequences
    python bench/embed.py --device cuda --models 8M,35M,150M,650M --n-seqs 256
    python bench/embed.py --device cuda --models 15B --methods bf16,ours --n-seqs 64

``bench/gpu.py`` runs all of it, every size, with agreement checks, and writes one JSON.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from revdistill.esm.embed import LadderEmbedder  # noqa: E402
from revdistill.esm.forward import stock_forward  # noqa: E402
from revdistill.esm.models.registry import get_spec  # noqa: E402

METHODS = ("authors", "extract", "bf16", "ours")
AMINO = np.array(list("ACDEFGHIKLMNPQRSTVWY"))


def synthetic_records(n_seqs: int, seed: int = 0, median: int = 300, low: int = 30, high: int = 1022):
    """Random sequences with lognormal lengths (median ``median``, sigma 0.6), clipped to [low, high]."""
    rng = np.random.default_rng(seed)
    lengths = np.clip(np.round(rng.lognormal(np.log(median), 0.6, n_seqs)), low, high).astype(int)
    return [(f"s{i}", "".join(rng.choice(AMINO, length))) for i, length in enumerate(lengths)]


def build_model(alias: str, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """Random-init ESM-2 of the named size (fair-esm's ESM2 class), built on ``device`` directly in ``dtype``.

    Building in the target dtype avoids a float32 copy (15B: 30 GB in bf16 instead of 60 GB + 30 GB).
    The rotary ``inv_freq`` buffers stay float32, as fair-esm builds them.
    """
    from esm.data import Alphabet
    from esm.model.esm2 import ESM2

    spec = get_spec(alias)
    alphabet = Alphabet.from_architecture("ESM-1b")
    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # restored below; a bench script, not library code
    try:
        with torch.device(device):
            model = ESM2(spec.layers, spec.dim, spec.heads, alphabet=alphabet, token_dropout=True)
    finally:
        torch.set_default_dtype(previous)
    return model.eval(), alphabet


def flops(records, alias: str) -> float:
    """Useful forward FLOPs of every token (BOS and EOS included): :meth:`ModelSpec.forward_flops` per token."""
    spec = get_spec(alias)
    return float(sum((len(sequence) + 2) * spec.forward_flops(len(sequence) + 2) for _, sequence in records))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB on Linux


def stock_pooled(model, alphabet, records, batches, device) -> np.ndarray:
    """fair-esm's stock forward over the given batches of record indices; pooled vectors in input order."""
    return stock_run(model, alphabet, records, batches, device)[0]


def stock_run(model, alphabet, records, batches, device, keep=(), deadline: float | None = None):
    """fair-esm's stock forward over batches of record indices (as its users run it).

    Parameters
    ----------
    keep : collection of int
        Records whose per-residue values (length, dim) float32 are returned too.
    deadline : float, optional
        ``time.perf_counter()`` value after which no new batch is started.

    Returns
    -------
    pooled : np.ndarray of shape (n_records, dim), float32 (rows of records not reached stay zero)
    per_residue : dict of int to np.ndarray of shape (length, dim)
    done : list of int
        The records embedded (all of them unless the deadline passed).
    """
    converter = alphabet.get_batch_converter(truncation_seq_length=1022)
    pooled = np.zeros((len(records), model.embed_dim), dtype=np.float32)
    per_residue, done = {}, []
    with torch.inference_mode():
        for batch in batches:
            if deadline is not None and time.perf_counter() > deadline:
                break
            _, strs, tokens = converter([records[i] for i in batch])
            out = stock_forward(model, tokens.to(device)).float()
            for row, index in enumerate(batch):
                values = out[row, 1:len(strs[row]) + 1]
                pooled[index] = values.mean(0).cpu().numpy()
                if index in keep:
                    per_residue[index] = values.cpu().numpy()
            done.extend(batch)
    return pooled, per_residue, done


def token_batches(records, toks_per_batch: int):
    """fair-esm ``extract.py``'s batches: length-sorted, ``rows * (longest + 1) <= toks_per_batch``."""
    from esm.data import FastaBatchedDataset

    dataset = FastaBatchedDataset([r for r, _ in records], [s for _, s in records])
    return dataset.get_batch_indices(toks_per_batch, extra_toks_per_seq=1)


def stock_batches(method: str, records, authors_batch_size: int = 8) -> list[list[int]]:
    """Record indices per batch of a stock way: ``authors`` (fixed batches in input order), ``extract``
    (fp32, 4096 tokens) or ``bf16`` (16k tokens)."""
    if method == "authors":
        size = authors_batch_size
        return [list(range(i, min(i + size, len(records)))) for i in range(0, len(records), size)]
    if method == "extract":
        return token_batches(records, 4096)
    if method == "bf16":
        return token_batches(records, 16384)
    raise ValueError(f"method={method!r} must be one of 'authors', 'extract', 'bf16'")


def reset_rotary(model) -> None:
    for layer in model.layers:
        layer.self_attn.rot_emb._seq_len_cached = None


def run_method(method: str, models: dict, records, args, device):
    """Time one method on every model in ``models`` (several only for the ladder run of ``ours``)."""
    if method == "ours":
        engine = LadderEmbedder(models, device=device, dtype=args.dtype, token_budget=args.token_budget,
                                progress=False)
        engine.run(records[:2], moments=True)  # warm-up
        sync(device)
        start = time.perf_counter()
        result = engine.run(records, moments=True)
        sync(device)
        return time.perf_counter() - start, result.pooled
    batches = stock_batches(method, records, args.authors_batch_size)
    (name, (model, alphabet)), = [(n, pair) for n, pair in models.items()]
    stock_pooled(model, alphabet, records[:2], [[0, 1]], device)  # warm-up
    sync(device)
    start = time.perf_counter()
    pooled = stock_pooled(model, alphabet, records, batches, device)
    sync(device)
    return time.perf_counter() - start, {name: pooled}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.mean(np.sum(a * b, axis=1)))


def bench_model(alias: str, records, args, device, rows: list) -> float | None:
    """Run every chosen method for one model; return the time of ``ours``."""
    residues = sum(len(sequence) for _, sequence in records)
    work = flops(records, alias)
    times, pooled = {}, {}
    model, alphabet = build_model(alias, device, torch.float32)
    for method in [m for m in args.methods if m in ("authors", "extract")]:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times[method], out = run_method(method, {alias: (model, alphabet)}, records, args, device)
        pooled[method] = out[alias]
        rows.append((alias, method, times[method], residues, work, peak_memory_gb(device)))
    if "ours" in args.methods:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times["ours"], out = run_method("ours", {alias: model}, records, args, device)
        pooled["ours"] = out[alias]
        rows.append((alias, "ours", times["ours"], residues, work, peak_memory_gb(device)))
    if "bf16" in args.methods:
        model = model.to(torch.bfloat16)  # stock fair-esm in bf16: rotary tables are cast too
        # (after 'ours', which may already have cast the same weights to bf16 in place)
        reset_rotary(model)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times["bf16"], out = run_method("bf16", {alias: (model, alphabet)}, records, args, device)
        pooled["bf16"] = out[alias]
        rows.append((alias, "bf16", times["bf16"], residues, work, peak_memory_gb(device)))
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    reference = pooled.get("extract", pooled.get("authors"))
    if reference is not None:
        for method in ("bf16", "ours"):
            if method in pooled:
                print(f"  {alias} {method}: mean cosine of pooled vectors vs stock fp32 = "
                      f"{cosine(pooled[method], reference):.6f}")
    return times.get("ours")


def bench_ladder(aliases: list[str], records, args, device, largest_alone: float) -> None:
    models = {alias: build_model(alias, device, torch.float32)[0] for alias in aliases}
    seconds, _ = run_method("ours", models, records, args, device)
    print(f"\nladder {' -> '.join(aliases)} in one pass (ours, with joint moments): {seconds:.2f} s; "
          f"{aliases[-1]} alone: {largest_alone:.2f} s; ratio {seconds / largest_alone:.2f}x "
          f"(target <= 1.3x)")


def print_table(rows: list, device: torch.device) -> None:
    memory = "peak GB (CUDA alloc)" if device.type == "cuda" else "peak GB (proc RSS)"
    print(f"\n{'model':>6} {'method':>8} {'seconds':>9} {'residues/s':>11} {'TFLOP/s':>8} "
          f"{memory:>20} {'vs authors':>10}")
    baseline = {alias: seconds for alias, method, seconds, *_ in rows if method == "authors"}
    order = list(dict.fromkeys(row[0] for row in rows))
    rows = sorted(rows, key=lambda row: (order.index(row[0]), METHODS.index(row[1])))
    for alias, method, seconds, residues, work, peak in rows:
        ratio = f"{baseline[alias] / seconds:.2f}x" if alias in baseline else "-"
        print(f"{alias:>6} {method:>8} {seconds:>9.2f} {residues / seconds:>11.0f} "
              f"{work / seconds / 1e12:>8.3f} {peak:>20.2f} {ratio:>10}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--models", default="8M", help="comma-separated sizes, e.g. 8M,35M,150M,650M")
    parser.add_argument("--methods", default=None,
                        help=f"subset of {','.join(METHODS)} (default: all on CUDA; on CPU all but bf16, "
                             f"which CPUs run ~30x slower than fp32)")
    parser.add_argument("--n-seqs", type=int, default=16)
    parser.add_argument("--dtype", default=None, help="dtype of 'ours' (default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--token-budget", type=int, default=None, help="'ours' token budget (default 16384)")
    parser.add_argument("--authors-batch-size", type=int, default=8)
    parser.add_argument("--no-ladder", action="store_true", help="skip the ladder-vs-largest comparison")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.models = [get_spec(name).alias for name in args.models.split(",")]
    if args.methods is None:
        args.methods = ",".join(m for m in METHODS if args.device.startswith("cuda") or m != "bf16")
    args.methods = [method.strip() for method in args.methods.split(",")]
    unknown = [method for method in args.methods if method not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {METHODS}")
    args.dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    args.token_budget = args.token_budget or 16384
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    records = synthetic_records(args.n_seqs, seed=args.seed)
    lengths = [len(sequence) for _, sequence in records]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"device: {name}; torch {torch.__version__}; {len(records)} sequences, {sum(lengths)} residues, "
          f"median length {int(np.median(lengths))}; ours: {args.dtype}, token budget {args.token_budget}")
    rows: list = []
    ours_times = {}
    for alias in args.models:
        ours_times[alias] = bench_model(alias, records, args, device, rows)
    print_table(rows, device)
    if len(args.models) > 1 and not args.no_ladder and ours_times.get(args.models[-1]):
        bench_ladder(args.models, records, args, device, ours_times[args.models[-1]])
    return 0


if __name__ == "__main__":
    sys.exit(main())
