"""The ProteinGym assay catalogue: one row per substitution assay, searchable and sortable, offline.

Built from the reference file (:func:`~revdistill.proteingym.data.load_reference`, which falls back on the
copy of ProteinGym v1.3's ``DMS_substitutions.csv`` shipped with the package), plus whether each assay's
data are already in the data folder. The dashboard's assay browser and ``revdistill proteingym --list``
both show it.

>>> from revdistill.proteingym.catalog import assay_catalog, format_catalog
>>> catalog = assay_catalog()                                   # doctest: +SKIP
>>> print(format_catalog(catalog, query="human stability", sort="singles", limit=5))   # doctest: +SKIP
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from revdistill.proteingym.data import load_reference, local_assay_ids

__all__ = ["CATALOG_COLUMNS", "assay_catalog", "filter_catalog", "format_catalog"]

#: Catalogue column → reference-file column.
CATALOG_COLUMNS: dict[str, str] = {
    "DMS_id": "DMS_id",
    "protein": "molecule_name",
    "uniprot_id": "UniProt_ID",
    "organism": "source_organism",
    "selection_type": "coarse_selection_type",
    "singles": "DMS_number_single_mutants",
    "multiples": "DMS_number_multiple_mutants",
    "total": "DMS_total_number_mutants",
    "length": "seq_len",
}
_COUNTS = ("singles", "multiples", "total", "length")
_SEARCHED = ("DMS_id", "protein", "uniprot_id", "organism", "selection_type")
# printed columns: (catalogue column, header, width or None for "as wide as needed")
_PRINTED = (("DMS_id", "DMS_id", None), ("protein", "protein", 28), ("organism", "organism", 24),
            ("selection_type", "selection", None), ("singles", "singles", None), ("multiples", "multiples", None),
            ("total", "total", None), ("length", "length", None), ("local", "local", None))


def assay_catalog(data_dir: str | Path | None = None, reference: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per assay: ``DMS_id, protein, uniprot_id, organism, selection_type, singles, multiples, total,
    length, local, local_source``.

    Parameters
    ----------
    data_dir : str or Path, optional
        The ProteinGym folder (see :func:`~revdistill.proteingym.data.resolve_data_dir`); its reference
        file is used when present, and ``local`` says whose data it holds. Without one (nothing
        downloaded yet) the packaged v1.3 reference gives all 217 assays, none local.
    reference : DataFrame, optional
        An already loaded reference (:func:`load_reference`).

    Returns
    -------
    DataFrame
        In the reference's order, integer counts, ``local`` bool and ``local_source`` the folder or zip
        stem the data would be read from (``""`` when not local).
    """
    if reference is None:
        reference = load_reference(data_dir)
    missing = [column for column in CATALOG_COLUMNS.values() if column not in reference.columns]
    if missing:
        raise ValueError(f"reference file lacks column(s) {missing} needed for the assay catalogue")
    catalog = pd.DataFrame({name: reference[column].to_numpy() for name, column in CATALOG_COLUMNS.items()})
    for name in _COUNTS:
        catalog[name] = pd.to_numeric(catalog[name], errors="coerce").fillna(0).astype("int64")
    for name in ("protein", "uniprot_id", "organism", "selection_type"):
        catalog[name] = catalog[name].fillna("").astype(str)
    local = local_assay_ids(data_dir)
    catalog["local_source"] = [local.get(dms_id, "") for dms_id in catalog["DMS_id"]]
    catalog["local"] = catalog["local_source"] != ""
    return catalog


def filter_catalog(frame: pd.DataFrame, query: str | None = None, sort: str | None = None,
                   descending: bool = False) -> pd.DataFrame:
    """Rows matching every word of ``query`` (case-insensitive, in id, protein, UniProt id, organism or
    selection type), sorted by the column ``sort`` (ties by ``DMS_id``).

    Raises
    ------
    ValueError
        ``sort`` is not a catalogue column (the message lists them).
    """
    rows = frame
    if query:
        text = rows[list(_SEARCHED)].astype(str).agg(" ".join, axis=1).str.lower()
        keep = pd.Series(True, index=rows.index)
        for word in query.lower().split():
            keep &= text.str.contains(word, regex=False)
        rows = rows[keep]
    if sort is not None:
        if sort not in frame.columns:
            raise ValueError(f"sort={sort!r} is not a catalogue column; choose from {list(frame.columns)}")
        by = [sort] if sort == "DMS_id" else [sort, "DMS_id"]
        rows = rows.sort_values(by, ascending=[not descending] + [True] * (len(by) - 1), kind="stable")
    return rows


def _cell(value, width: int | None) -> str:
    text = ("yes" if value else "") if isinstance(value, (bool, np.bool_)) else str(value)
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def format_catalog(frame: pd.DataFrame, query: str | None = None, sort: str | None = "DMS_id",
                   descending: bool = False, limit: int | None = None) -> str:
    """A text table of the catalogue (after :func:`filter_catalog`), with a closing count line.

    Parameters
    ----------
    frame : DataFrame
        From :func:`assay_catalog`.
    query : str, optional
        Words that must all appear (see :func:`filter_catalog`).
    sort : str, optional
        Catalogue column to sort by (default ``DMS_id``); ``descending`` reverses it.
    limit : int, optional
        Print at most this many rows (the count line still says how many matched).
    """
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit} must be at least 1")
    rows = filter_catalog(frame, query, sort, descending)
    shown = rows if limit is None else rows.head(limit)
    cells = [[header for _, header, _ in _PRINTED]]
    cells += [[_cell(row[column], width) for column, _, width in _PRINTED] for _, row in shown.iterrows()]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_PRINTED))]
    numeric = {i for i, (column, _, _) in enumerate(_PRINTED) if column in _COUNTS}
    lines = ["  ".join(cell.rjust(w) if i in numeric else cell.ljust(w)
                       for i, (cell, w) in enumerate(zip(line, widths))).rstrip() for line in cells]
    summary = f"{len(rows)} of {len(frame)} assays"
    if query:
        summary += f" match {query!r}"
    if len(shown) < len(rows):
        summary += f" ({len(shown)} shown)"
    summary += f"; {int(rows['local'].sum())} with data on disk" if "local" in rows else ""
    return "\n".join(lines + ["", summary])
