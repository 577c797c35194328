"""What the README and docs/ point to exists, and docs/environment.md names every variable the code reads."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def relative_links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)  # not inside code
    return [target for target in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


def test_docs_pages_exist():
    names = {path.name for path in PAGES}
    assert {"README.md", "index.md", "cli.md", "serving.md", "reproducing.md", "environment.md",
            "method.md"} <= names


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves_to_a_file(page):
    missing = []
    for target in relative_links(page):
        file_part = target.split("#", 1)[0]
        if file_part and not (page.parent / file_part).resolve().exists():
            missing.append(target)
    assert missing == [], f"{page.relative_to(REPO_ROOT)} links to missing files: {missing}"


def test_the_readme_links_every_docs_page():
    linked = {Path(target.split("#", 1)[0]).name for target in relative_links(REPO_ROOT / "README.md")}
    pages = {path.name for path in (REPO_ROOT / "docs").glob("*.md")} - {"index.md"}
    assert pages <= linked, f"README does not link {sorted(pages - linked)}"


def test_environment_page_names_every_variable_the_code_reads():
    used = set()
    for folder in ("revdistill", "tests"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            used |= set(re.findall(r"REVDISTILL_[A-Z_]+", path.read_text(encoding="utf-8")))
    used |= set(re.findall(r"REVDISTILL_[A-Z_]+", (REPO_ROOT / "Makefile").read_text()))
    documented = set(re.findall(r"^\| `(REVDISTILL_[A-Z_]+)` \|", (REPO_ROOT / "docs" / "environment.md").read_text(),
                                flags=re.MULTILINE))
    assert used - documented == set(), f"undocumented: {sorted(used - documented)}"
    assert documented - used == set(), f"documented but read nowhere: {sorted(documented - used)}"
