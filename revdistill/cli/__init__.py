"""Command line: ``revdistill embed | fit | proteingym``.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds a parser and
sets ``func`` to a callable taking the parsed arguments and returning an exit status.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

_COMMAND_MODULES = (
    "revdistill.cli.embed",
    "revdistill.cli.fit",
    "revdistill.cli.proteingym",
    "revdistill.cli.weights",
)


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="revdistill",
        description="Reverse distillation of ESM-2: embed, fit the ladder, benchmark on ProteinGym.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``revdistill`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"revdistill {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
