"""``revdistill proteingym``: the supervised ProteinGym benchmark from the command line.

Examples
--------
``revdistill proteingym PIN1_HUMAN_Tsuboyama_2023_1I6C --models 8M,35M,150M --out results.csv``
``revdistill proteingym my_assay.csv --models tiny-32,tiny-48,tiny-64 --out results.csv`` (offline)
``revdistill proteingym --all --max-variants 2000 --models 8M,35M,150M --out results.csv``
``revdistill proteingym --download`` (fetch the v1.3 files into the cache, resumable)
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

_DESCRIPTION = """\
Run a ridge probe on mean-pooled embeddings (ESM-2 as is, reverse-distilled, naive concat+PCA, nested
prefixes) under ProteinGym's supervised protocol (singles, 5-fold CV for the random/modulo/contiguous
schemes, Spearman over pooled out-of-fold predictions) and write a tidy table:
assay, scheme, representation, model, dim, spearman, mse, n_variants (+ fold_source, alpha, uniprot_id,
selection_type). Data: --data-dir, else $REVDISTILL_PROTEINGYM_DIR, else the cache (see --download).
Numbers are ours (linear probe), not comparable to rows of the ProteinGym leaderboard."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``proteingym`` subcommand."""
    parser = subparsers.add_parser(
        "proteingym", help="supervised ProteinGym benchmark (probe on pooled embeddings)",
        description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("assays", nargs="*", metavar="ASSAY_ID_OR_CSV", help="ProteinGym DMS ids or assay CSV paths")
    parser.add_argument("--all", action="store_true", help="every assay of the reference file (see --max-variants)")
    parser.add_argument("--max-variants", type=int, default=None, metavar="N",
                        help="with --all: only assays with at most N single mutants (a documented subset)")
    parser.add_argument("--models", default="8M,35M,150M",
                        help="ladder, small to large, comma-separated (default 8M,35M,150M; tiny-32,tiny-48,tiny-64 run offline)")
    parser.add_argument("--out", type=Path, help="tidy CSV to write (required unless only --download)")
    parser.add_argument("--data-dir", type=Path, default=None, help="ProteinGym folder (reference file, assays/zips)")
    parser.add_argument("--store", type=Path, default=None,
                        help="embedding store (HDF5), reused across runs; default in the cache, one per model list")
    parser.add_argument("--ladder", type=Path, default=None, help="fitted ladder (revdistill fit); default: fitted from the store")
    parser.add_argument("--schemes", default="fold_random_5,fold_modulo_5,fold_contiguous_5", help="CV schemes, comma-separated")
    parser.add_argument("--representations", default="esm2,rd,naive,nested", help="comma-separated subset of esm2,rd,naive,nested")
    parser.add_argument("--n-between", type=int, default=2, help="nested prefix dims between level boundaries (default 2)")
    parser.add_argument("--device", default="cpu", help="torch device for embedding (cpu, cuda, cuda:1)")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"), help="embedding precision")
    parser.add_argument("--long-sequences", default="window", choices=("window", "truncate", "error"),
                        help="sequences over 1022 residues: overlapping windows (default), truncate, or error")
    parser.add_argument("--weights-dir", type=Path, default=None, help="folder with ESM-2 checkpoints")
    parser.add_argument("--download", action="store_true", help="download the ProteinGym v1.3 files first (resumable)")
    parser.add_argument("--progress", action="store_true", help="show embedding progress bars")
    parser.set_defaults(func=run)


def _split(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def default_store(models: list[str]) -> Path:
    """Cache path of the embedding store for a model list."""
    from revdistill.proteingym import default_cache_dir

    return default_cache_dir().parent / "embeddings" / f"proteingym_{'_'.join(models)}.h5"


def run(args: argparse.Namespace) -> int:
    """Execute ``revdistill proteingym``; returns the exit status."""
    from revdistill import proteingym as pg

    if args.download:
        folder = pg.download_proteingym(args.data_dir)
        print(f"ProteinGym v1.3 files in {folder}")
        if args.data_dir is None:
            args.data_dir = folder
        if not args.assays and not args.all:
            return 0
    if args.all and args.assays:
        raise ValueError("give assay ids/CSVs or --all, not both")
    if args.max_variants is not None and not args.all:
        raise ValueError("--max-variants selects assays for --all; use it with --all")
    if args.out is None:
        raise ValueError("--out RESULTS.csv is required")
    assays = list(args.assays)
    if args.all:
        assays = pg.list_assays(pg.load_reference(args.data_dir), max_variants=args.max_variants)
        if not assays:
            raise ValueError(f"no assay has at most --max-variants={args.max_variants} single mutants")
    if not assays:
        raise ValueError("no assays: give ProteinGym ids or CSV paths, or --all")
    models = _split(args.models)
    return _run_benchmark(args, assays, models)


def _run_benchmark(args: argparse.Namespace, assays: list[str], models: list[str]) -> int:
    from revdistill.experiment.features import run_benchmark
    from revdistill.experiment.aggregate import aggregate

    store = args.store or default_store(models)  # the store creates its folder when it first writes
    results = run_benchmark(
        assays, models, store=store, data_dir=args.data_dir, ladder=args.ladder, schemes=_split(args.schemes),
        representations=_split(args.representations), n_between=args.n_between, device=args.device,
        dtype=args.dtype, weights_dir=args.weights_dir, long_sequences=args.long_sequences, progress=args.progress,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results.to_csv(args.out, index=False)
    summary = aggregate(results, how=("proteingym", "mean"), n_bootstrap=1000)
    shown = summary[["representation", "model", "dim", "aggregation", "value", "ci_low", "ci_high", "n_assays"]]
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"wrote {len(results)} rows for {results['assay'].nunique()} assay(s) to {args.out} (store: {store})",
          file=sys.stderr)
    return 0
