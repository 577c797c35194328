"""A finished benchmark, read back and shown: the results table, its paired answers, one shareable HTML page.

:func:`load_results` reads what ``revdistill proteingym`` wrote (``--out``, ``<stem>.summary.csv`` and the
job's results folder ``<stem>.results/`` when present) into a :class:`LoadedResults`; the dashboard's
"Load results" and :func:`report_html` (``revdistill report``) draw from it with the same figures as
everywhere else (:mod:`revdistill.views.figures`). The page is self-contained: plotly.js is inlined from
the installed plotly package, styles are inline, and nothing is fetched from the network.
"""
from __future__ import annotations

import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd

__all__ = ["LoadedResults", "load_results", "read_results_table", "report_html", "write_report",
           "results_figures", "REPORT_GENERATOR"]

#: Marks a page written by :func:`write_report` (``revdistill report`` replaces only such a file).
REPORT_GENERATOR = "revdistill report"
_REQUIRED = ("assay", "scheme", "representation", "model", "dim", "spearman")
_TEXT_COLUMNS = ("fit_on", "fold_source", "uniprot_id", "selection_type", "target", "ladder_id", "naive_id",
                 "protocol_id", "note")


@dataclass
class LoadedResults:
    """A results table and what is drawn from it.

    Attributes
    ----------
    name : str
        The table's file name (or the upload's).
    table : DataFrame
        The results (:data:`revdistill.experiment.pipeline.RESULT_COLUMNS`).
    summary : DataFrame
        Spearman per series averaged over schemes and assays (:func:`~revdistill.experiment.aggregate.aggregate`).
    paired : DataFrame
        Paired differences (:func:`~revdistill.experiment.paired.paired_summary`).
    sources : dict of str to str
        Where each part came from (``table``, ``paired``, ``variants``), for the page to say.
    variants : mapping or None
        Scores and out-of-fold predictions per assay, from the job's results folder when present.
    """

    name: str
    table: pd.DataFrame
    summary: pd.DataFrame
    paired: pd.DataFrame
    sources: dict[str, str] = field(default_factory=dict)
    variants: Mapping[str, Any] | None = None

    @property
    def assays(self) -> list[str]:
        return list(dict.fromkeys(self.table["assay"]))

    @property
    def ladder_ids(self) -> list[str]:
        return sorted(set(self.table.get("ladder_id", pd.Series(dtype=str))) - {""})

    def notes(self, cache: str | Path | None = None) -> list:
        """:func:`~revdistill.experiment.deviations.method_notes` of the table, with the cached ladders' provenance."""
        from revdistill.experiment.deviations import ladder_provenance, method_notes  # noqa: PLC0415

        return method_notes(self.table, [ladder_provenance(i, cache) for i in self.ladder_ids] or [None])

    def caption(self) -> str:
        """Two lines: what the table holds and the ids that produced it."""
        from revdistill.experiment.pipeline import NOT_COMPARABLE  # noqa: PLC0415

        table = self.table
        ids = {c: sorted(set(table[c]) - {""}) for c in ("protocol_id", "ladder_id", "naive_id") if c in table}
        models = " → ".join(dict.fromkeys(table.loc[table["representation"] == "esm2", "model"]))
        return (f"{self.name}: {len(self.assays)} assay(s) · models {models} · schemes "
                f"{'/'.join(dict.fromkeys(table['scheme']))} ({NOT_COMPARABLE})\n"
                + " · ".join(f"{c.replace('_id', '')} {' '.join(v)}" for c, v in ids.items() if v))


def read_results_table(source: str | Path | bytes, name: str | None = None) -> pd.DataFrame:
    """Read a results CSV (a path or an upload's bytes); text columns keep empty strings.

    Raises
    ------
    ValueError
        Not a CSV, or a CSV without the results' columns (the message names the file and the columns).
    """
    label = name or (str(source) if not isinstance(source, bytes) else "the uploaded file")
    try:
        table = pd.read_csv(io.BytesIO(source) if isinstance(source, bytes) else Path(source))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise ValueError(f"{label} is not a results CSV of `revdistill proteingym` ({error})") from None
    missing = [c for c in _REQUIRED if c not in table.columns]
    if missing:
        raise ValueError(f"{label} is not a results table of `revdistill proteingym`: it lacks column(s) {missing} "
                         f"(it has {list(table.columns)[:8]})")
    if table.empty:
        raise ValueError(f"{label} holds no rows")
    _text_columns(table)
    table["dim"] = table["dim"].astype(int)
    return table


def load_results(source: str | Path | bytes, *, name: str | None = None, n_bootstrap: int = 1000, ci: float = 0.95,
                 seed: int = 0) -> LoadedResults:
    """Read a finished benchmark: a results CSV (path or bytes) or the job's results folder.

    With a path, ``<stem>.summary.csv`` beside it gives the paired differences (checked against the
    table's protocol ids); otherwise they are recomputed from the table, with the variants' predictions
    of the results folder ``<stem>.results/`` when the job left one (one-assay intervals need them).

    Parameters
    ----------
    source : path or bytes
        A results CSV, its bytes (an upload; then ``name`` names it), or a results folder.
    n_bootstrap, ci, seed
        Bootstrap settings of what is recomputed.
    """
    from revdistill.experiment.aggregate import aggregate  # noqa: PLC0415
    from revdistill.experiment.paired import paired_summary, read_summary, summary_path  # noqa: PLC0415

    sources: dict[str, str] = {}
    variants = None
    if not isinstance(source, bytes) and Path(source).is_dir():
        table, variants = _job_results(Path(source))
        name = name or Path(source).name
        sources["table"] = sources["variants"] = str(source)
        csv = None
    else:
        table = read_results_table(source, name)
        csv = None if isinstance(source, bytes) else Path(source)
        name = name or (csv.name if csv is not None else "uploaded results")
        sources["table"] = str(csv) if csv is not None else name
        from revdistill.experiment.job import results_folder  # noqa: PLC0415

        folder = None if csv is None else results_folder(csv)
        if folder is not None and folder.is_dir():
            try:
                _, variants = _job_results(folder)
                sources["variants"] = str(folder)
            except ValueError as error:
                sources["variants"] = f"not used ({error})"
    paired = None
    if csv is not None and summary_path(csv).is_file():
        paired = read_summary(summary_path(csv))
        ours = set(table.get("protocol_id", pd.Series(dtype=str))) - {""}
        theirs = {i for ids in paired["protocol_id"] for i in str(ids).split()} if "protocol_id" in paired else set()
        if theirs and ours and theirs != ours:
            raise ValueError(f"{summary_path(csv)} belongs to protocol(s) {sorted(theirs)}, {csv} to {sorted(ours)}: "
                             f"it is left from another run; delete it to recompute the paired differences")
        sources["paired"] = str(summary_path(csv))
    if paired is None:
        paired = paired_summary(table, variants, n_bootstrap=n_bootstrap, ci=ci, seed=seed)
        sources["paired"] = "recomputed from the table" + (" and the variants' predictions" if variants else "")
    if table["assay"].nunique() > 1:
        summary = aggregate(table, n_bootstrap=n_bootstrap, ci=ci, seed=seed)
    else:
        summary = aggregate(table, how=("mean",), n_bootstrap=0).assign(
            aggregation="single assay", aggregation_label=f"{table['assay'].iloc[0]} (one assay)",
            interval="none (the table alone has no predictions to resample)")
    return LoadedResults(name=name, table=table, summary=summary, paired=paired, sources=sources, variants=variants)


def _job_results(folder: Path):
    """The table and per-assay predictions of a job's results folder
    (:func:`revdistill.experiment.job.load_results`)."""
    from revdistill.experiment.job import load_results as load_job  # noqa: PLC0415

    table, variants = load_job(folder)
    _text_columns(table)
    return table, variants


def _text_columns(table: pd.DataFrame) -> None:
    """Text columns as ``str`` with ``""`` for missing values (CSV round trips read empty cells as NaN)."""
    for column in _TEXT_COLUMNS:
        if column in table.columns:
            text = table[column].astype(object)
            table[column] = text.where(text.notna(), "").astype(str)


def results_figures(loaded: LoadedResults, *, data_dir: str | Path | None = None, caption: str = ""):
    """The scaling figures of loaded results, each with its paired-difference panel: ``(by size, by prefix)``."""
    from revdistill.views.figures import prefix_figure, scaling_figure  # noqa: PLC0415

    return (scaling_figure(loaded.summary, caption=caption, data_dir=data_dir, paired=loaded.paired,
                           title=f"Spearman vs model size · {loaded.name}"),
            prefix_figure(loaded.summary, caption=caption, paired=loaded.paired,
                          title=f"Spearman vs prefix dimension · {loaded.name}"))


# ----------------------------------------------------------------------------------------------- the page
_STYLE = """
body { font: 14px/1.45 system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 24px auto; max-width: 1240px;
       color: #222; padding: 0 16px; }
h1 { font-size: 22px; } h2 { font-size: 17px; margin-top: 28px; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 12.5px; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 3px 7px; text-align: right; }
th { background: #f4f4f4; } td.text, th.text { text-align: left; }
table.sortable th { cursor: pointer; user-select: none; } table.sortable th:after { content: ' \\2195'; color: #aaa; }
.figures { display: flex; flex-wrap: wrap; gap: 8px; } .note { color: #555; font-size: 12.5px; }
.win { color: #1a7f37; } .loss { color: #b42318; } code { font-size: 12px; }
.scroll { max-height: 520px; overflow: auto; }
"""
# Sort a table by the clicked column: numbers numerically, text alphabetically; a second click reverses.
_SORT_JS = """
document.querySelectorAll('table.sortable').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, column) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      var ascending = th.getAttribute('data-order') !== 'asc';
      table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('data-order'); });
      th.setAttribute('data-order', ascending ? 'asc' : 'desc');
      function key(row) {
        var text = row.cells[column].getAttribute('data-value') || row.cells[column].textContent;
        var number = parseFloat(text);
        return isNaN(number) ? text.toLowerCase() : number;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (typeof x !== typeof y) { return (typeof x === 'number' ? -1 : 1) * (ascending ? 1 : -1); }
        return (x < y ? -1 : x > y ? 1 : 0) * (ascending ? 1 : -1);
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""


def _cell(value: Any, digits: int = 3) -> str:
    if isinstance(value, (float, np.floating)):
        if not np.isfinite(value):
            return "<td data-value=''>–</td>"
        return f"<td data-value='{value!r}'>{value:.{digits}f}</td>"
    if isinstance(value, (int, np.integer)):
        return f"<td data-value='{int(value)}'>{int(value)}</td>"
    return f"<td class='text'>{html.escape(str(value))}</td>"


def _html_table(frame: pd.DataFrame, css: str = "", digits: int = 3) -> str:
    head = "".join(f"<th class='{'' if pd.api.types.is_numeric_dtype(frame[c]) else 'text'}'>"
                   f"{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(_cell(v, digits) for v in row) + "</tr>"
                   for row in frame.itertuples(index=False))
    return f"<table class='{css}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _paired_table(paired: pd.DataFrame) -> str:
    if paired.empty:
        return "<p class='note'>No comparison has both members in this table.</p>"
    aggregation = "proteingym" if "proteingym" in set(paired["aggregation"]) else paired["aggregation"].iloc[0]
    chosen = paired[paired["aggregation"] == aggregation]
    frame = pd.DataFrame({
        "comparison": chosen["comparison_label"], "fit on": chosen["fit_on"], "model": chosen["model"],
        "dim": chosen["dim"].astype(int), "Δ Spearman": chosen["delta"], "low": chosen["ci_low"],
        "high": chosen["ci_high"], "assays": chosen["n_assays"].astype(int), "wins": chosen["wins"].astype(int),
        "losses": chosen["losses"].astype(int)})
    average = chosen["aggregation_label"].iloc[0] if "aggregation_label" in chosen else aggregation
    return (f"<p class='note'>Average: {html.escape(str(average))}; "
            f"interval: {int(round(100 * float(chosen['coverage'].iloc[0])))}% "
            f"{html.escape(str(chosen['interval'].iloc[0]))}. Wins/losses: assays whose scheme-averaged "
            f"difference is above/below zero.</p>" + _html_table(frame, "sortable paired"))


def _per_assay(table: pd.DataFrame) -> pd.DataFrame:
    """One row per assay: its facts and the scheme-averaged Spearman of ESM-2, RD and naive per level."""
    table = table[table["representation"].isin(["esm2", "rd", "naive"])]
    both = table.loc[table["fit_on"] != "", "fit_on"].nunique() > 1 if "fit_on" in table else False
    label = table["representation"].map({"esm2": "ESM-2", "rd": "RD", "naive": "naive"}) + " " + table["model"]
    if both:
        label = label + np.where(table["fit_on"] != "", " (" + table["fit_on"] + ")", "")
    values = table.assign(series=label).pivot_table(index="assay", columns="series", values="spearman",
                                                    aggfunc="mean", sort=False)
    first = table.groupby("assay", sort=False).first()
    facts = pd.DataFrame({"assay": values.index})
    for column in ("uniprot_id", "selection_type", "n_variants"):
        if column in first.columns:
            facts[column] = first.loc[values.index, column].to_numpy()
    if "fold_source" in table.columns:
        sources = table.groupby("assay", sort=False)["fold_source"].agg(lambda v: "/".join(sorted(set(v))))
        facts["folds"] = sources.loc[values.index].to_numpy()
    return pd.concat([facts, values.reset_index(drop=True)], axis=1)


def report_html(loaded: LoadedResults, *, data_dir: str | Path | None = None, cache: str | Path | None = None) -> str:
    """The report page of ``loaded``: one self-contained HTML document (works offline)."""
    import plotly.offline  # noqa: PLC0415

    from revdistill.experiment.aggregate import zero_shot_reference  # noqa: PLC0415
    from revdistill.experiment.deviations import ladder_provenance, method_notes  # noqa: PLC0415
    from revdistill.views.figures import prefix_figure, scaling_figure  # noqa: PLC0415

    table = loaded.table
    ladder_ids = loaded.ladder_ids
    provenances = [ladder_provenance(ladder_id, cache) for ladder_id in ladder_ids]
    notes = method_notes(table, provenances or [None])
    caption = loaded.caption() + "\n" + "; ".join(note.short for note in notes)
    reference = zero_shot_reference(data_dir)
    figures = [scaling_figure(loaded.summary, data_dir=data_dir, paired=loaded.paired),
               prefix_figure(loaded.summary, paired=loaded.paired)]  # the caption is the page's first paragraph
    config = {"displaylogo": False, "responsive": True}
    divs = "".join("<div>" + figure.update_layout(width=600).to_html(
        include_plotlyjs=False, full_html=False, config=config, div_id=f"figure-{i}") + "</div>"
        for i, figure in enumerate(figures))
    ids = "".join(f"<li><b>{html.escape(c)}</b>: <code>{html.escape(' '.join(sorted(set(table[c]) - {''})) or '–')}"
                  f"</code></li>" for c in ("protocol_id", "ladder_id", "naive_id") if c in table)
    ladders = "".join(
        f"<li><code>{html.escape(i)}</code>: " + (html.escape(
            f"{p.get('estimator', 'ladder')} ({p.get('regressor', '')}), fit on {p.get('fit_on', '')} inputs; corpus "
            f"{p.get('corpus', {}).get('name', '?')} ({p.get('corpus', {}).get('n_sequences', '?')} sequences, "
            f"{p.get('corpus', {}).get('n_residues', 0):,} residues); embedding {json.dumps(p.get('embedding', {}))}")
            if p else "not in this machine's cache (its provenance is not shown)") + "</li>"
        for i, p in zip(ladder_ids, provenances))
    notes_html = "".join(f"<li><b>{html.escape(n.topic)}</b>: {html.escape(n.detail)}</li>" for n in notes)
    sources = "".join(f"<li>{html.escape(k)}: <code>{html.escape(v)}</code></li>" for k, v in loaded.sources.items())
    zero_shot = (f"Grey dashed: ProteinGym's published <b>zero-shot</b> ESM-2 Spearman, for scale (a different task; "
                 f"not a probe) from <code>{html.escape(str(reference['source'].iloc[0]))}</code>: "
                 + ", ".join(f"{m} {v:.3f}" for m, v in zip(reference["model"], reference["spearman"])) + ".")
    series = loaded.summary[["representation", "fit_on", "model", "dim", "aggregation", "value", "ci_low", "ci_high",
                             "n_assays"]] if "fit_on" in loaded.summary else loaded.summary
    title = f"revdistill report · {loaded.name}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="generator" content="{REPORT_GENERATOR}">
<title>{html.escape(title)}</title><style>{_STYLE}</style>
<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script></head>
<body>
<h1>{html.escape(title)}</h1>
<p class="note">{html.escape(caption).replace(chr(10), '<br>')}</p>
<h2>Paired differences (the answer)</h2>
{_paired_table(loaded.paired)}
<h2>Scaling</h2>
<div class="figures">{divs}</div>
<p class="note">{zero_shot} Lower panels: paired differences with their intervals (bands); the zero line is no
difference.</p>
<h2>Per series</h2>
<div class="scroll">{_html_table(series, 'sortable series')}</div>
<h2>Per assay (Spearman averaged over schemes; click a column to sort)</h2>
<div class="scroll">{_html_table(_per_assay(table), 'sortable per-assay')}</div>
<h2>Protocol and ladders</h2>
<ul>{ids}{ladders}</ul>
<h2>What was done, and how it differs from the released method</h2>
<ul>{notes_html}</ul>
<h2>Files</h2>
<ul>{sources}</ul>
<script type="text/javascript">{_SORT_JS}</script>
</body></html>
"""


def write_report(results: str | Path, out: str | Path | None = None, *, data_dir: str | Path | None = None,
                 cache: str | Path | None = None, n_bootstrap: int = 1000, seed: int = 0) -> Path:
    """Write :func:`report_html` of a results CSV (or results folder) to ``out`` (default ``<stem>.report.html``)."""
    from revdistill.io.files import write_atomically  # noqa: PLC0415

    results = Path(results)
    out = Path(out) if out is not None else results.with_name(f"{results.stem}.report.html")
    page = report_html(load_results(results, n_bootstrap=n_bootstrap, seed=seed), data_dir=data_dir, cache=cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(out, lambda temporary: temporary.write_text(page, encoding="utf-8"))
