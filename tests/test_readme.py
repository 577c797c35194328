"""The README's Python snippets run as written, and its set-up commands exist in the Makefile."""
from __future__ import annotations

import re

from conftest import REPO_ROOT


def python_blocks() -> list[str]:
    text = (REPO_ROOT / "README.md").read_text()
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def test_readme_snippets_run(tmp_path, monkeypatch, tiny_cache):
    blocks = python_blocks()
    assert blocks, "README has no python snippets"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REVDISTILL_CACHE", str(tiny_cache))  # the tiny reference ladders, fitted once
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {"__name__": "__readme__"})


def test_readme_setup_commands_are_make_targets():
    readme = (REPO_ROOT / "README.md").read_text()
    makefile = (REPO_ROOT / "Makefile").read_text()
    for target in ("test", "dashboard"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, flags=re.MULTILINE)
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
