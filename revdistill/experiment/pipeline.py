"""One experiment for every front-end: tasks + models + reference ladders + protocol -> results.

:func:`run_experiment` embeds each task's records into a store (each task on its own, so a record's
embedding never depends on which other tasks run with it), reads the pooled vectors, builds every
representation from each reference ladder, runs the one probe (:mod:`revdistill.experiment.probe`)
for each CV scheme the protocol asks for, and returns an :class:`ExperimentResult`: one tidy table
(every row carries ``ladder_id``, ``naive_id`` and ``protocol_id``), the out-of-fold predictions,
and the embeddings the views need. ``revdistill proteingym``, the dashboard and the notebooks call it.
A result is a function of (data, models, ladders, protocol) only.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from revdistill.core.nested import NestedEmbedding
from revdistill.esm.interfaces import Embedder, EmbeddingStoreLike
from revdistill.experiment.aggregate import aggregate, interval, series_keys, variant_replicates, variant_resamples
from revdistill.experiment.features import FeatureKey, build_features
from revdistill.experiment.ladders import ReferenceLadder
from revdistill.experiment.probe import blas_threads, cross_validate
from revdistill.experiment.protocol import LADDER_FREE, REPRESENTATIONS, Protocol
from revdistill.experiment.tasks import Task

logger = logging.getLogger(__name__)

__all__ = ["RESULT_COLUMNS", "ExperimentResult", "TaskResult", "run_experiment", "pooled_rows", "default_store_path",
           "NOT_COMPARABLE", "summarize", "caption", "variant_summary"]

RESULT_COLUMNS = (
    "assay", "scheme", "fit_on", "representation", "model", "dim", "spearman", "mse", "n_variants",
    "fold_source", "alpha", "uniprot_id", "selection_type", "target", "ladder_id", "naive_id", "protocol_id",
    "note",
)
NOT_COMPARABLE = "our linear probe; not comparable to rows of the ProteinGym leaderboard"
#: ``progress(fraction, message)``: overall progress of a run (called from the running thread).
ProgressCallback = Callable[[float, str], None]
#: Key of one out-of-fold prediction vector: (scheme, fit_on, representation, model, dim).
PredictionKey = tuple[str, str, str, str, int]


@dataclass
class TaskResult:
    """Everything one task produced.

    Attributes
    ----------
    task : Task
    pooled : dict of str to ndarray of shape (n_records, dim)
        Mean-pooled raw embeddings, float64, in the task's record order.
    nested : dict of str to NestedEmbedding
        The reverse-distilled embedding per ladder id.
    naive : dict of str to dict of str to ndarray
        The naive baseline's levels per ladder id (empty when the ladder has no baseline).
    table : pandas.DataFrame
        The task's rows of the results table (:data:`RESULT_COLUMNS`).
    predictions : dict
        Out-of-fold predictions ``(n_records,)`` per :data:`PredictionKey`.
    """

    task: Task
    pooled: dict[str, np.ndarray]
    nested: dict[str, NestedEmbedding]
    naive: dict[str, dict[str, np.ndarray]]
    table: pd.DataFrame
    predictions: dict[PredictionKey, np.ndarray] = field(default_factory=dict)


@dataclass
class ExperimentResult:
    """The results of :func:`run_experiment`.

    Attributes
    ----------
    protocol : Protocol
    models : tuple of str
    ladders : list of ReferenceLadder
        The first is the primary one (views show its nested embedding).
    tasks : list of TaskResult
    seconds : dict of str to float
        Time spent embedding and probing.
    """

    protocol: Protocol
    models: tuple[str, ...]
    ladders: list[ReferenceLadder]
    tasks: list[TaskResult]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def table(self) -> pd.DataFrame:
        """The tidy results of every task (:data:`RESULT_COLUMNS`)."""
        return pd.concat([result.table for result in self.tasks], ignore_index=True)

    @property
    def schemes(self) -> tuple[str, ...]:
        """The CV schemes that ran (the protocol's, minus those no task could run)."""
        ran = set(self.table["scheme"])
        return tuple(scheme for scheme in self.protocol.schemes if scheme in ran)

    def summary(self, how: Sequence[str] = ("proteingym", "mean")) -> pd.DataFrame:
        """Spearman per series averaged over schemes and tasks, with intervals (:func:`summarize`)."""
        return summarize(self.table, self.variants, self.protocol, how=how)

    @property
    def variants(self) -> dict[str, tuple[np.ndarray, dict[PredictionKey, np.ndarray]]]:
        """Per task: its scores and out-of-fold predictions (what paired intervals on one assay resample)."""
        return {result.task.name: (result.task.scores, result.predictions) for result in self.tasks}

    def paired(self) -> pd.DataFrame:
        """Paired differences RD − ESM-2, RD − naive, RD prefix − truncated, with paired intervals
        (:func:`~revdistill.experiment.paired.paired_summary`, the protocol's bootstrap settings)."""
        from revdistill.experiment.paired import paired_summary  # noqa: PLC0415

        protocol = self.protocol
        return paired_summary(self.table, self.variants, n_bootstrap=protocol.n_bootstrap, ci=protocol.ci,
                              seed=protocol.bootstrap_seed)

    def caption(self) -> str:
        """What produced these numbers, in three lines: the protocol, the ladders (:func:`caption`), and the
        deviations from the released method (corpus overlap with test wild types, exact PCA, long sequences,
        folds)."""
        text = caption([result.task.name for result in self.tasks], self.models, self.protocol, self.schemes,
                       self.ladders)
        return f"{text}\n{'; '.join(note.short for note in self.notes())}"

    def notes(self) -> list:
        """Where this run departs from the released method and ProteinGym
        (:func:`~revdistill.experiment.deviations.method_notes`)."""
        from revdistill.experiment.deviations import method_notes  # noqa: PLC0415

        wild_types = {result.task.name: result.task.target_seq for result in self.tasks if result.task.target_seq}
        return method_notes(self.table, [getattr(ladder.ladder, "provenance_", None) for ladder in self.ladders],
                            wild_types=wild_types)


def summarize(table: pd.DataFrame, variants: Mapping[str, tuple[np.ndarray, Mapping[PredictionKey, np.ndarray]]],
              protocol: Protocol, how: Sequence[str] = ("proteingym", "mean")) -> pd.DataFrame:
    """Spearman per series averaged over schemes and tasks, with intervals.

    Several tasks: ProteinGym's average and the plain mean, bootstrap over UniProt × function units
    / assays (:func:`~revdistill.experiment.aggregate.aggregate`). One task: its Spearman averaged
    over schemes, bootstrap over variants (the same resampled variants for every scheme and series).

    Parameters
    ----------
    table : pandas.DataFrame
        Rows of :data:`RESULT_COLUMNS`.
    variants : mapping
        Assay name -> (true scores in record order ``(n_records,)``, out-of-fold predictions by
        :data:`PredictionKey`); used for one task only.
    protocol : Protocol
    """
    if table["assay"].nunique() > 1:
        return aggregate(table, how=how, n_bootstrap=protocol.n_bootstrap, ci=protocol.ci,
                         seed=protocol.bootstrap_seed)
    name = str(table["assay"].iloc[0])
    scores, predictions = variants[name]
    return variant_summary(name, table, scores, predictions, protocol)


def caption(names: Sequence[str], models: Sequence[str], protocol: Protocol, schemes: Sequence[str],
            ladders: Sequence[ReferenceLadder]) -> str:
    """Two lines naming what produced a table: tasks, models, protocol as it ran, then the ladders."""
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    described = "; ".join(ladder.describe() for ladder in ladders)
    return (f"{shown} · models {' → '.join(models)} · {protocol.describe(schemes)} "
            f"({NOT_COMPARABLE})\n{described}")


def run_experiment(tasks: Sequence[Task], models: Sequence[str], ladders: Sequence[ReferenceLadder],
                   protocol: Protocol, *, store: EmbeddingStoreLike, embedder: Embedder,
                   progress: ProgressCallback | None = None) -> ExperimentResult:
    """Embed, build every representation from each ladder, and probe every task.

    Parameters
    ----------
    tasks : sequence of Task
    models : sequence of str
        Ladder levels, small to large; every ladder must have exactly these levels.
    ladders : sequence of ReferenceLadder
        One per fit convention to compare (the first is the primary one).
    protocol : Protocol
    store : EmbeddingStore
        Where embeddings are kept (reused across runs).
    embedder : LocalEmbedder or WorkerEmbedder
        Embeds what the store lacks.
    progress : callable, optional
        ``progress(fraction, message)``.
    """
    report = progress or (lambda fraction, message: None)
    models = tuple(models)
    _check_inputs(tasks, models, ladders)
    seconds = {"embed": 0.0, "probe": 0.0}
    results = []
    for index, task in enumerate(tasks):
        share = (index / len(tasks), (index + 1) / len(tasks))
        start = time.perf_counter()

        def on_progress(done: int, total: int, share=share, task=task) -> None:
            fraction = share[0] + (share[1] - share[0]) * 0.5 * done / max(total, 1)
            report(fraction, f"{task.name}: embedded {done} / {total} new sequences")

        report(share[0], f"{task.name}: embedding {len(task)} sequences (stored ones are skipped)")
        embedder.embed(store, task.records, models, on_progress=on_progress)
        pooled = pooled_rows(store, models, [record_id for record_id, _ in task.records])
        seconds["embed"] += time.perf_counter() - start
        start = time.perf_counter()
        results.append(_probe_task(task, pooled, ladders, protocol,
                                   lambda f, m, share=share:
                                   report(share[0] + (share[1] - share[0]) * (0.5 + 0.5 * f), m)))
        seconds["probe"] += time.perf_counter() - start
    report(1.0, "done")
    return ExperimentResult(protocol=protocol, models=models, ladders=list(ladders), tasks=results, seconds=seconds)


def _check_inputs(tasks: Sequence[Task], models: tuple[str, ...], ladders: Sequence[ReferenceLadder]) -> None:
    if not tasks:
        raise ValueError("no tasks: give at least one assay or data set")
    if not ladders:
        raise ValueError("no ladder: give at least one reference ladder")
    for ladder in ladders:
        if ladder.models != models:
            raise ValueError(f"ladder {ladder.ladder_id} has levels {list(ladder.models)}; the run uses models "
                             f"{list(models)}")
    ids = [ladder.ladder_id for ladder in ladders]
    conventions = [ladder.fit_on for ladder in ladders]
    if len(set(ids)) != len(ids) or len(set(conventions)) != len(conventions):
        raise ValueError(f"ladders must differ in fit convention; got {list(zip(ids, conventions))}")
    names = [task.name for task in tasks]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"tasks {repeated} are given more than once")


def default_store_path(task: Task | None, models: Sequence[str], numerics: dict[str, Any],
                       cache: str | Path | None = None) -> Path:
    """Where a task's embeddings are kept by default (the CLI's and the dashboard's one rule).

    ProteinGym assays read by id (``task.from_benchmark``, or ``task=None`` for "the benchmark") share one
    store per models and embedding numerics, so a subsample, a rerun or another front-end embeds nothing
    again; other data (uploads, CSVs) get a store named by their content (:attr:`Task.key`), so two
    uploads that reuse record names never collide.
    """
    from revdistill.io.paths import cache_dir  # noqa: PLC0415

    key = "proteingym" if task is None or task.from_benchmark else task.key
    suffix = "-".join(str(value) for _, value in sorted(numerics.items()))
    return cache_dir("stores", cache) / f"{key}_{'_'.join(models)}_{suffix}.h5"


def pooled_rows(store: EmbeddingStoreLike, models: Sequence[str], ids: Sequence[str]) -> dict[str, np.ndarray]:
    """Pooled vectors of ``ids`` (in that order) per model, float64."""
    stored = store.ids()
    row_of = {record_id: row for row, record_id in enumerate(stored)}
    missing = [record_id for record_id in ids if record_id not in row_of]
    if missing:
        raise RuntimeError(f"store {store.path} lacks {len(missing)} record(s) just embedded, e.g. {missing[:3]}")
    rows = np.fromiter((row_of[record_id] for record_id in ids), dtype=np.int64, count=len(ids))
    pooled = {}
    for model in models:
        _, values = store.pooled(model)
        pooled[model] = np.asarray(values[rows], dtype=np.float64)
    return pooled


def _probe_task(task: Task, pooled: dict[str, np.ndarray], ladders: Sequence[ReferenceLadder], protocol: Protocol,
                report: ProgressCallback) -> TaskResult:
    """Features of every ladder, then the probe on each distinct matrix and scheme (each fitted once)."""
    dims = protocol.prefix_dims([array.shape[1] for array in pooled.values()])
    jobs: list[tuple[ReferenceLadder | None, FeatureKey, np.ndarray]] = []
    nested, naive = {}, {}
    for index, ladder in enumerate(ladders):
        wanted = [r for r in protocol.representations if index == 0 or r not in LADDER_FREE]
        features = build_features(pooled, ladder.ladder, ladder.naive, dims, wanted)
        jobs += [(None if key.representation in LADDER_FREE else ladder, key, array)
                 for key, array in features.items()]
        nested[ladder.ladder_id] = ladder.ladder.transform(pooled)
        naive[ladder.ladder_id] = ladder.naive.transform(pooled) if ladder.naive is not None else {}
    schemes = task.schemes(protocol)
    if not schemes:
        raise ValueError(f"{task.name}: none of the protocol's schemes {list(protocol.schemes)} can run on it "
                         f"(it has {sorted(task.folds)})")
    rows, predictions, cache = [], {}, {}
    total = len(schemes) * len(jobs)
    with blas_threads(1):
        for s_index, scheme in enumerate(schemes):
            for j_index, (ladder, key, array) in enumerate(jobs):
                memo = (scheme, id(array))
                if memo not in cache:
                    cache[memo] = cross_validate(array, task.scores, task.folds[scheme], alphas=protocol.alphas,
                                                 inner_folds=protocol.inner_folds, random_state=protocol.inner_seed,
                                                 threads=None)
                result = cache[memo]
                fit_on = "" if ladder is None else ladder.fit_on
                predictions[(scheme, fit_on, key.representation, key.model, key.dim)] = result.predictions
                rows.append(_row(task, scheme, key, result, ladder, protocol, fit_on))
                report((s_index * len(jobs) + j_index + 1) / total,
                       f"{task.name}: {REPRESENTATIONS[key.representation]} {key.model} dim {key.dim} ({scheme})")
    table = pd.DataFrame(rows, columns=list(RESULT_COLUMNS))
    return TaskResult(task=task, pooled=pooled, nested=nested, naive=naive, table=table, predictions=predictions)


def _row(task: Task, scheme: str, key: FeatureKey, result: Any, ladder: ReferenceLadder | None,
         protocol: Protocol, fit_on: str) -> dict[str, Any]:
    return {
        "assay": task.name, "scheme": scheme, "fit_on": fit_on, "representation": key.representation,
        "model": key.model, "dim": int(key.dim), "spearman": result.spearman, "mse": result.mse,
        "n_variants": len(task), "fold_source": task.fold_source[scheme], "alpha": float(np.median(result.alphas)),
        "uniprot_id": task.uniprot_id or task.name, "selection_type": task.selection_type,
        "target": task.target.split(":")[0], "ladder_id": "" if ladder is None else ladder.ladder_id,
        "naive_id": "" if ladder is None else ladder.naive_id, "protocol_id": protocol.id, "note": result.note,
    }


def variant_summary(name: str, table: pd.DataFrame, scores: np.ndarray,
                    predictions: Mapping[PredictionKey, np.ndarray], protocol: Protocol) -> pd.DataFrame:
    """One task: Spearman averaged over schemes per series, bootstrap interval over variants.

    Every series and scheme sees the same resampled variants, predictions held fixed
    (:func:`~revdistill.experiment.aggregate.variant_replicates`).
    """
    keys = series_keys(table)
    resamples, score_ranks = variant_resamples(scores, protocol.n_bootstrap, protocol.bootstrap_seed)
    rows_out = []
    for values, group in table.groupby(keys, sort=False):
        row = dict(zip(keys, values))
        value = float(group["spearman"].mean(skipna=False))
        series = [predictions[(scheme, row.get("fit_on", ""), row["representation"], row["model"],
                                           int(row["dim"]))] for scheme in group["scheme"]]
        low, high, se = interval(variant_replicates(series, resamples, score_ranks), protocol.ci, value)
        row.update({"dim": int(row["dim"]), "scheme": "average", "aggregation": "single assay",
                    "aggregation_label": f"{name} (one assay)", "metric": "spearman", "value": value,
                    "ci_low": low, "ci_high": high, "se": se, "n_assays": 1,
                    "n_missing": int(not math.isfinite(value)), "coverage": protocol.ci,
                    "interval": "bootstrap over variants"})
        rows_out.append(row)
    return pd.DataFrame(rows_out)
