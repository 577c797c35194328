"""Aggregating per-assay probe results the way ProteinGym does, with bootstrap intervals.

- ``"mean"``: plain mean over assays;
- ``"proteingym"``: ProteinGym's leaderboard average: mean per (UniProt ID, coarse selection type), then
  per selection type (5 functions), then the mean of those; per CV scheme, then averaged over schemes.

Bootstrap intervals resample assays (plain mean) or UniProt × function units within each function
(ProteinGym), the resampling ProteinGym uses for its standard errors.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from revdistill.proteingym.data import resolve_data_dir

__all__ = ["AGGREGATIONS", "ZERO_SHOT_FALLBACK", "proteingym_average", "aggregate", "series_keys",
           "zero_shot_reference", "variant_resamples", "variant_replicates", "interval"]

AGGREGATIONS = {
    "mean": "plain mean over assays",
    "proteingym": "ProteinGym average (UniProt × function → function → mean)",
}
ZERO_SHOT_FALLBACK = {"8M": 0.226, "35M": 0.321, "150M": 0.387, "650M": 0.414, "3B": 0.406, "15B": 0.400}
_ZERO_SHOT_PATHS = (
    "benchmarks/DMS_zero_shot/substitutions/Spearman/Summary_performance_DMS_substitutions_Spearman.csv",
    "Summary_performance_DMS_substitutions_Spearman.csv",
)


def proteingym_average(values: pd.DataFrame, uniprot: pd.Series, function: pd.Series) -> pd.DataFrame:
    """ProteinGym's average of per-assay values for one CV scheme.

    Parameters
    ----------
    values : DataFrame
        ``(n_assays, n_models)``, indexed by assay id.
    uniprot, function : Series
        UniProt ID and coarse selection type per assay id.

    Returns
    -------
    DataFrame
        ``(n_models, n_functions + 1)``: columns ``Function_<type>`` and ``Average``.
    """
    missing = values.index.difference(uniprot.index).union(values.index.difference(function.index))
    if len(missing):
        raise ValueError(f"no UniProt ID / selection type for assay(s) {missing.tolist()[:5]}")
    frame = values.assign(_uniprot=uniprot.reindex(values.index).to_numpy(),
                          _function=function.reindex(values.index).to_numpy())
    per_unit = frame.groupby(["_uniprot", "_function"]).mean()
    per_function = per_unit.groupby(level="_function").mean()
    table = per_function.T
    table.columns = [f"Function_{c}" for c in table.columns]
    table["Average"] = per_function.mean(axis=0)
    return table


def _bootstrap_proteingym(units: pd.DataFrame, n_bootstrap: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap replicates of the ProteinGym average: resample units within each function."""
    total = np.zeros(n_bootstrap)
    groups = list(units.groupby("function")["value"])
    for _, group in groups:
        v = group.to_numpy()
        total += v[rng.integers(0, len(v), size=(n_bootstrap, len(v)))].mean(axis=1)
    return total / len(groups)


def variant_resamples(scores: np.ndarray, n_bootstrap: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap resamples of one assay's variants, shared by every series compared on it.

    Parameters
    ----------
    scores : ndarray of shape (n_variants,)
        The measured scores.
    n_bootstrap : int
    seed : int

    Returns
    -------
    resamples : ndarray of shape (n_bootstrap, n_variants)
        Variant indices drawn with replacement.
    score_ranks : ndarray of shape (n_bootstrap, n_variants)
        Ranks of the scores on the whole assay, taken at ``resamples``.
    """
    from scipy.stats import rankdata  # noqa: PLC0415

    n = len(scores)
    resamples = np.random.default_rng(seed).integers(0, n, size=(n_bootstrap, n))
    return resamples, rankdata(scores)[resamples]


def variant_replicates(predictions: Sequence[np.ndarray], resamples: np.ndarray,
                       score_ranks: np.ndarray) -> np.ndarray:
    """Bootstrap replicates of a Spearman averaged over schemes, predictions held fixed.

    Each replicate takes the Pearson correlation of the ranks computed on the whole assay at the
    resampled variants (ranking every resample again costs ~50x more and moves the bounds in the third
    decimal). Two series given the same ``resamples`` are paired: their difference is the paired replicate.

    Parameters
    ----------
    predictions : sequence of ndarray of shape (n_variants,)
        Out-of-fold predictions, one per scheme (averaged).
    resamples, score_ranks : ndarray of shape (n_bootstrap, n_variants)
        From :func:`variant_resamples`.

    Returns
    -------
    ndarray of shape (n_bootstrap,)
        NaN where a resample leaves a prediction constant.
    """
    from scipy.stats import rankdata  # noqa: PLC0415

    replicates = np.zeros(len(resamples))
    for prediction in predictions:
        replicates += _pearson_rows(rankdata(prediction)[resamples], score_ranks)
    return replicates / max(len(predictions), 1)


def interval(replicates: np.ndarray, ci: float, value: float = 0.0) -> tuple[float, float, float]:
    """``(low, high, se)`` of the finite bootstrap ``replicates``; the bounds are NaN when there are none or
    ``value`` is NaN, the standard error when fewer than two."""
    good = replicates[np.isfinite(replicates)]
    se = float(good.std(ddof=1)) if len(good) > 1 else math.nan
    if not len(good) or not math.isfinite(value):
        return math.nan, math.nan, se
    low, high = np.quantile(good, [(1 - ci) / 2, (1 + ci) / 2])
    return float(low), float(high), se


def _pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of each row of ``a`` with the same row of ``b``, ``(n_rows,)`` (NaN if constant)."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    denominator = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, (a * b).sum(axis=1) / denominator, np.nan)


def series_keys(results: pd.DataFrame) -> list[str]:
    """Columns that identify one curve point: ``fit_on`` (when present), representation, model, dim."""
    return [key for key in ("fit_on", "representation", "model", "dim") if key in results.columns]


def aggregate(
    results: pd.DataFrame, metric: str = "spearman", how: Sequence[str] = ("proteingym", "mean"), *,
    by_scheme: bool = False, n_bootstrap: int = 1000, ci: float = 0.95, seed: int = 0,
) -> pd.DataFrame:
    """Aggregate a tidy result table over assays, with bootstrap intervals over assays / units.

    Parameters
    ----------
    results : DataFrame
        From :func:`revdistill.experiment.pipeline.run_experiment` (``uniprot_id`` and
        ``selection_type`` drive the ProteinGym grouping; without them, or for assays absent from the
        reference, each assay is its own unit and ``"unknown"`` its function).
    metric : {"spearman", "mse"}
    how : sequence of {"proteingym", "mean"}
    by_scheme : bool
        One row per scheme instead of the average over schemes (``scheme == "average"``).
    n_bootstrap : int
        Bootstrap replicates (0 disables the intervals).

    Returns
    -------
    DataFrame
        Columns ``[fit_on,] representation, model, dim, scheme, aggregation, aggregation_label, metric,
        value, ci_low, ci_high, se, n_assays, n_missing, coverage, interval``; ``n_missing`` counts assays whose
        metric is undefined (left out of the average, never silently).
    """
    if metric not in ("spearman", "mse"):
        raise ValueError(f"metric={metric!r}; choose 'spearman' or 'mse'")
    for name in how:
        if name not in AGGREGATIONS:
            raise ValueError(f"how={name!r}; choose from {list(AGGREGATIONS)}")
    if not 0 < ci < 1:
        raise ValueError(f"ci={ci} must be between 0 and 1")
    missing = [c for c in ("assay", "scheme", "representation", "model", "dim", metric) if c not in results.columns]
    if missing:
        raise ValueError(f"results lack column(s) {missing}")
    keys = series_keys(results)
    table = results.copy()
    if not by_scheme:
        table = _average_schemes(table, metric, keys)
    rng = np.random.default_rng(seed)
    rows = []
    for values, group in table.groupby(keys + ["scheme"], sort=False):
        n_missing = int(group[metric].isna().sum())
        group = group.dropna(subset=[metric])
        units = pd.DataFrame({
            "value": group[metric].to_numpy(),
            "uniprot": group.get("uniprot_id", group["assay"]).fillna(group["assay"]).to_numpy(),
            "function": group.get("selection_type", pd.Series("unknown", index=group.index))
                             .fillna("unknown").to_numpy(),
        })
        for name in how:
            if units.empty:
                value, replicates = math.nan, np.array([])
            elif name == "mean":
                value = float(units["value"].mean())
                v = units["value"].to_numpy()
                replicates = (v[rng.integers(0, len(v), size=(n_bootstrap, len(v)))].mean(axis=1) if n_bootstrap
                              else np.array([]))
            else:
                per_unit = units.groupby(["uniprot", "function"], as_index=False)["value"].mean()
                value = float(per_unit.groupby("function")["value"].mean().mean())
                replicates = _bootstrap_proteingym(per_unit, n_bootstrap, rng) if n_bootstrap else np.array([])
            low, high = (np.quantile(replicates, [(1 - ci) / 2, (1 + ci) / 2]) if len(replicates)
                         else (math.nan, math.nan))
            row = dict(zip(keys + ["scheme"], values))
            row.update({
                "dim": int(row["dim"]), "aggregation": name, "aggregation_label": AGGREGATIONS[name], "metric": metric,
                "value": value, "ci_low": float(low), "ci_high": float(high),
                "se": float(replicates.std(ddof=1)) if len(replicates) > 1 else math.nan, "n_assays": len(units),
                "n_missing": n_missing, "coverage": float(ci),
                "interval": "bootstrap over assays" if name == "mean" else
                "bootstrap over UniProt × function units",
            })
            rows.append(row)
    return pd.DataFrame(rows)


def _average_schemes(table: pd.DataFrame, metric: str, keys: list[str]) -> pd.DataFrame:
    """Per (series, assay): mean over schemes; all assays must share the schemes."""
    group_keys = keys + ["assay"]
    schemes_per_assay = table.groupby(group_keys)["scheme"].agg(lambda s: tuple(sorted(set(s))))
    per_group = schemes_per_assay.groupby(level=list(range(len(keys)))).nunique()
    if (per_group > 1).any():
        bad = per_group[per_group > 1].index.tolist()[:3]
        raise ValueError(f"assays were run with different CV schemes within {bad}; aggregate with by_scheme=True")
    extra = [c for c in ("uniprot_id", "selection_type") if c in table.columns]
    averaged = table.groupby(group_keys, as_index=False, sort=False).agg(
        **{metric: (metric, lambda v: v.mean(skipna=False))}, **{c: (c, "first") for c in extra})
    averaged["scheme"] = "average"
    return averaged


def zero_shot_reference(data_dir: str | Path | None = None) -> pd.DataFrame:
    """ProteinGym's published **zero-shot** Spearman of ESM-2 8M..15B (the reference curve).

    Read from ``Summary_performance_DMS_substitutions_Spearman.csv`` of the zero-shot benchmark in
    ``data_dir`` (see :func:`~revdistill.proteingym.resolve_data_dir`); when that file is absent the
    v1.3 values are used as built-in constants. The ``source`` column says which.

    Returns
    -------
    DataFrame
        Columns ``model`` (``8M`` ...), ``params``, ``spearman``, ``label``, ``source``.
    """
    from revdistill.esm.models.registry import get_spec  # noqa: PLC0415

    values, source = dict(ZERO_SHOT_FALLBACK), "built-in constants (ProteinGym v1.3 zero-shot leaderboard)"
    try:
        folder = resolve_data_dir(data_dir)
    except FileNotFoundError:
        folder = None
    for relative in _ZERO_SHOT_PATHS if folder is not None else ():
        path = folder / relative
        if not path.exists():
            continue
        summary = pd.read_csv(path).set_index("Model_name")
        names = {alias: f"ESM2 ({alias})" for alias in ZERO_SHOT_FALLBACK}
        if all(n in summary.index for n in names.values()) and "Average_Spearman" in summary.columns:
            values = {alias: float(summary.loc[n, "Average_Spearman"]) for alias, n in names.items()}
            source = str(path)
            break
    return pd.DataFrame({
        "model": list(values), "params": [get_spec(m).params for m in values], "spearman": list(values.values()),
        "label": "ESM-2 zero-shot (ProteinGym leaderboard)", "source": source,
    })
