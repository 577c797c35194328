"""The command line's error contract, shared by the CLI error tests: run a command in-process, check that it
failed with one line ``revdistill <command>: error: ...``."""
from __future__ import annotations

import re

from revdistill.cli import main

MODELS = "tiny-32,tiny-48"


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``(status, stdout, stderr)`` of ``revdistill *argv``."""
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_one_line_error(status: int, err: str, command: str, message: str, *, other_lines: bool = False) -> None:
    """Exit 2, no traceback, one ``revdistill <command>: error: ...`` line matching ``message``.

    ``other_lines`` allows log lines beside it (commands that report progress before they fail).
    """
    assert status == 2, err
    assert "Traceback" not in err and "please report" not in err, err
    lines = err.strip().splitlines()
    if other_lines:
        lines = [line for line in lines if line.startswith("revdistill ")]
    assert len(lines) == 1, err
    assert lines[0].startswith(f"revdistill {command}: error: "), lines[0]
    assert re.search(message, lines[0]), (message, lines[0])
