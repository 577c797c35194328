"""Every command-line option says what it does, and what it says is what the code does."""
from __future__ import annotations

import argparse

import pytest

from revdistill.cli import build_parser


def _parsers(parser: argparse.ArgumentParser, prog: str = "revdistill"):
    yield prog, parser
    for action in parser._actions:  # noqa: SLF001 - argparse keeps subparsers there
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{prog} {name}")


def _options():
    return [(prog, action) for prog, parser in _parsers(build_parser()) for action in parser._actions  # noqa: SLF001
            if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))]  # noqa: SLF001


def test_every_option_has_a_help_text():
    missing = [f"{prog} {'/'.join(action.option_strings) or action.dest}" for prog, action in _options()
               if not (action.help or "").strip()]
    assert missing == []


def _help(prog: str, flag: str) -> str:
    return next(action.help for p, action in _options() if p == prog and flag in action.option_strings)


def test_download_help_says_who_downloads_and_from_where():
    text = _help("revdistill embed", "--download")
    assert "fair-esm download" not in text  # the weights are fetched by our own downloader, not by fair-esm
    assert "revdistill weights download" in text and "$REVDISTILL_WEIGHTS_URL" in text


@pytest.mark.parametrize("prog", ["revdistill embed", "revdistill fit", "revdistill proteingym",
                                  "revdistill weights list", "revdistill weights download"])
def test_weights_dir_help_names_the_variable_the_code_reads(prog, monkeypatch, tmp_path):
    from revdistill.esm.models.weights import WEIGHTS_ENV, _default_weights_dir

    assert f"${WEIGHTS_ENV}" in _help(prog, "--weights-dir")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path))
    assert _default_weights_dir() == tmp_path


def test_regressor_help_names_the_default():
    for prog in ("revdistill fit", "revdistill proteingym"):
        action = next(a for p, a in _options() if p == prog and "--regressor" in a.option_strings)
        assert f"'{action.default}' (default" in action.help and set(action.choices) == {"pcr", "ridge", "ols"}
