"""The README's and docs/'s Python snippets run as written, the README's offline command runs, and its set-up
commands exist in the Makefile."""
from __future__ import annotations

import re
import shlex

import pytest

from conftest import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]


def python_blocks(path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_pages_have_snippets():
    assert python_blocks(REPO_ROOT / "README.md"), "README has no python snippet"
    assert sum(len(python_blocks(path)) for path in PAGES) >= 4


@pytest.mark.parametrize("path", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_snippets_run(path, tmp_path, monkeypatch, tiny_cache):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REVDISTILL_CACHE", str(tiny_cache))  # the tiny reference ladders, fitted once
    for block in python_blocks(path):
        exec(compile(block, path.name, "exec"), {"__name__": "__readme__"})


@pytest.mark.slow
def test_readme_offline_command_runs_from_the_clone(tmp_path, monkeypatch, tiny_cache, capsys):
    """The tour's command needs no weights, no network and no ProteinGym folder (the assay ships with us)."""
    from revdistill.cli import main

    line = next(line for line in (REPO_ROOT / "README.md").read_text().splitlines()
                if line.startswith(".venv/bin/revdistill proteingym "))
    argv = shlex.split(line)[1:]
    monkeypatch.chdir(REPO_ROOT)  # the path in the command is relative to the clone
    monkeypatch.setenv("REVDISTILL_CACHE", str(tiny_cache))
    (tmp_path / "proteingym").mkdir()
    monkeypatch.setenv("REVDISTILL_PROTEINGYM_DIR", str(tmp_path / "proteingym"))  # no ../shared
    out = tmp_path / "pin1.csv"
    argv[argv.index("--out") + 1] = str(out)
    status = main([*argv, "--n-bootstrap", "20"])
    assert status == 0, capsys.readouterr().err
    assert out.is_file() and "PIN1_HUMAN_Tsuboyama_2023_1I6C" in out.read_text()


def test_readme_setup_commands_are_make_targets():
    readme = (REPO_ROOT / "README.md").read_text()
    makefile = (REPO_ROOT / "Makefile").read_text()
    for target in ("test", "dashboard"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE)
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
