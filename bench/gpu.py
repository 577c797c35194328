"""The GPU engine, measured: every ESM-2 size, the three stock ways and ours, bf16 agreement, the whole
ladder in one pass, the CUDA out-of-memory fallback and the ladder fit, in one run, into one JSON.

Per size (random-init full-size architectures, fair-esm's ``ESM2`` class; weights do not change speed),
on the same 256 sequences (lognormal lengths, median 300, clipped to 30..1022, seeded):

* ``authors``  stock fair-esm fp32, fixed batches of 8 in input order
* ``extract``  stock fair-esm fp32, ``extract.py``'s length-sorted 4096-token batches
* ``bf16``     stock fair-esm cast to bf16 (its rotary tables too), length-sorted 16k-token batches
* ``ours``     :class:`revdistill.esm.embed.LadderEmbedder`, bf16, packed varlen attention, fp32 rotary
  tables, joint moments accumulated on the device
* ``ours_padded``  the same engine and token budget on padded length-sorted batches (what packing buys)

The fp32 stock ways run on the first ``--stock-n-seqs-large`` (64) sequences for 3B and 15B (they take
minutes there); rates are residues/s either way. Agreement (first ``--agreement-n-seqs`` sequences):
per-residue cosine of ours (bf16) and of stock bf16 against stock fp32, pooled relative error, and
ours in fp32 against stock fp32 (checks the packed kernels on this device). TFLOP/s count useful work
(24 L d^2 + 4 L d n per token, no padding); share of peak is against the card's dense bf16 peak.

Running it where fair-esm is not installed (the script needs torch and numpy only):

    # on a machine with PyPI access, in the repository root (wheels/ is not git-ignored, so it travels):
    pip download fair-esm==2.0.0 --no-deps -d wheels/
    # on the GPU machine, in the copy of the repository:
    pip install --no-deps wheels/fair_esm-2.0.0-*.whl     # optional: without it the script unpacks the wheel
    python bench/gpu.py --device cuda --out-dir "$OUT" --time-limit 480

Estimated on an H200 with the defaults, from the stock speeds measured there before (FIELD-NOTES): about
4 minutes (15B ~1.5 min, of which the fp32 stock ways on 64 sequences ~55 s; 3B and 650M ~25 s each; the
ladder ~20 s; the OOM check and the fit ~10 s each; start-up ~20 s). ``--time-limit`` (default 480 s) is
checked before every stage and between the batches of a stock run; the JSON is rewritten after every stage.

CPU smoke runs (< 1 minute):

    python bench/gpu.py --device cpu --models tiny-32,tiny-64 --n-seqs 8 --fit-residues 20000 --fit-dims 64,128
    python bench/gpu.py --device cpu --models 8M --n-seqs 8 --skip-fit
"""
from __future__ import annotations

import argparse
import copy
import gc
import json
import logging
import os
import re
import sys
import tempfile
import time
import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

SCHEMA = "revdistill-bench-gpu/1"
STOCK = ("authors", "extract", "bf16")
#: Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by a lower-case fragment of the device name.
PEAK_BF16_TFLOPS = (("h100 pcie", 756.0), ("h100 nvl", 835.0), ("h200", 989.0), ("h100", 989.0),
                    ("h800", 989.0), ("b200", 2250.0), ("a100", 312.0), ("a800", 312.0), ("l40s", 362.0),
                    ("l4", 121.0), ("a10", 125.0))


def ensure_fair_esm(wheel: str | None) -> str:
    """Import fair-esm, else unpack its wheel (``--esm-wheel`` or ``wheels/fair_esm-*.whl``) and use that.

    Checks ``esm.model.esm2``: EvolutionaryScale's ``esm`` package (ESM3) also installs a module ``esm``.
    """
    try:
        from esm.model.esm2 import ESM2  # noqa: F401
        return "installed"
    except ImportError:
        for name in [name for name in sys.modules if name == "esm" or name.startswith("esm.")]:
            del sys.modules[name]
    candidates = [Path(wheel)] if wheel else sorted(ROOT.glob("wheels/fair_esm-*.whl"))
    if not candidates or not candidates[-1].is_file():
        sys.exit("fair-esm is not installed and no wheel was found: run `pip download fair-esm==2.0.0 --no-deps "
                 "-d wheels/` in the repository root (where PyPI is reachable) or pass --esm-wheel")
    target = Path(tempfile.mkdtemp(prefix="fair-esm-"))
    with zipfile.ZipFile(candidates[-1]) as archive:  # esm.model is a namespace package: zipimport can't
        archive.extractall(target)
    sys.path.insert(0, str(target))
    from esm.model.esm2 import ESM2  # noqa: F401, F811
    return f"unpacked {candidates[-1].name}"


def device_info(device: torch.device) -> dict:
    info = {"type": device.type, "torch": torch.__version__, "cuda": torch.version.cuda, "peak_bf16_tflops": None}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(name=props.name, memory_gb=round(props.total_memory / 1e9, 1))
        lowered = props.name.lower()
        info["peak_bf16_tflops"] = next((peak for key, peak in PEAK_BF16_TFLOPS if key in lowered), None)
    else:
        info.update(name=f"CPU ({os.cpu_count()} cores, {torch.get_num_threads()} threads)")
    return info


class Report:
    """The run's JSON, rewritten atomically after every stage (a killed run still leaves its results)."""

    def __init__(self, path: Path, header: dict) -> None:
        self.path, self.start = path, time.perf_counter()
        self.data = {"schema": SCHEMA, **header, "rows": [], "agreement": [], "ladder": None, "oom_fallback": None,
                     "fit": None, "skipped": [], "errors": [], "complete": False}

    def save(self) -> None:
        self.data["elapsed_s"] = round(time.perf_counter() - self.start, 2)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        draft = self.path.with_name(self.path.name + ".tmp")
        draft.write_text(json.dumps(self.data, indent=1))
        os.replace(draft, self.path)


# ---------------------------------------------------------------------------------------------- measuring
def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def make_row(alias, method, dtype, records, seconds, device, peak, partial=False, **extra) -> dict:
    residues = sum(len(sequence) for _, sequence in records)
    work = bench_embed.flops(records, alias) if records else 0.0
    tflops = work / seconds / 1e12 if seconds > 0 else None
    return {"model": alias, "method": method, "dtype": dtype, "n_seqs": len(records), "residues": residues,
            "seconds": seconds, "residues_per_s": residues / seconds if seconds > 0 else None,
            "tflops": tflops, "share_of_peak": tflops / peak if peak and tflops else None,
            "peak_memory_gb": round(bench_embed.peak_memory_gb(device), 3), "partial": partial, **extra}


def shortest(records, count: int) -> list:
    return sorted(records, key=lambda record: len(record[1]))[:count]


def time_stock(method, model, alphabet, records, device, args, deadline, keep=()):
    """One stock way over ``records``: (seconds, records embedded, per-residue values of ``keep``).

    Batches run in a seeded order, so a run cut by the deadline measures a fair sample of lengths.
    """
    batches = bench_embed.stock_batches(method, records, args.authors_batch_size)
    if method != "authors":
        batches = [batches[i] for i in np.random.default_rng(args.seed).permutation(len(batches))]
    bench_embed.stock_run(model, alphabet, shortest(records, 2), [[0, 1]], device)  # warm-up
    bench_embed.sync(device)
    start = time.perf_counter()
    _, per_residue, done = bench_embed.stock_run(model, alphabet, records, batches, device, keep=keep,
                                                 deadline=deadline)
    bench_embed.sync(device)
    return time.perf_counter() - start, sorted(done), per_residue


def cosine_rows(got: np.ndarray, ref: np.ndarray) -> np.ndarray:
    return np.sum(got * ref, axis=1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(ref, axis=1))


def agreement(got: dict, ref: dict) -> dict:
    """Per-residue cosine and pooled relative error of ``got`` against ``ref`` ({index: (length, dim)})."""
    cosines = np.concatenate([cosine_rows(got[i].astype(np.float64), ref[i].astype(np.float64)) for i in ref])
    pooled = [np.linalg.norm(got[i].mean(0) - ref[i].mean(0)) / np.linalg.norm(ref[i].mean(0)) for i in ref]
    errors = max(float(np.abs(got[i] - ref[i]).max() / np.abs(ref[i]).max()) for i in ref)
    return {"cosine_mean": float(cosines.mean()), "cosine_min": float(cosines.min()),
            "pooled_rel_error_max": float(max(pooled)), "max_rel_error": errors}


def ours_budget(args, spec, device: torch.device) -> int:
    """Tokens per batch of ours: 65536 real tokens on CUDA (32768 for 3B/15B); 4096 on CPUs."""
    if args.token_budget:
        return args.token_budget
    if device.type != "cuda":
        return 4096
    return 32768 if spec.dim >= 2560 else 65536


def ours_engine(models, device, args, dtype, budget):
    return LadderEmbedder(models, device=device, dtype=dtype, token_budget=budget, attention=args.attention,
                          progress=False)


def ours_per_residue(engine, records) -> dict:
    result = engine.run(records, per_residue=True, moments=False)
    name = next(iter(result.per_residue))
    return {i: result.per_residue[name][record_id] for i, (record_id, _) in enumerate(records)}


def bench_size(alias, records, args, device, report, deadline) -> None:
    """Stock ways, ours and the agreement for one size; rows appended to the report."""
    peak, spec = report.data["device"]["peak_bf16_tflops"], get_spec(alias)
    subset = records[:args.stock_n_seqs_large] if spec.dim >= 2560 else records
    check = records[:args.agreement_n_seqs]
    keep = set(range(len(check)))
    budget = ours_budget(args, spec, device)
    rows, found = [], {"stock_bf16": None, "ours_fp32_packed": None}
    stock = not args.skip_stock
    model, alphabet = bench_embed.build_model(alias, device, torch.float32 if stock else torch.bfloat16)

    def time_ours(engine) -> float:
        engine.run(shortest(records, 4))  # warm-up (kernel choice, cuBLAS handles)
        free_memory(device)
        bench_embed.sync(device)
        start = time.perf_counter()
        engine.run(records, moments=True)
        bench_embed.sync(device)
        return time.perf_counter() - start

    def run_ours(model, reference) -> None:  # the model as it is now (fp32, or rounded to bf16 below)
        engine = ours_engine({alias: model}, device, args, args.dtype, budget)
        seconds = time_ours(engine)
        kernel = packed_attention_kernel(device, engine.dtype, spec.dim // spec.heads) \
            if engine.attention == "packed" else "padded SDPA"
        found["ours"] = make_row(alias, "ours", args.dtype, records, seconds, device, peak,
                                 token_budget=budget, attention=engine.attention, kernel=kernel)
        found["agreement"] = agreement(ours_per_residue(engine, check), reference)
        if engine.attention == "packed":  # the same engine on padded batches: what packing buys here
            padded = LadderEmbedder({alias: model}, device=device, dtype=args.dtype, token_budget=budget,
                                    attention="padded", progress=False)
            rows.append(make_row(alias, "ours_padded", args.dtype, records, time_ours(padded), device, peak,
                                 token_budget=budget, attention="padded", kernel="padded SDPA"))

    if stock:
        reference = None
        for method in [m for m in ("authors", "extract") if m in args.stock_methods]:
            free_memory(device)
            seconds, done, kept = time_stock(method, model, alphabet, subset, device, args, deadline, keep)
            rows.append(make_row(alias, method, "fp32", [subset[i] for i in done], seconds, device, peak,
                                 partial=len(done) < len(subset)))
            reference = kept if len(kept) == len(check) else reference
        if reference is None:  # no fp32 stock way ran to the end: the reference on its own
            reference = bench_embed.stock_run(model, alphabet, check, bench_embed.stock_batches("extract", check),
                                              device, keep=keep)[1]
        found["ours_fp32_packed"] = agreement(ours_per_residue(
            ours_engine({alias: model}, device, args, "fp32", budget), check), reference)
        if args.dtype == "fp32":  # before the weights are rounded to bf16 below
            run_ours(model, reference)
        model = model.to(torch.bfloat16)  # in place, rotary tables included: fair-esm's bf16 way
        bench_embed.reset_rotary(model)
        if "bf16" in args.stock_methods:
            free_memory(device)
            seconds, done, kept = time_stock("bf16", model, alphabet, records, device, args, deadline, keep)
            rows.append(make_row(alias, "bf16", "bf16", [records[i] for i in done], seconds, device, peak,
                                 partial=len(done) < len(records)))
            found["stock_bf16"] = agreement(kept, reference) if len(kept) == len(check) else None
    else:  # the fp32 reference from the same (bf16) weights, upcast exactly
        upcast = copy.deepcopy(model).float()
        reference = bench_embed.stock_run(upcast, alphabet, check, bench_embed.stock_batches("extract", check),
                                          device, keep=keep)[1]
        del upcast
    if "ours" not in found:
        run_ours(model, reference)
    ours = found["ours"]
    ours["speedup_vs"] = {row["method"]: ours["residues_per_s"] / row["residues_per_s"] for row in rows
                          if row["residues_per_s"]}
    report.data["rows"].extend(rows + [ours])
    report.data["agreement"].append({"model": alias, "n_seqs": len(check), "ours_dtype": args.dtype,
                                     "ours": found["agreement"], "stock_bf16": found["stock_bf16"],
                                     "ours_fp32_packed": found["ours_fp32_packed"]})
    del model
    free_memory(device)


def bench_ladder(aliases, records, args, device, report) -> None:
    """All sizes over the same packed batches in one pass, against the largest alone (same run)."""
    largest = get_spec(aliases[-1])
    budget = ours_budget(args, largest, device)
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    models = {alias: bench_embed.build_model(alias, device, dtype)[0] for alias in aliases}
    engine = ours_engine(models, device, args, args.dtype, budget)
    engine.run(shortest(records, 4))
    bench_embed.sync(device)
    start = time.perf_counter()
    result = engine.run(records, moments=True)
    bench_embed.sync(device)
    seconds = time.perf_counter() - start
    alone = {row["model"]: row["seconds"] for row in report.data["rows"] if row["method"] == "ours"}
    report.data["ladder"] = {
        "models": list(aliases), "seconds": seconds, "token_budget": budget,
        "residues_per_s": sum(len(s) for _, s in records) / seconds, "moments_features": result.moments.n_features,
        "largest_alone_seconds": alone.get(aliases[-1]),
        "ratio_vs_largest": seconds / alone[aliases[-1]] if aliases[-1] in alone else None,
        "sum_of_sizes_alone_seconds": sum(alone[a] for a in aliases) if all(a in alone for a in aliases) else None,
        "peak_memory_gb": round(bench_embed.peak_memory_gb(device), 3), "goal_ratio": 1.3}
    del models, engine, result
    free_memory(device)


class _CountHalvings(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "halving token_budget" in record.getMessage()


def bench_oom(alias, records, args, device, report) -> None:
    """A real CUDA OOM: fill the card but for twice a normal batch's need, then ask for one huge batch."""
    model = bench_embed.build_model(alias, device, torch.bfloat16)[0]
    normal = ours_engine({alias: model}, device, args, "bf16", 16384)
    free_memory(device)
    base = torch.cuda.memory_allocated(device)
    expected = normal.run(records, moments=False).pooled[alias]
    need = torch.cuda.max_memory_allocated(device) - base
    free_memory(device)
    free_bytes = torch.cuda.mem_get_info(device)[0]
    ballast = torch.empty(max(0, free_bytes - 2 * need - (256 << 20)), dtype=torch.uint8, device=device)
    total_tokens = sum(len(s) + 2 for _, s in records)
    engine = ours_engine({alias: model}, device, args, "bf16", total_tokens)
    counter = _CountHalvings()
    logging.getLogger("revdistill.esm.embed").addHandler(counter)
    try:
        got = engine.run(records, moments=False).pooled[alias]
    finally:
        logging.getLogger("revdistill.esm.embed").removeHandler(counter)
        del ballast
    report.data["oom_fallback"] = {
        "model": alias, "start_budget": total_tokens, "final_budget": engine.token_budget, "halvings": counter.count,
        "headroom_gb": round((2 * need + (256 << 20)) / 1e9, 3),
        "pooled_rel_error_vs_normal_run": float(np.abs(got - expected).max() / np.abs(expected).max())}
    del model, engine, normal
    free_memory(device)


def bench_fit(args, device, report) -> None:
    """Whole-ladder fit from moments on the device (moments and eigh in float64 there)."""
    dims = [int(d) for d in args.fit_dims.split(",")]
    warm = bench_fit_module.synthetic_levels(2000, [16, 32], device=str(device), generate_on_device=True)
    bench_fit_module.fit_from_moments(warm, str(device))  # library initialisation (cuSOLVER ...)
    levels = bench_fit_module.synthetic_levels(args.fit_residues, dims, seed=args.seed, device=str(device),
                                               generate_on_device=device.type == "cuda")
    seconds, moments_seconds, ladder = bench_fit_module.fit_from_moments(levels, str(device))
    report.data["fit"] = {"n_residues": args.fit_residues, "dims": dims, "seconds": seconds,
                          "moments_seconds": moments_seconds, "goal_seconds": 3.0,
                          "r2": [row["r2"] for row in ladder.diagnostics()]}
    del levels
    free_memory(device)


# ---------------------------------------------------------------------------------------------- the run
def print_tables(data: dict) -> None:
    peak = data["device"]["peak_bf16_tflops"]
    print(f"\n{data['device']['name']} (peak bf16 dense {peak or '?'} TFLOP/s), torch {data['device']['torch']}; "
          f"{data['sequences']['n']} sequences, {data['sequences']['residues']} residues")
    print("\n| model | method | dtype | seqs | residues/s | TFLOP/s | share of peak | peak GB | ours vs this |")
    print("|---|---|---|---|---|---|---|---|---|")
    ours = {row["model"]: row for row in data["rows"] if row["method"] == "ours"}
    for row in data["rows"]:
        ratio = ours.get(row["model"], {}).get("speedup_vs", {}).get(row["method"])
        share = f"{row['share_of_peak']:.1%}" if row["share_of_peak"] else "-"
        print(f"| {row['model']} | {row['method']}{' (partial)' if row['partial'] else ''} | {row['dtype']} | "
              f"{row['n_seqs']} | {row['residues_per_s'] or 0:,.0f} | {row['tflops'] or 0:.2f} | {share} | "
              f"{row['peak_memory_gb']:.2f} | {f'{ratio:.2f}x' if ratio else '-'} |")
    if data["agreement"]:
        print("\n| model | ours cosine mean / min | ours pooled rel. err | stock bf16 cosine min | "
              "ours fp32 (packed) max rel. err |")
        print("|---|---|---|---|---|")
        for entry in data["agreement"]:
            bf16, fp32 = entry["stock_bf16"], entry["ours_fp32_packed"]
            bf16_text = f"{bf16['cosine_min']:.6f}" if bf16 else "-"
            fp32_text = f"{fp32['max_rel_error']:.2e}" if fp32 else "-"
            print(f"| {entry['model']} | {entry['ours']['cosine_mean']:.6f} / {entry['ours']['cosine_min']:.6f} | "
                  f"{entry['ours']['pooled_rel_error_max']:.2e} | {bf16_text} | {fp32_text} |")
    for key in ("ladder", "oom_fallback", "fit"):
        if data[key]:
            print(f"\n{key}: {json.dumps(data[key])}")
    for skipped in data["skipped"] + data["errors"]:
        print(f"not done: {skipped}")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--models", default="8M,35M,150M,650M,3B,15B", help="sizes, small to large (tiny-* too)")
    parser.add_argument("--n-seqs", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=480.0, help="seconds; later stages are skipped")
    parser.add_argument("--ladder-reserve", type=float, default=45.0,
                        help="seconds of the time limit the stock runs leave for the ladder stage")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default=None, help="ours (default bf16 on CUDA)")
    parser.add_argument("--attention", choices=("auto", "packed", "padded"), default="auto")
    parser.add_argument("--token-budget", type=int, default=None,
                        help="ours (default on CUDA 65536 real tokens, 32768 for 3B/15B; 4096 on CPUs)")
    parser.add_argument("--authors-batch-size", type=int, default=8)
    parser.add_argument("--stock-n-seqs-large", type=int, default=64, help="fp32 stock ways for 3B/15B")
    parser.add_argument("--stock-methods", default=None,
                        help="subset of authors,extract,bf16 (default: all on CUDA; authors,extract on CPUs, "
                             "which run bf16 ~30x slower than fp32)")
    parser.add_argument("--agreement-n-seqs", type=int, default=None, help="default 16 on CUDA, 4 on CPUs")
    parser.add_argument("--fit-residues", type=int, default=1_000_000)
    parser.add_argument("--fit-dims", default="2560,5120")
    for stage in ("stock", "ladder", "oom", "fit"):
        parser.add_argument(f"--skip-{stage}", action="store_true")
    parser.add_argument("--out-dir", default=str(ROOT / "bench" / "results"))
    parser.add_argument("--esm-wheel", default=None, help="fair-esm wheel to use when fair-esm is not installed")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    args.agreement_n_seqs = args.agreement_n_seqs or (16 if cuda else 4)
    args.stock_methods = [m.strip() for m in (args.stock_methods or ",".join(STOCK if cuda else STOCK[:2])).split(",")]
    if set(args.stock_methods) - set(STOCK):
        parser.error(f"--stock-methods={args.stock_methods} must be a subset of {','.join(STOCK)}")
    if args.n_seqs < 4:
        parser.error(f"--n-seqs={args.n_seqs} must be at least 4")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    how_esm = ensure_fair_esm(args.esm_wheel)
    global bench_embed, bench_fit_module, LadderEmbedder, get_spec, packed_attention_kernel
    import embed as bench_embed  # bench/embed.py
    import fit as bench_fit_module  # bench/fit.py
    from revdistill.esm.embed import LadderEmbedder
    from revdistill.esm.forward import packed_attention_kernel
    from revdistill.esm.models.registry import get_spec

    device = torch.device(args.device)
    aliases = [get_spec(name).alias for name in args.models.split(",")]
    records = bench_embed.synthetic_records(args.n_seqs, seed=args.seed)
    lengths = [len(sequence) for _, sequence in records]
    info = device_info(device)
    slug = re.sub(r"[^a-z0-9]+", "-", info["name"].lower()).strip("-")
    stamp = datetime.now(timezone.utc)
    report = Report(Path(args.out_dir) / f"{slug}-{stamp:%Y%m%d-%H%M%S}.json", {
        "device": info, "date": stamp.isoformat(timespec="seconds"), "fair_esm": how_esm, "args": vars(args),
        "sequences": {"n": len(records), "residues": sum(lengths), "median_length": float(np.median(lengths)),
                      "min_length": min(lengths), "max_length": max(lengths), "seed": args.seed}})
    deadline = report.start + args.time_limit
    ladder = len(aliases) > 1 and not args.skip_ladder
    stock_deadline = deadline - (args.ladder_reserve if ladder else 0.0)  # stock runs leave the ladder its time
    stages = []  # cheap stages first, so a time limit only cuts the end
    if not args.skip_fit:
        stages.append(("fit", lambda: bench_fit(args, device, report)))
    oom_model = next((a for a in reversed(aliases) if get_spec(a).dim <= 1280), aliases[0])
    if device.type == "cuda" and not args.skip_oom:
        stages.append(("oom fallback", lambda: bench_oom(oom_model, records, args, device, report)))
    elif not args.skip_oom:
        report.data["skipped"].append("oom fallback: needs a CUDA device")
    stages += [(f"size {alias}", lambda alias=alias: bench_size(alias, records, args, device, report, stock_deadline))
               for alias in aliases]
    if ladder:
        stages.append(("ladder", lambda: bench_ladder(aliases, records, args, device, report)))
    for name, stage in stages:
        if time.perf_counter() > deadline:
            report.data["skipped"].append(f"{name}: time limit {args.time_limit:.0f} s reached")
        else:
            print(f"[{time.perf_counter() - report.start:7.1f} s] {name}", flush=True)
            try:
                stage()
            except Exception as error:  # noqa: BLE001 - one failed stage must not lose the others
                report.data["errors"].append(f"{name}: {type(error).__name__}: {error}")
                free_memory(device)
        report.save()
    report.data["complete"] = not report.data["skipped"] and not report.data["errors"]
    report.save()
    print_tables(report.data)
    print(f"\nwrote {report.path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
