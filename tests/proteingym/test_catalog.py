"""The assay catalogue: 217 assays offline from the packaged reference, local availability, search, sort, table."""
from __future__ import annotations

import logging
import shutil
import zipfile

import pandas as pd
import pytest

from revdistill import proteingym as pg
from revdistill.proteingym.catalog import CATALOG_COLUMNS, assay_catalog, filter_catalog, format_catalog

KENNOUCHE = "A0A1I9GEU1_NEIME_Kennouche_2019"
PIN1 = "PIN1_HUMAN_Tsuboyama_2023_1I6C"


@pytest.fixture
def no_data(tmp_path, monkeypatch):
    """No data folder anywhere: no $REVDISTILL_PROTEINGYM_DIR, an empty cache."""
    monkeypatch.delenv(pg.ENV_VAR, raising=False)
    monkeypatch.setenv("REVDISTILL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path


def test_reference_falls_back_to_the_packaged_copy(no_data, proteingym_dir, caplog):
    with caplog.at_level(logging.INFO, logger="revdistill.proteingym.data"):
        reference = pg.load_reference()
    assert len(reference) == 217
    assert "using the ProteinGym v1.3 reference file shipped with revdistill" in caplog.text
    shipped = pg.packaged_reference_path().read_bytes()
    assert shipped == (proteingym_dir / "reference_files" / "DMS_substitutions.csv").read_bytes()
    pd.testing.assert_frame_equal(reference, pg.load_reference(proteingym_dir))
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        pg.load_reference(no_data / "nope")
    with pytest.raises(FileNotFoundError, match="reference file path='.*missing.csv' does not exist"):
        pg.load_reference(path=no_data / "missing.csv")


def test_catalog_lists_all_217_assays_offline(no_data, proteingym_dir):
    catalog = assay_catalog()
    reference = pd.read_csv(proteingym_dir / "reference_files" / "DMS_substitutions.csv")
    assert len(catalog) == 217 and catalog["DMS_id"].tolist() == reference["DMS_id"].tolist()
    assert list(catalog.columns) == [*CATALOG_COLUMNS, "local_source", "local"]
    row = catalog.set_index("DMS_id").loc[PIN1]
    expected = reference.set_index("DMS_id").loc[PIN1]
    assert (row["protein"], row["organism"], row["selection_type"]) == (
        expected["molecule_name"], expected["source_organism"], "Stability")
    assert (row["singles"], row["multiples"], row["total"], row["length"]) == (686, 116, 802, 39)
    assert (catalog["singles"] + catalog["multiples"] == catalog["total"]).all()
    assert catalog["singles"].sum() == 696_311 and catalog["singles"].max() == 16_897
    assert not catalog["local"].any()


def test_local_availability_follows_find_assay_csv(no_data, proteingym_dir):
    data = no_data / "data"
    (data / "cv_folds_singles_substitutions").mkdir(parents=True)
    shutil.copy(proteingym_dir / "assays" / f"{KENNOUCHE}.csv", data / "cv_folds_singles_substitutions")
    with zipfile.ZipFile(data / "DMS_ProteinGym_substitutions.zip", "w") as archive:
        archive.write(proteingym_dir / "assays" / f"{PIN1}.csv", f"DMS_ProteinGym_substitutions/{PIN1}.csv")
        archive.write(proteingym_dir / "assays" / f"{KENNOUCHE}.csv", f"DMS_ProteinGym_substitutions/{KENNOUCHE}.csv")
    catalog = assay_catalog(data).set_index("DMS_id")
    assert catalog.index[catalog["local"]].tolist() == [KENNOUCHE, PIN1]
    assert catalog.loc[KENNOUCHE, "local_source"] == "cv_folds_singles_substitutions"  # preferred, as when read
    assert catalog.loc[PIN1, "local_source"] == "DMS_ProteinGym_substitutions"
    for dms_id in (KENNOUCHE, PIN1):
        assert pg.find_assay_csv(dms_id, data)[0] == catalog.loc[dms_id, "local_source"]


def test_search_and_sort():
    catalog = assay_catalog(reference=pg.load_reference(path=pg.packaged_reference_path()))
    human_stability = filter_catalog(catalog, "HUMAN stability", sort="singles", descending=True)
    assert len(human_stability) > 5
    assert (human_stability["selection_type"] == "Stability").all()
    assert human_stability["singles"].is_monotonic_decreasing
    assert filter_catalog(catalog, "pin1")["DMS_id"].tolist() == [PIN1]
    assert filter_catalog(catalog, "Neisseria")["DMS_id"].tolist() == [KENNOUCHE]  # organism
    assert filter_catalog(catalog, "no such protein").empty
    assert filter_catalog(catalog, sort="length")["length"].is_monotonic_increasing
    with pytest.raises(ValueError, match="sort='size' is not a catalogue column; choose from"):
        filter_catalog(catalog, sort="size")


def test_format_catalog_table():
    catalog = assay_catalog(reference=pg.load_reference(path=pg.packaged_reference_path()))
    text = format_catalog(catalog, query="tsuboyama", sort="total", descending=True, limit=4)
    lines = text.splitlines()
    assert lines[0].split() == ["DMS_id", "protein", "organism", "selection", "singles", "multiples", "total",
                                "length", "local"]
    body = lines[1:5]
    matches = filter_catalog(catalog, "tsuboyama", sort="total", descending=True)
    assert [line.split()[0] for line in body] == matches["DMS_id"].head(4).tolist()
    assert lines[-1] == f"{len(matches)} of 217 assays match 'tsuboyama' (4 shown); 0 with data on disk"
    assert len({len(line) for line in body}) <= 2  # aligned columns (the local column may be blank)
    full = format_catalog(catalog)
    assert len(full.splitlines()) == 1 + 217 + 2 and full.endswith("217 of 217 assays; 0 with data on disk")
    assert "…" in full  # long protein names are cut to their column
    with pytest.raises(ValueError, match="limit=0 must be at least 1"):
        format_catalog(catalog, limit=0)
