"""The ProteinGym assay browser: all 217 substitution assays, offline, searchable and sortable.

The rows come from :func:`revdistill.proteingym.catalog.assay_catalog` (the reference file shipped with
the package, plus which assays' data are already on disk) and are filtered and sorted by
:func:`~revdistill.proteingym.catalog.filter_catalog`, the same functions as ``revdistill proteingym
--list``. The table is a plain ``Select`` of fixed-width rows (robust under Voila: no custom widget
code), with a filter box and a sort order above it and the chosen assay's details below. Getting the
data of an assay that is not on disk is :meth:`AssayBrowser.fetch` (one assay out of ProteinGym's
remote zips, :func:`revdistill.proteingym.remote.fetch_assay`), which the models panel runs before
computing.
"""
from __future__ import annotations

import html
from typing import Any, Callable

import ipywidgets as widgets
import pandas as pd

from .state import DashboardState

__all__ = ["AssayBrowser", "format_row", "SORT_CHOICES", "COLUMNS"]

#: (catalogue column, header, width) of the table's fixed-width rows.
COLUMNS = (("DMS_id", "DMS id", 44), ("protein", "protein", 22), ("organism", "organism", 20),
           ("selection_type", "selection", 14), ("singles", "singles", 7), ("multiples", "multiples", 9),
           ("length", "length", 6), ("local", "on disk", 7))
SORT_CHOICES = (("DMS id", ("DMS_id", False)), ("single mutants, most first", ("singles", True)),
                ("single mutants, fewest first", ("singles", False)), ("sequence length, shortest first",
                                                                       ("length", False)),
                ("sequence length, longest first", ("length", True)), ("protein", ("protein", False)),
                ("organism", ("organism", False)), ("selection type", ("selection_type", False)),
                ("on disk first", ("local", True)))
_NUMERIC = {"singles", "multiples", "length"}
_SPACE = "\u00a0"  # <option> text collapses ordinary spaces


def _cell(value: Any, column: str, width: int) -> str:
    text = ("yes" if value else "") if column == "local" else str(value)
    if len(text) > width:
        text = text[: width - 1] + "…"
    return text.rjust(width) if column in _NUMERIC else text.ljust(width)


def format_row(row: Any) -> str:
    """One assay as a fixed-width line (non-breaking spaces, so a ``<select>`` keeps the columns)."""
    return (" ".join(_cell(row[column], column, width) for column, _, width in COLUMNS)).replace(" ", _SPACE)


def _header() -> str:
    cells = " ".join(header.rjust(width) if column in _NUMERIC else header.ljust(width)
                     for column, header, width in COLUMNS)
    return f"<pre class='rd-assay-header'>{html.escape(cells)}</pre>"


class AssayBrowser:
    """Searchable, sortable list of ProteinGym's substitution assays.

    Parameters
    ----------
    state : DashboardState
    on_pick : callable, optional
        ``on_pick(dms_id or None)`` when the chosen assay changes.

    Attributes
    ----------
    widget : ipywidgets.VBox
    catalog : pandas.DataFrame
        :func:`~revdistill.proteingym.catalog.assay_catalog` (all assays; ``local`` kept current).
    query : ipywidgets.Text
        Words that must all appear in the id, protein, UniProt id, organism or selection type.
    sort : ipywidgets.Dropdown
    table : ipywidgets.Select
        The matching assays, one fixed-width row each; its value is the ``DMS_id``.
    details : ipywidgets.HTML
    """

    def __init__(self, state: DashboardState, on_pick: Callable[[str | None], None] | None = None) -> None:
        from revdistill.proteingym.catalog import assay_catalog  # noqa: PLC0415

        self.state, self.on_pick = state, on_pick
        self.catalog: pd.DataFrame = assay_catalog(state.options.proteingym_dir)
        self.query = widgets.Text(placeholder="filter: e.g. human stability, PIN1, Tsuboyama, yeast binding",
                                  description="Search", continuous_update=True, layout={"width": "520px"})
        self.query.add_class("rd-assay-query")
        self.sort = widgets.Dropdown(options=SORT_CHOICES, value=SORT_CHOICES[0][1], description="Sort",
                                     layout={"width": "340px"})
        self.sort.add_class("rd-assay-sort")
        self.count = widgets.HTML("")
        self.count.add_class("rd-assay-count")
        self.table = widgets.Select(options=[], rows=12, layout={"width": "100%"})
        self.table.add_class("rd-assay-list")
        self.details = widgets.HTML("<span class='rd-hint'>Pick an assay.</span>")
        self.details.add_class("rd-assay-details")
        self.query.observe(state.guard(self._on_filter, "assay search"), names="value")
        self.sort.observe(state.guard(self._on_filter, "assay sort"), names="value")
        self.table.observe(state.guard(self._on_pick, "assay choice"), names="value")
        self.refresh()
        self.widget = widgets.VBox([widgets.HBox([self.query, self.sort]), self.count, widgets.HTML(_header()),
                                   self.table, self.details])
        self.widget.add_class("rd-assay-browser")

    @property
    def selected(self) -> str | None:
        """The chosen ``DMS_id`` (None when none)."""
        return self.table.value or None

    def row(self, dms_id: str) -> pd.Series:
        """The catalogue row of an assay (``KeyError`` with the id when unknown)."""
        rows = self.catalog[self.catalog["DMS_id"] == dms_id]
        if rows.empty:
            raise KeyError(f"{dms_id!r} is not in the assay catalogue ({len(self.catalog)} assays)")
        return rows.iloc[0]

    def refresh(self) -> None:
        """Filter and sort the rows; keep the choice when it still matches, pick the row a search narrows to.

        The choice is always a visible row: a search that leaves exactly one assay selects it (highlighted, with
        its details below); a search that hides the chosen row clears the choice. What Compute runs is therefore
        never the search text itself.
        """
        from revdistill.proteingym.catalog import filter_catalog  # noqa: PLC0415

        column, descending = self.sort.value
        query = self.query.value.strip()
        rows = filter_catalog(self.catalog, query or None, column, descending)
        chosen = self.table.value
        options = [(format_row(row), row["DMS_id"]) for _, row in rows.iterrows()]
        self.table.options = options
        if chosen not in set(rows["DMS_id"]):
            chosen = rows["DMS_id"].iloc[0] if query and len(rows) == 1 else None
        self.table.value = chosen
        self._show_count()

    def _show_count(self) -> None:
        """The count line: how many assays match, how many are on disk, and what Compute will run."""
        query, n_rows = self.query.value.strip(), len(self.table.options)
        matched = f"{n_rows} of {len(self.catalog)} assays" + (f" match '{html.escape(query)}'" if query else "")
        if self.table.value:
            choice = f"chosen: <b>{html.escape(self.table.value)}</b>"
        elif n_rows == 0:
            choice = "no assay matches: change the search"
        else:
            choice = "click a row to choose the assay"
        self.count.value = (f"<span class='rd-hint'>{matched} · {int(self.catalog['local'].sum())} with data on "
                            f"disk (the others are fetched when you compute) · {choice}</span>")

    def _on_filter(self, _change: Any = None) -> None:
        self.refresh()

    def _on_pick(self, change: dict[str, Any]) -> None:
        dms_id = change["new"] or None
        self.details.value = self._details(dms_id) if dms_id else "<span class='rd-hint'>Pick an assay.</span>"
        self._show_count()
        if self.on_pick is not None:
            self.on_pick(dms_id)

    def _details(self, dms_id: str) -> str:
        row = self.row(dms_id)
        where = (f"data on disk ({html.escape(row['local_source'])})" if row["local"] else
                 "not on disk: Compute first fetches this assay alone from ProteinGym")
        return (f"<div class='rd-hint rd-assay-picked'><b>{html.escape(dms_id)}</b> · {html.escape(row['protein'])} "
                f"({html.escape(row['uniprot_id'])}, {html.escape(row['organism'])}) · selection: "
                f"{html.escape(row['selection_type'])} · {row['singles']:,} single and {row['multiples']:,} multiple "
                f"mutants · {row['length']:,} residues · {where}</div>")

    def fetch(self, dms_id: str, progress: Callable[[int, int | None, str], None] | None = None) -> None:
        """Get ``dms_id``'s data when it is not on disk (call from a worker thread); then mark it local."""
        from revdistill.proteingym.remote import check_online, fetch_assay  # noqa: PLC0415

        if bool(self.row(dms_id)["local"]):
            return
        reason = check_online(timeout=10.0)
        if reason:
            raise RuntimeError(f"{dms_id} is not on this server and ProteinGym cannot be reached from it ({reason}). "
                               "Pick an assay marked 'on disk' (sort by 'on disk first'), or connect the server to "
                               "the internet and press Compute again; an operator can also put the assay's CSV in "
                               "the ProteinGym folder (REVDISTILL_PROTEINGYM_DIR).")
        fetch_assay(dms_id, self.state.options.proteingym_dir, progress=progress)

    def mark_local(self, dms_id: str) -> None:
        """Show ``dms_id`` as on disk (after a fetch), on the kernel's loop."""
        from revdistill.proteingym.data import local_assay_ids  # noqa: PLC0415

        local = local_assay_ids(self.state.options.proteingym_dir)
        self.catalog["local_source"] = [local.get(i, "") for i in self.catalog["DMS_id"]]
        self.catalog["local"] = self.catalog["local_source"] != ""
        self.refresh()
        if self.table.value == dms_id:
            self.details.value = self._details(dms_id)
