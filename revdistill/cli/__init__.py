"""Command line: ``revdistill embed | fit | proteingym | ...``.

Each subcommand lives in its own module exposing ``register(subparsers)``, which adds a parser and
sets ``func`` to a callable taking the parsed arguments and returning an exit status.

Error contract: every expected failure (bad arguments or inputs, missing or damaged files, a full disk,
no CUDA, ...) prints one line ``revdistill <command>: error: <message>`` on stderr and exits with status
2; Ctrl-C prints one line and exits 130; an unexpected failure (a bug) prints one line asking for a
report and exits 1. ``--debug`` (before or after the command) shows the traceback instead.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from typing import NoReturn, Sequence

_COMMAND_MODULES = (
    "revdistill.cli.embed",
    "revdistill.cli.fit",
    "revdistill.cli.proteingym",
    "revdistill.cli.report",
    "revdistill.cli.weights",
)

EXIT_ERROR = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141


class _Parser(argparse.ArgumentParser):
    """Argument errors as one line (no usage block), like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_ERROR, f"{self.prog}: error: {' '.join(message.split())} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level argument parser with every subcommand registered."""
    parser = _Parser(
        prog="revdistill",
        description="Reverse distillation of ESM-2: embed, fit the ladder, benchmark on ProteinGym.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in _COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    for subparser in subparsers.choices.values():  # the global flags also work after the command
        for flags, text in ((("--verbose",), "log at INFO level"), (("--debug",), "show the full traceback")):
            try:
                subparser.add_argument(*flags, action="store_true", default=argparse.SUPPRESS, help=text)
            except argparse.ArgumentError:  # the command defines it itself
                pass
    return parser


def _command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    for action in parser._actions:  # noqa: SLF001 - argparse keeps subparsers there
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            return action.choices[command]
    raise ValueError(f"no subcommand parser for {command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``revdistill`` console script; returns the exit status."""
    from revdistill.cli.common import describe_error

    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra:  # reported by the command's parser, so the line names the command
            _command_parser(parser, args.command).error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exit_:  # --help, or an argument error already printed in one line
        return exit_.code if isinstance(exit_.code, int) else EXIT_ERROR
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    prefix = f"revdistill {args.command}"
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print(f"{prefix}: interrupted (finished work is kept)", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader went away (`revdistill ... | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except Exception as error:  # noqa: BLE001 - the one place errors become messages
        if args.debug:
            raise
        message = describe_error(error)
        if message is None:
            text = " ".join(str(error).split())
            print(f"{prefix}: internal error: {type(error).__name__}: {text} (rerun with --debug for the "
                  f"traceback, and please report it)", file=sys.stderr)
            return EXIT_BUG
        print(f"{prefix}: error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
