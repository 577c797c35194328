"""``revdistill proteingym``: the supervised ProteinGym benchmark from the command line.

Examples
--------
``revdistill proteingym PIN1_HUMAN_Tsuboyama_2023_1I6C --models 8M,35M,150M --out results.csv``
``revdistill proteingym my_assay.csv --models tiny-32,tiny-48,tiny-64 --out results.csv`` (offline)
``revdistill proteingym --all --max-variants 2000 --models 8M,35M,150M --fit-on both --out results.csv``
``revdistill proteingym --download`` (fetch the v1.3 files into the cache, resumable)

``revdistill proteingym --all --models 8M,35M,150M,650M,3B,15B --plan --device cuda`` (size of the job, no work)
``torchrun --nproc-per-node 8 -m revdistill proteingym --all --models 8M,...,15B --device cuda --out all.csv``

Every run uses a reference ladder fitted once on a declared corpus (default: ProteinGym's 187 wild
types) and reused by id; fitting on the assays' own variants is the explicit ``--corpus assays``.
The run is a job (:mod:`revdistill.experiment.job`): each assay is committed to ``<out stem>.results/``
as soon as it is done, a rerun skips finished assays, and under torchrun the ranks share the assays.
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

#: Records per store part in a job: more than any assay has, so each assay's embeddings commit at once.
ONE_PART = 1 << 30

_DESCRIPTION = """\
Run a ridge probe on mean-pooled embeddings (ESM-2 as is, reverse-distilled, naive concat+PCA, nested
prefixes, the largest model truncated) under ProteinGym's supervised protocol (singles, 5-fold CV for
the random/modulo/contiguous schemes, Spearman over pooled out-of-fold predictions) and write a tidy
table with one row per assay, scheme, representation, model and dim; every row carries the ids of the
reference ladder, the naive baseline and the protocol. Data: --data-dir, else $REVDISTILL_PROTEINGYM_DIR,
else the cache (see --download). Numbers are ours (linear probe), not comparable to rows of the
ProteinGym leaderboard.

The run is a resumable job: each finished assay is committed to <out stem>.results/ beside --out, and
rerunning the same command skips them (a crash loses at most the assays in flight); other settings
into the same folder are refused. Under `torchrun --nproc-per-node N -m revdistill proteingym ...`
the ranks share the assays (largest first), each with its own device and store; rank 0 writes --out.
The table has the same bytes however the work was split or resumed. --plan prints the job's size."""


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
    parser.add_argument("--plan", action="store_true",
                        help="print the job's size (assays, variants, residues, store size, device-hours per "
                             "model for --device) and exit without any work")
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
    if args.out is None and not args.download and not args.plan:
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
    if args.plan:
        return _plan(args, assays)
    return _run(args, assays, protocol)


def _plan(args: argparse.Namespace, assays: list[str]) -> int:
    from revdistill.esm.models.registry import parse_models
    from revdistill.experiment.plan import format_plan, plan_job

    plan = plan_job(assays, parse_models(args.models, "--models"), device=args.device,
                    singles_only=not args.all_variants, long_sequences=args.long_sequences, data_dir=args.data_dir)
    print(format_plan(plan))
    return 0


def _protocol(args: argparse.Namespace):
    from revdistill.experiment.protocol import Protocol, REPRESENTATIONS
    from revdistill.proteingym.folds import SCHEMES

    return Protocol(singles_only=not args.all_variants,
                    schemes=tuple(split_list(args.schemes, "--schemes", SCHEMES)),
                    representations=tuple(split_list(args.representations, "--representations",
                                                     tuple(REPRESENTATIONS))),
                    n_between=args.n_between, inner_folds=args.inner_folds, n_bootstrap=args.n_bootstrap)


def _run(args: argparse.Namespace, assays: list[str], protocol) -> int:
    """The job: every rank computes the assays it claims; rank 0 assembles and writes --out."""
    from dataclasses import replace

    from revdistill.io.files import sha256_of
    from revdistill.esm.distributed import join_process_group, leave_process_group, rank_world
    from revdistill.esm.models.registry import parse_models
    from revdistill.esm.runner import LocalEmbedder
    from revdistill.experiment.job import JobSpec, RankEmbedder, open_results, results_folder
    from revdistill.experiment.pipeline import default_store_path
    from revdistill.experiment.plan import variant_counts
    from revdistill.proteingym import load_reference
    from revdistill.proteingym.assays import assay_source

    models = parse_models(args.models, "--models")
    options = embed_options(args)
    store_path = args.store or default_store_path(None, models, options.numerics())
    inputs = [Path(a) for a in assays if Path(a).exists()]
    check_output(args.out, inputs=inputs + [store_path, args.ladder], kind="csv", suffixes=(".csv",))
    if store_path.exists():
        check_output(store_path, inputs=inputs, kind="store", what="--store")
    reference = None if all(a.endswith(".csv") for a in assays) else load_reference(args.data_dir)
    names = [assay_source(assay, data_dir=args.data_dir, reference=reference)[0] for assay in assays]
    counts = variant_counts(assays, protocol.singles_only, reference, args.data_dir)
    sizes = {name: float(n * length) for name, (n, length) in zip(names, counts)}
    spec = JobSpec(protocol_id=protocol.id, models=models, numerics=tuple(sorted(options.numerics().items())),
                   assays=tuple(names),
                   inputs=tuple((name, sha256_of(a)) for name, a in zip(names, assays) if Path(a).exists()))
    folder = open_results(results_folder(args.out), spec, ladders_known=False)
    device, initialised = join_process_group(options.device)
    try:
        rank, world_size = rank_world()
        # one store part per assay: an assay interrupted mid-way is embedded again whole, in the same batches
        options = replace(options, device=device, progress=options.progress and rank == 0, flush_every=ONE_PART)
        embedder = RankEmbedder(LocalEmbedder(options))
        source = dict(zip(names, assays))

        def load_task(name: str):
            from revdistill.experiment.tasks import read_task

            return read_task(source[name], protocol, data_dir=args.data_dir, reference=reference)

        tasks = [load_task(name) for name in names] if args.corpus == "assays" else []
        ladders = reference_ladders(args, models, embedder, tasks)
        del tasks
        spec = replace(spec, ladders=tuple((ladder.fit_on, ladder.ladder_id, ladder.naive_id) for ladder in ladders))
        open_results(folder, spec)
        if rank == 0:
            for ladder in ladders:
                print(f"ladder: {ladder.describe()}", file=sys.stderr)
        _compute(folder, spec, load_task, ladders, protocol, embedder, sizes, store_path, rank, world_size)
    finally:
        leave_process_group(initialised)
    if rank != 0:
        return 0
    return _write(args, folder, spec, protocol, ladders, store_path)


def _compute(folder, spec, load_task, ladders, protocol, embedder, sizes, store_path, rank, world_size) -> None:
    """This rank's share of the job; rank 0 then waits for every part and clears the claims."""
    import uuid

    from revdistill.esm.distributed import broadcast_from_first
    from revdistill.esm.store import EmbeddingStore
    from revdistill.experiment.job import finish_job, part_path, run_job, wait_for_parts

    done = sum(part_path(folder, name).is_file() for name in spec.assays)
    if rank == 0:
        print(f"job {spec.job_id}: {folder}: {done} of {len(spec.assays)} assay(s) already committed, "
              f"{len(spec.assays) - done} to run on {world_size} rank(s)", file=sys.stderr)
    run_id = broadcast_from_first(uuid.uuid4().hex)
    own = store_path if rank == 0 else store_path.with_name(f"{store_path.stem}.rank{rank}{store_path.suffix}")
    run_job(folder, spec, load_task=load_task, ladders=ladders, protocol=protocol, store=EmbeddingStore(own),
            embedder=embedder, sizes=sizes, rank=rank, run_id=run_id, on_done=_assay_printer())
    if rank == 0:
        wait_for_parts(folder, spec)
        finish_job(folder)


def _write(args, folder, spec, protocol, ladders, store_path) -> int:
    """Assemble --out from the committed parts (fixed order) and print the summary."""
    from revdistill.experiment.job import load_results
    from revdistill.experiment.deviations import method_notes
    from revdistill.experiment.paired import format_paired, read_summary, write_summary
    from revdistill.experiment.pipeline import caption, summarize

    table, variants = load_results(folder)
    write_csv(table, args.out)
    summary_csv = write_summary(args.out, table, variants, n_bootstrap=protocol.n_bootstrap, ci=protocol.ci,
                                seed=protocol.bootstrap_seed)
    print(format_paired(read_summary(summary_csv)))
    summary = summarize(table, variants, protocol)
    columns = [c for c in ("fit_on", "representation", "model", "dim", "aggregation", "value", "ci_low", "ci_high",
                           "n_assays", "n_missing") if c in summary.columns]
    print(summary[columns].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    notes = table.loc[table["note"].fillna("") != "", ["assay", "representation", "model", "dim", "note"]]
    for row in notes.drop_duplicates().itertuples(index=False):
        print(f"note: {row.assay} {row.representation} {row.model} dim {row.dim}: {row.note}", file=sys.stderr)
    schemes = [scheme for scheme in protocol.schemes if scheme in set(table["scheme"])]
    print(caption(list(spec.assays), spec.models, protocol, schemes, ladders), file=sys.stderr)
    provenances = [getattr(ladder.ladder, "provenance_", None) for ladder in ladders]
    print("; ".join(note.short for note in method_notes(table, provenances)), file=sys.stderr)
    print(f"wrote {len(table)} rows for {table['assay'].nunique()} assay(s) to {args.out} (results: {folder}; "
          f"store: {store_path}); paired differences to {summary_csv}", file=sys.stderr)
    return 0


def _assay_printer():
    """One stderr line per committed assay, with the job's ETA."""
    from revdistill.units import format_duration

    def report(progress) -> None:
        left = "all committed" if progress.done == progress.total else f"ETA {format_duration(progress.eta_s)}"
        print(f"[rank {progress.rank}] {progress.done}/{progress.total} assays · {progress.assay} done in "
              f"{format_duration(progress.seconds)} · {left}", file=sys.stderr)

    return report


def _list(args: argparse.Namespace) -> int:
    from revdistill.proteingym.catalog import assay_catalog, format_catalog

    print(format_catalog(assay_catalog(args.data_dir), query=args.search))
    return 0
