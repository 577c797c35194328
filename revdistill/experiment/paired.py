"""Paired answers: how much reverse distillation gains over ESM-2, the naive baseline and truncation.

The paper's claim is relative ("RD beats ESM-2 and naive at the same dimension"), so it is measured as
paired differences of Spearman on the same assays, schemes and variants:

- ``rd-esm2``: reverse-distilled minus ESM-2 at each level's width;
- ``rd-naive``: reverse-distilled minus the naive baseline of the same ladder;
- ``prefix-truncated``: the nested prefix minus the largest ESM-2 truncated to the same dimension.

Over several assays the difference is averaged the way ProteinGym averages
(:func:`revdistill.experiment.aggregate.aggregate` of the per-assay differences: the ProteinGym average
is linear, so the average of differences is the difference of averages) and its interval comes from the
paired bootstrap over UniProt × function units (resampling the differences is the same resample for
both members). On one assay the interval resamples its variants with the predictions held fixed
(:func:`~revdistill.experiment.aggregate.variant_replicates`, the single-assay summary's bootstrap).
``wins`` and ``losses`` count the assays whose scheme-averaged difference is above or below zero
(``ties``: within :data:`TIE` of it).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from revdistill.experiment.aggregate import aggregate, interval, variant_replicates, variant_resamples
from revdistill.experiment.protocol import LADDER_FREE

__all__ = ["COMPARISONS", "PAIRED_COLUMNS", "paired_summary", "paired_differences", "summary_path",
           "write_summary", "read_summary", "format_paired", "TIE"]

#: ``comparison -> (first representation, second representation, label)``: delta = first − second.
COMPARISONS: dict[str, tuple[str, str, str]] = {
    "rd-esm2": ("rd", "esm2", "RD − ESM-2"),
    "rd-naive": ("rd", "naive", "RD − naive"),
    "prefix-truncated": ("nested", "truncated", "RD prefix − largest ESM-2 truncated"),
}
PAIRED_COLUMNS = (
    "comparison", "comparison_label", "fit_on", "model", "dim", "aggregation", "delta", "ci_low", "ci_high",
    "n_assays", "wins", "losses", "ties", "n_missing", "se", "coverage", "interval", "first", "second", "scheme",
    "aggregation_label", "ladder_id", "protocol_id",
)
#: Differences within this of zero (rounding of the scheme average) count as ties, not wins or losses.
TIE = 1e-12
#: ``variants`` of :func:`paired_summary`: per assay, its scores and out-of-fold predictions per PredictionKey.
Variants = Mapping[str, tuple[np.ndarray, Mapping[tuple, np.ndarray]]]


def paired_differences(table: pd.DataFrame) -> pd.DataFrame:
    """Per-assay, per-scheme differences of every comparison whose two members both ran.

    Parameters
    ----------
    table : DataFrame
        A results table (:data:`revdistill.experiment.pipeline.RESULT_COLUMNS`).

    Returns
    -------
    DataFrame
        Columns ``comparison, fit_on, model, dim, assay, scheme, first, second, first_model, second_model,
        spearman`` (the difference), ``uniprot_id, selection_type, ladder_id, protocol_id``; one row per
        pair, in the order of :data:`COMPARISONS`, fit convention and dimension.
    """
    missing = [c for c in ("assay", "scheme", "representation", "model", "dim", "spearman") if c not in table]
    if missing:
        raise ValueError(f"the results table lacks column(s) {missing}; it must come from revdistill proteingym "
                         f"or run_experiment")
    table = table.assign(fit_on=table["fit_on"].fillna("").astype(str) if "fit_on" in table else "",
                         dim=table["dim"].astype(int))
    for column, default in (("uniprot_id", None), ("selection_type", "unknown"), ("ladder_id", ""),
                            ("protocol_id", "")):
        values = table[column].astype(object) if column in table else pd.Series(None, index=table.index, dtype=object)
        table[column] = values.where(values.notna(), table["assay"] if default is None else default)
    frames = []
    for comparison, (first, second, _) in COMPARISONS.items():
        ones = table[table["representation"] == first]
        others = table[table["representation"] == second]
        for fit_on in dict.fromkeys(ones["fit_on"]):
            mine = ones[ones["fit_on"] == fit_on]
            theirs = others[others["fit_on"] == ("" if second in LADDER_FREE else fit_on)]
            pairs = mine.merge(theirs[["assay", "scheme", "dim", "model", "spearman"]], on=["assay", "scheme", "dim"],
                               suffixes=("", "_second"), validate="one_to_one")
            if pairs.empty:
                continue
            frames.append(pd.DataFrame({
                "comparison": comparison, "fit_on": fit_on, "model": pairs["model"], "dim": pairs["dim"],
                "assay": pairs["assay"], "scheme": pairs["scheme"], "first": first, "second": second,
                "first_model": pairs["model"], "second_model": pairs["model_second"],
                "spearman": pairs["spearman"] - pairs["spearman_second"], "uniprot_id": pairs["uniprot_id"],
                "selection_type": pairs["selection_type"], "ladder_id": pairs["ladder_id"],
                "protocol_id": pairs["protocol_id"],
            }).sort_values("dim", kind="stable"))
    if not frames:
        return pd.DataFrame(columns=["comparison", "fit_on", "model", "dim", "assay", "scheme", "first", "second",
                                     "first_model", "second_model", "spearman", "uniprot_id", "selection_type",
                                     "ladder_id", "protocol_id"])
    return pd.concat(frames, ignore_index=True)


def paired_summary(table: pd.DataFrame, variants: Variants | None = None, *, n_bootstrap: int = 1000,
                   ci: float = 0.95, seed: int = 0, how: Sequence[str] = ("proteingym", "mean")) -> pd.DataFrame:
    """Paired differences per comparison, fit convention and dimension, averaged over schemes and assays.

    Parameters
    ----------
    table : DataFrame
        A results table (:data:`revdistill.experiment.pipeline.RESULT_COLUMNS`).
    variants : mapping, optional
        ``{assay: (scores (n,), {PredictionKey: predictions (n,)})}``; used when ``table`` holds one assay
        (the interval then resamples its variants). Without it a one-assay table gets no interval.
    n_bootstrap : int
        Bootstrap replicates (0: no intervals).
    ci : float
        Interval coverage.
    seed : int
        Seed of the bootstrap: the same inputs and seed give the same bytes.
    how : sequence of {"proteingym", "mean"}
        Averages over several assays (see :func:`~revdistill.experiment.aggregate.aggregate`).

    Returns
    -------
    DataFrame
        :data:`PAIRED_COLUMNS`; ``delta`` = first − second (``scheme == "average"``).
    """
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 0:
        raise ValueError(f"n_bootstrap={n_bootstrap!r} must be an integer >= 0")
    if not 0 < ci < 1:
        raise ValueError(f"ci={ci} must be between 0 and 1")
    differences = paired_differences(table)
    if differences.empty:
        return pd.DataFrame(columns=list(PAIRED_COLUMNS))
    keys = ["comparison", "fit_on", "model", "dim"]
    per_assay = differences.groupby(keys + ["assay"], sort=False)["spearman"].agg(lambda v: v.mean(skipna=False))
    counts = per_assay.groupby(level=keys, sort=False).agg(
        wins=lambda v: int((v > TIE).sum()), losses=lambda v: int((v < -TIE).sum()),
        ties=lambda v: int((v.abs() <= TIE).sum()))
    assays = list(dict.fromkeys(differences["assay"]))
    if len(assays) > 1:
        frame = differences.rename(columns={"comparison": "representation"})
        averaged = aggregate(frame, how=how, n_bootstrap=n_bootstrap, ci=ci, seed=seed)
        averaged = averaged.rename(columns={"representation": "comparison", "value": "delta"})
        if not n_bootstrap:
            averaged["interval"] = "none (n_bootstrap=0)"
    else:
        averaged = _one_assay(differences, assays[0], variants, n_bootstrap, ci, seed)
    averaged = averaged.merge(counts.reset_index(), on=keys, how="left")
    described = differences.groupby(keys, sort=False).agg(
        first=("first", "first"), second=("second", "first"),
        ladder_id=("ladder_id", lambda v: " ".join(sorted(set(v) - {""}))),
        protocol_id=("protocol_id", lambda v: " ".join(sorted(set(v) - {""})))).reset_index()
    averaged = averaged.merge(described, on=keys, how="left")
    averaged["comparison_label"] = averaged["comparison"].map(lambda c: COMPARISONS[c][2])
    averaged["dim"] = averaged["dim"].astype(int)
    return averaged[list(PAIRED_COLUMNS)]


def _one_assay(differences: pd.DataFrame, assay: str, variants: Variants | None, n_bootstrap: int, ci: float,
               seed: int) -> pd.DataFrame:
    """One assay: the scheme-averaged difference, interval over its variants (predictions held fixed)."""
    scores, predictions = (variants or {}).get(assay, (None, None))
    resampled = scores is not None and n_bootstrap > 0
    if resampled:
        resamples, score_ranks = variant_resamples(np.asarray(scores, dtype=np.float64), n_bootstrap, seed)
    rows = []
    keys = ["comparison", "fit_on", "model", "dim"]
    memo: dict[tuple, np.ndarray] = {}  # one prediction's replicates, shared by the comparisons it is in

    def replicates(key: tuple) -> np.ndarray:
        if key not in memo:
            memo[key] = variant_replicates([_prediction(predictions, assay, *key)], resamples, score_ranks)
        return memo[key]

    for values, group in differences.groupby(keys, sort=False):
        row = dict(zip(keys, values))
        delta = float(group["spearman"].mean(skipna=False))
        low = high = se = math.nan
        if resampled:
            second_fit = "" if group["second"].iloc[0] in LADDER_FREE else row["fit_on"]
            first = sum(replicates((pair.scheme, row["fit_on"], pair.first, pair.first_model, int(row["dim"])))
                        for pair in group.itertuples()) / len(group)
            second = sum(replicates((pair.scheme, second_fit, pair.second, pair.second_model, int(row["dim"])))
                         for pair in group.itertuples()) / len(group)
            low, high, se = interval(first - second, ci, delta)
        row.update({"scheme": "average", "aggregation": "single assay",
                    "aggregation_label": f"{assay} (one assay)", "delta": delta, "ci_low": low, "ci_high": high,
                    "se": se, "n_assays": int(math.isfinite(delta)), "n_missing": int(not math.isfinite(delta)),
                    "coverage": ci, "interval": "paired bootstrap over variants (predictions held fixed)"
                    if resampled else "none (one assay without its predictions)"})
        rows.append(row)
    return pd.DataFrame(rows)


def _prediction(predictions: Mapping[tuple, np.ndarray], assay: str, scheme: str, fit_on: str,
                representation: str, model: str, dim: int) -> np.ndarray:
    key = (scheme, fit_on, representation, model, int(dim))
    if key not in predictions:
        raise ValueError(f"variants[{assay!r}] has no out-of-fold predictions for {key}; it must hold the "
                         f"predictions of every row of the table (TaskResult.predictions)")
    return np.asarray(predictions[key], dtype=np.float64)


def summary_path(out_csv: str | Path) -> Path:
    """``<stem>.summary.csv`` beside a results table."""
    out_csv = Path(out_csv)
    return out_csv.with_name(f"{out_csv.stem}.summary.csv")


def write_summary(out_csv: str | Path, table: pd.DataFrame, variants: Variants | None = None, *,
                  n_bootstrap: int = 1000, ci: float = 0.95, seed: int = 0) -> Path:
    """Write :func:`paired_summary` to ``<stem>.summary.csv`` beside ``out_csv`` (all at once or not at all).

    Returns
    -------
    Path
        The summary file.
    """
    from revdistill.io.files import write_atomically  # noqa: PLC0415

    summary = paired_summary(table, variants, n_bootstrap=n_bootstrap, ci=ci, seed=seed)
    path = summary_path(out_csv)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(path, lambda temporary: summary.to_csv(temporary, index=False))


def read_summary(path: str | Path) -> pd.DataFrame:
    """Read a summary written by :func:`write_summary` (empty ids stay empty strings, not NaN)."""
    path = Path(path)
    summary = pd.read_csv(path)
    missing = [c for c in ("comparison", "dim", "delta", "ci_low", "ci_high", "n_assays", "wins", "losses")
               if c not in summary.columns]
    if missing:
        raise ValueError(f"{path} is not a paired summary: it lacks column(s) {missing}")
    unknown = sorted(set(summary["comparison"]) - set(COMPARISONS))
    if unknown:
        raise ValueError(f"{path}: comparison(s) {unknown} are unknown; known: {list(COMPARISONS)}")
    for column in ("fit_on", "ladder_id", "protocol_id", "model", "interval", "aggregation"):
        if column in summary.columns:
            summary[column] = summary[column].fillna("").astype(str)
    return summary


def format_paired(summary: pd.DataFrame, aggregation: str | None = None) -> str:
    """The key lines of a paired summary (one aggregation; default its first), for a terminal."""
    if summary.empty:
        return "paired differences: none (no comparison has both members in the table)"
    aggregation = aggregation or summary["aggregation"].iloc[0]
    chosen = summary[summary["aggregation"] == aggregation]
    lines = [f"paired differences of Spearman ({aggregation}; {chosen['interval'].iloc[0]}):"]
    for row in chosen.itertuples(index=False):
        fit = f" [fit on {row.fit_on}]" if row.fit_on else ""
        lines.append(f"  {row.comparison_label}{fit} dim {row.dim} ({row.model}): {row.delta:+.3f} "
                     f"[{row.ci_low:+.3f}, {row.ci_high:+.3f}]  wins {row.wins} / losses {row.losses} "
                     f"of {row.n_assays}")
    return "\n".join(lines)
