"""ProteinGym inputs that are not what they say (issue 16): zips that are not zips or do not decompress, a reference
without counts, sequences with letters that are not residues, CSVs without rows or with extra fields, FIFOs,
tiny scores, non-ASCII names, the mirror variable. One clear message naming the file and line; nothing changed."""
from __future__ import annotations

import os
import re
import threading
import zipfile

import numpy as np
import pandas as pd
import pytest

from revdistill import proteingym as pg
from revdistill.cli import main
from revdistill.experiment.probe import cross_validate

from filecheck import unchanged
from http_servers import serve_directory
from proteingym.test_bad_assays import assay_frame, write

PIN1 = "PIN1_HUMAN_Tsuboyama_2023_1I6C"


def data_dir_with_zip(tmp_path, content: bytes | None = None, corrupt: bool = False):
    """A data folder whose singles zip holds PIN1's CSV (``corrupt``: its deflated bytes damaged), or ``content``."""
    folder = tmp_path / "pg"
    folder.mkdir()
    archive = folder / "cv_folds_singles_substitutions.zip"
    if content is not None:
        archive.write_bytes(content)
        return folder
    csv = assay_frame(40).to_csv(index=False).encode() * 3
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"cv_folds_singles_substitutions/{PIN1}.csv", csv)
    if corrupt:
        data = bytearray(archive.read_bytes())
        middle = len(data) // 3
        data[middle: middle + 40] = bytes(40)
        archive.write_bytes(bytes(data))
    return folder


# ------------------------------------------------------------------------------------------ zips
def test_a_proteingym_zip_that_is_not_a_zip_is_named(tmp_path):
    folder = data_dir_with_zip(tmp_path, content=b"<html>Service unavailable</html>")
    with unchanged(tmp_path), pytest.raises(ValueError, match=r"ProteinGym archive .*cv_folds_singles_substitutions"
                                                              r"\.zip is not a readable zip archive .*download it "
                                                              r"again"):
        pg.read_assay(PIN1, data_dir=folder)


def test_a_zip_member_that_fails_to_decompress_is_named(tmp_path):
    folder = data_dir_with_zip(tmp_path, corrupt=True)
    with unchanged(tmp_path), pytest.raises(ValueError, match=rf"ProteinGym archive .*\.zip!cv_folds_singles_"
                                                              rf"substitutions/{PIN1}\.csv is damaged: it fails to "
                                                              rf"decompress"):
        pg.read_assay(PIN1, data_dir=folder)


def test_cli_names_the_zip_that_is_not_one(tmp_path, capsys):
    folder = data_dir_with_zip(tmp_path, content=b"PK\x03\x04 truncated")
    with unchanged(tmp_path):
        status = main(["proteingym", PIN1, "--models", "tiny-32,tiny-48", "--out", str(tmp_path / "r.csv"),
                       "--data-dir", str(folder), "--store", str(tmp_path / "s.h5")])
    err = capsys.readouterr().err
    assert status == 2 and "please report" not in err and "Traceback" not in err, err
    assert re.search(r"cv_folds_singles_substitutions\.zip is not a readable zip archive", err), err


def test_max_variants_with_a_reference_without_counts(tmp_path, capsys):
    folder = tmp_path / "pg"
    folder.mkdir()
    reference = pd.read_csv(pg.packaged_reference_path())
    reference.drop(columns=["DMS_number_single_mutants", "DMS_total_number_mutants"]).to_csv(
        folder / "DMS_substitutions.csv", index=False)
    with unchanged(tmp_path):
        status = main(["proteingym", "--all", "--max-variants", "100", "--models", "tiny-32,tiny-48", "--out",
                       str(tmp_path / "r.csv"), "--data-dir", str(folder), "--store", str(tmp_path / "s.h5")])
    err = capsys.readouterr().err
    assert status == 2 and "please report" not in err, err
    assert re.search(r"--max-variants needs the number of variants of each assay, but reference file .*DMS_"
                     r"substitutions\.csv has none of the columns \['DMS_number_single_mutants', "
                     r"'DMS_total_number_mutants'\]", err), err


# ------------------------------------------------------------------------------------------ CSV content
def test_letters_that_are_not_residues_are_reported_early_with_line_and_character(tmp_path):
    frame = assay_frame()
    frame.loc[2, "mutated_sequence"] = frame.loc[2, "mutated_sequence"][:4] + "k" + frame.loc[2, "mutated_sequence"][5:]
    frame.loc[6, "mutated_sequence"] = frame.loc[6, "mutated_sequence"][:-1] + "*"
    path = write(tmp_path, frame)
    with unchanged(tmp_path), pytest.raises(ValueError, match=r"my_assay\.csv.*column 'mutated_sequence' holds letters "
                                                              r"that are not residues at line 4, character 5: 'k'; "
                                                              r"line 8, character 66: '\*'; allowed: upper-case"):
        pg.read_assay(path, reference=pd.DataFrame())


def test_a_header_only_csv_says_it_has_no_rows(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("mutant,DMS_score,mutated_sequence\n")
    with unchanged(tmp_path), pytest.raises(ValueError, match=r"empty\.csv has a header \(mutant, DMS_score, "
                                                              r"mutated_sequence\) but no rows"):
        pg.read_assay(path, reference=pd.DataFrame())


@pytest.mark.parametrize("every_row", [True, False])
def test_an_unquoted_comma_in_an_extra_column_is_reported_with_the_line(tmp_path, every_row):
    frame = assay_frame()
    frame["note"] = "ok"
    text = frame.to_csv(index=False).splitlines()
    rows = range(1, len(text)) if every_row else [5]
    for row in rows:
        text[row] = text[row].replace(",ok", ",ok, really")
    path = tmp_path / "commas.csv"
    path.write_text("\n".join(text) + "\n")
    line = 2 if every_row else 6
    with unchanged(tmp_path), pytest.raises(ValueError, match=rf"commas\.csv: line {line} has 8 fields but the header "
                                                              rf"has 7.*unquoted comma"):
        pg.read_assay(path, reference=pd.DataFrame())


def test_tiny_scores_are_not_constant(tmp_path):
    frame = assay_frame()
    frame["DMS_score"] = (np.arange(40) - 20) * 1e-300
    assay = pg.read_assay(write(tmp_path, frame), reference=pd.DataFrame())
    rng = np.random.default_rng(0)
    features = np.c_[assay.variants["DMS_score"].to_numpy() * 1e300, rng.normal(size=(40, 3))]
    result = cross_validate(features, assay.variants["DMS_score"].to_numpy(), assay.folds("fold_random_5"))
    assert result.note == "" and result.spearman > 0.9
    with pytest.raises(ValueError, match=r"scores are constant on the training folds \(all 1e-300\)"):
        cross_validate(features, np.full(40, 1e-300), assay.folds("fold_random_5"))


def test_a_non_ascii_assay_file_name_reads_and_embeds(tmp_path):
    from revdistill.esm.runner import EmbedOptions, LocalEmbedder
    from revdistill.esm.store import EmbeddingStore

    assay = pg.read_assay(write(tmp_path, assay_frame(), name="essai_é.csv"), reference=pd.DataFrame())
    assert assay.dms_id == "essai_é"
    store = EmbeddingStore(tmp_path / "s.h5")
    records = [(f"{assay.dms_id}:{m}", s) for m, s in zip(assay.variants["mutant"][:5],
                                                          assay.variants["mutated_sequence"][:5])]
    LocalEmbedder(EmbedOptions()).embed(store, records, ("tiny-32", "tiny-48"))
    assert store.ids() == [record_id for record_id, _ in records]


# ------------------------------------------------------------------------------------------ FIFOs, mirror
def test_a_fifo_is_read_as_input(tmp_path, capsys, one_torch_thread):
    fifo = tmp_path / "in.fa"
    os.mkfifo(fifo)

    def feed():
        with open(fifo, "w") as stream:
            stream.write(">a\nMKVLAAGIVG\n>b\nMKKLLV\n")
    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    status = main(["embed", str(fifo), "--models", "tiny-32,tiny-48", "--out", str(tmp_path / "s.h5")])
    writer.join(10)
    captured = capsys.readouterr()
    assert status == 0, captured.err
    assert "added 2 record(s)" in captured.out + captured.err


def test_the_mirror_variable_is_honoured_by_whole_downloads(tmp_path, monkeypatch):
    with serve_directory(tmp_path / "mirror") as mirror:
        mirror.add("cv_folds_singles_substitutions.zip", b"zip bytes")
        monkeypatch.setenv(pg.PROTEINGYM_URL_ENV, mirror.url)
        folder = pg.download_proteingym(tmp_path / "pg", names=["cv_folds_singles_substitutions.zip"])
        assert (folder / "cv_folds_singles_substitutions.zip").read_bytes() == b"zip bytes"
        assert [request["path"] for request in mirror.requests] == ["/cv_folds_singles_substitutions.zip"]


def test_a_zip_member_larger_than_memory_is_refused_before_reading(tmp_path, monkeypatch):
    folder = data_dir_with_zip(tmp_path)
    monkeypatch.setattr("revdistill.io.files._memory_limit", lambda: 1000)
    with unchanged(tmp_path), pytest.raises(ValueError, match=rf"\.zip!cv_folds_singles_substitutions/{PIN1}\.csv "
                                                              r"declares .* more than the memory this process may use"):
        pg.read_assay(PIN1, data_dir=folder)
