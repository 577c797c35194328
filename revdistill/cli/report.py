"""``revdistill report``: one self-contained HTML page of a finished benchmark (works offline).

Examples
--------
``revdistill report results.csv`` (writes ``results.report.html`` beside it)
``revdistill report results.csv --out shared/benchmark.html --data-dir ProteinGym/``
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

_DESCRIPTION = """\
Write one HTML file a scientist can share: the scaling figures (by model size and by prefix dimension,
with ProteinGym's zero-shot ESM-2 for scale), the paired differences RD − ESM-2 / RD − naive / RD prefix −
truncated with their intervals and win/loss counts, a sortable per-assay table, the protocol and ladder
ids, fold sources, long-sequence handling and every deviation from the released method. Reads RESULTS
(written by `revdistill proteingym --out`), its <stem>.summary.csv when present (else the paired
differences are recomputed) and its <stem>.results/ folder when present. plotly.js is inlined: the page
needs no network."""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``report`` subcommand."""
    parser = subparsers.add_parser("report", help="self-contained HTML report of a results table",
                                   description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, metavar="RESULTS", help="results CSV of `revdistill proteingym`")
    parser.add_argument("--out", type=Path, default=None, help="HTML file to write (default <stem>.report.html)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="ProteinGym folder (its zero-shot summary file gives the reference curve)")
    parser.add_argument("--n-bootstrap", type=int, default=1000, help="bootstrap replicates of recomputed intervals")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Execute ``revdistill report``; returns the exit status."""
    from revdistill.cli.common import check_output
    from revdistill.views.report import write_report

    if not args.results.exists():
        raise FileNotFoundError(f"RESULTS {args.results}: no such file")
    out = args.out if args.out is not None else args.results.with_name(f"{args.results.stem}.report.html")
    check_output(out, inputs=[args.results], kind="html", suffixes=(".html", ".htm"))
    path = write_report(args.results, out, data_dir=args.data_dir, n_bootstrap=args.n_bootstrap)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, self-contained: open it in any browser, offline)",
          file=sys.stderr)
    return 0
