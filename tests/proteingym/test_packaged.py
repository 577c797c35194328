"""The assay shipped with the package: used when the ProteinGym folders lack it, never in their place."""
from __future__ import annotations

import hashlib
import re
import shutil

import pytest

from revdistill.proteingym.data import PACKAGED_ASSAYS, assay_source, packaged_assay_path

PIN1 = "PIN1_HUMAN_Tsuboyama_2023_1I6C"


def test_packaged_copy_is_the_documented_file():
    path = packaged_assay_path(PIN1)
    sources = (path.parent / "SOURCES.md").read_text(encoding="utf-8")
    row = next(line for line in sources.splitlines() if line.startswith(f"| `{PIN1}.csv`"))
    assert hashlib.md5(path.read_bytes()).hexdigest() == re.search(r"md5 `([0-9a-f]{32})`", row).group(1)
    assert PACKAGED_ASSAYS == (PIN1,)


def test_the_packaged_copy_is_read_when_the_folders_lack_the_assay(tmp_path, monkeypatch):
    from revdistill.experiment.protocol import Protocol
    from revdistill.experiment.tasks import read_task

    monkeypatch.setenv("REVDISTILL_CACHE", str(tmp_path / "cache"))
    source = assay_source(PIN1, data_dir=tmp_path)
    assert source == packaged_assay_path(PIN1)
    task = read_task(source, Protocol(), data_dir=tmp_path)
    assert task.name == PIN1 and len(task) == 686  # the singles of the 802 variants


def test_the_folders_copy_wins(tmp_path, monkeypatch):
    monkeypatch.setenv("REVDISTILL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "assays").mkdir()
    shutil.copyfile(packaged_assay_path(PIN1), tmp_path / "assays" / f"{PIN1}.csv")
    assert assay_source(PIN1, data_dir=tmp_path) == PIN1


def test_other_assays_are_not_invented(tmp_path, monkeypatch):
    monkeypatch.setenv("REVDISTILL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(FileNotFoundError, match="A4_HUMAN_Seuma_2022.csv"):
        assay_source("A4_HUMAN_Seuma_2022", data_dir=tmp_path)
    with pytest.raises(ValueError, match=r"no copy of assay 'A4_HUMAN_Seuma_2022' ships with the package"):
        packaged_assay_path("A4_HUMAN_Seuma_2022")
