"""The package's version, licence and citation say the same thing everywhere."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

import revdistill

REPO = Path(__file__).resolve().parents[1]


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def test_version_has_one_source_and_setuptools_reads_it():
    from setuptools.config.pyprojecttoml import read_configuration

    project = _pyproject()["project"]
    assert "version" not in project and "version" in project["dynamic"]
    assert _pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "revdistill.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", revdistill.__version__)
    built = read_configuration(REPO / "pyproject.toml", expand=True)
    assert built["project"]["version"] == revdistill.__version__


def test_licence_file_matches_the_declared_licence():
    assert _pyproject()["project"]["license"] == "MIT"
    text = (REPO / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("MIT License\n") and "Copyright (c) 2026 The revdistill authors" in text


def test_citation_names_this_version_and_the_paper():
    text = (REPO / "CITATION.cff").read_text(encoding="utf-8")
    assert re.search(r"^cff-version: 1\.2\.0$", text, re.M)
    assert re.search(r"^version: (\S+)$", text, re.M).group(1) == revdistill.__version__
    assert re.search(r"^license: MIT$", text, re.M)
    assert "arXiv:2603.07710" in text and "Catrina" in text and "ICLR 2026" in text
