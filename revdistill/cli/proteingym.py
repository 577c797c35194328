"""``revdistill proteingym``: the supervised ProteinGym benchmark from the command line.

Examples
--------
``revdistill proteingym PIN1_HUMAN_Tsuboyama_2023_1I6C --models 8M,35M,150M --out results.csv``
``revdistill proteingym my_assay.csv --models tiny-32,tiny-48,tiny-64 --out results.csv`` (offline)
``revdistill proteingym --all --max-variants 2000 --models 8M,35M,150M --fit-on both --out results.csv``
``revdistill proteingym --download`` (fetch the v1.3 files into the cache, resumable)

Every run uses a reference ladder fitted once on a declared corpus (default: ProteinGym's 187 wild
types) and reused by id; fitting on the assays' own variants is the explicit ``--corpus assays``.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from revdistill.cli.common import check_output, split_list
from revdistill.cli.options import (add_embedding_arguments, add_ladder_arguments, embed_options, reference_ladders,
                                    write_csv)

logger = logging.getLogger(__name__)

_DESCRIPTION = """\
Run a ridge probe on mean-pooled embeddings (ESM-2 as is, reverse-distilled, naive concat+PCA, nested
prefixes, the largest model truncated) under ProteinGym's supervised protocol (singles, 5-fold CV for
the random/modulo/contiguous schemes, Spearman over pooled out-of-fold predictions) and write a tidy
table with one row per assay, scheme, representation, model and dim; every row carries the ids of the
reference ladder, the naive baseline and the protocol. Data: --data-dir, else $REVDISTILL_PROTEINGYM_DIR,
else the cache (see --download). Numbers are ours (linear probe), not comparable to rows of the
ProteinGym leaderboard."""


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
    parser.add_argument("--list", action="store_true", help="list the 217 substitution assays and exit")
    parser.add_argument("--search", default=None, metavar="TEXT", help="with --list: only assays matching TEXT")
    parser.add_argument("--models", default="8M,35M,150M",
                        help="ladder, small to large, comma-separated (default 8M,35M,150M; tiny-32,tiny-48,tiny-64 "
                             "run offline)")
    parser.add_argument("--out", type=Path, help="tidy CSV to write (required unless --download/--list only)")
    parser.add_argument("--data-dir", type=Path, default=None, help="ProteinGym folder (reference file, assays/zips)")
    parser.add_argument("--store", type=Path, default=None,
                        help="embedding store (HDF5), reused across runs; default in the cache, one per model list")
    add_ladder_arguments(parser)
    protocol = parser.add_argument_group("protocol")
    protocol.add_argument("--schemes", default="fold_random_5,fold_modulo_5,fold_contiguous_5",
                          help="CV schemes, comma-separated")
    protocol.add_argument("--representations", default="esm2,rd,naive,nested,truncated",
                          help="comma-separated subset of esm2,rd,naive,nested,truncated")
    protocol.add_argument("--n-between", type=int, default=2, help="nested prefix dims between level boundaries")
    protocol.add_argument("--inner-folds", type=int, default=5, help="inner CV folds choosing the ridge penalty")
    protocol.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap replicates of the intervals")
    protocol.add_argument("--all-variants", action="store_true",
                          help="keep multiple mutants too (ProteinGym's supervised protocol uses singles only)")
    add_embedding_arguments(parser)
    parser.add_argument("--download", action="store_true", help="download the ProteinGym v1.3 files first (resumable)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``revdistill proteingym``; returns the exit status."""
    from revdistill import proteingym as pg

    if args.list:
        return _list(args)
    if args.all and args.assays:
        raise ValueError("give assay ids/CSVs or --all, not both")
    if args.max_variants is not None and not args.all:
        raise ValueError("--max-variants selects assays for --all; use it with --all")
    if args.out is None and not args.download:
        raise ValueError("--out RESULTS.csv is required")
    protocol = _protocol(args)
    if args.download:
        folder = pg.download_proteingym(args.data_dir)
        print(f"ProteinGym v1.3 files in {folder}", file=sys.stderr)
        args.data_dir = args.data_dir or folder
        if not args.assays and not args.all:
            return 0
    assays = list(args.assays)
    if args.all:
        assays = pg.list_assays(pg.load_reference(args.data_dir), max_variants=args.max_variants)
        if not assays:
            raise ValueError(f"no assay has at most --max-variants={args.max_variants} single mutants")
    if not assays:
        raise ValueError("no assays: give ProteinGym ids or CSV paths, or --all")
    return _run(args, assays, protocol)


def _protocol(args: argparse.Namespace):
    from revdistill.experiment.protocol import Protocol, REPRESENTATIONS
    from revdistill.proteingym.folds import SCHEMES

    return Protocol(singles_only=not args.all_variants,
                    schemes=tuple(split_list(args.schemes, "--schemes", SCHEMES)),
                    representations=tuple(split_list(args.representations, "--representations",
                                                     tuple(REPRESENTATIONS))),
                    n_between=args.n_between, inner_folds=args.inner_folds, n_bootstrap=args.n_bootstrap)


def _run(args: argparse.Namespace, assays: list[str], protocol) -> int:
    from revdistill.esm.runner import LocalEmbedder, resolve_models
    from revdistill.esm.store import EmbeddingStore
    from revdistill.experiment.paired import format_paired, read_summary, write_summary
    from revdistill.experiment.pipeline import default_store_path, run_experiment
    from revdistill.experiment.tasks import read_task
    from revdistill.proteingym import load_reference
    models = resolve_models(args.models)
    options = embed_options(args)
    store_path = args.store or default_store_path(None, models, options.numerics())
    inputs = [Path(a) for a in assays if Path(a).exists()]
    check_output(args.out, inputs=inputs + [store_path, args.ladder], kind="csv", suffixes=(".csv",))
    if store_path.exists():
        check_output(store_path, inputs=inputs, kind="store", what="--store")
    reference = None if all(a.endswith(".csv") for a in assays) else load_reference(args.data_dir)
    tasks = [read_task(assay, protocol, data_dir=args.data_dir, reference=reference) for assay in assays]
    embedder = LocalEmbedder(options)
    ladders = reference_ladders(args, models, embedder, tasks)
    for ladder in ladders:
        print(f"ladder: {ladder.describe()}", file=sys.stderr)
    result = run_experiment(tasks, models, ladders, protocol, store=EmbeddingStore(store_path), embedder=embedder,
                            progress=_progress_printer() if args.progress else None)
    table = result.table
    write_csv(table, args.out)
    variants = result.variants
    summary_csv = write_summary(args.out, table, variants, n_bootstrap=protocol.n_bootstrap, ci=protocol.ci,
                                seed=protocol.bootstrap_seed)
    print(format_paired(read_summary(summary_csv)))
    summary = result.summary()
    columns = [c for c in ("fit_on", "representation", "model", "dim", "aggregation", "value", "ci_low", "ci_high",
                           "n_assays", "n_missing") if c in summary.columns]
    print(summary[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    notes = table.loc[table["note"].fillna("") != "", ["assay", "representation", "model", "dim", "note"]]
    for row in notes.drop_duplicates().itertuples(index=False):
        print(f"note: {row.assay} {row.representation} {row.model} dim {row.dim}: {row.note}", file=sys.stderr)
    print(result.caption(), file=sys.stderr)
    print(f"wrote {len(table)} rows for {table['assay'].nunique()} assay(s) to {args.out} (store: {store_path}); "
          f"paired differences to {summary_csv}", file=sys.stderr)
    return 0


def _progress_printer():
    last = [-1]

    def report(fraction: float, message: str) -> None:
        percent = int(fraction * 100)
        if percent != last[0]:
            last[0] = percent
            print(f"{percent:3d}% {message}", file=sys.stderr)

    return report


def _list(args: argparse.Namespace) -> int:
    from revdistill.proteingym.catalog import assay_catalog, format_catalog

    print(format_catalog(assay_catalog(args.data_dir), query=args.search))
    return 0
