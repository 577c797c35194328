"""The benchmark as a resumable job: one committed part per assay in a results folder beside ``--out``.

The unit of work is one assay: its variants embedded with every size, then its probe rows, out-of-fold
predictions and true scores (record order), written as one ``.npz`` (no pickle) that appears all at
once (:func:`revdistill.io.files.save_npz`: temporary name, fsync, rename). The folder is::

    <out stem>.results/
        manifest.json         the job's identity (protocol id, models, numerics, ladder ids, assays, inputs)
        <assay>.npz           one committed part per finished assay
        .claims/<run id>/     which rank of a running job took which assay (removed when the job ends)

A rerun of the same command skips the assays whose part exists; ``kill -9`` loses at most the assays in
flight; a rerun with other settings is refused (:func:`open_results`) rather than mixing results. Ranks
of a ``torchrun`` job claim the next unfinished assay, largest first, with an exclusive create of a
claim file (a dead rank's claimed but uncommitted assay has no part, so the next run does it again).
The table is assembled from the parts in the job's assay order (:func:`load_results`), so it has the
same bytes however the work was split, interrupted or resumed.

>>> results_folder("runs/all.csv")
PosixPath('runs/all.results')
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from revdistill.io.files import encode_meta, file_lock, load_npz, read_meta, save_npz, write_atomically
from revdistill.experiment.pipeline import PredictionKey, TaskResult, run_experiment

logger = logging.getLogger(__name__)

__all__ = ["JobSpec", "JobProgress", "RankEmbedder", "results_folder", "part_path", "open_results", "write_part",
           "read_part", "load_results", "run_job", "wait_for_parts", "finish_job", "MANIFEST_NAME"]

MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT, MANIFEST_VERSION = "revdistill-benchmark-job", 1
PART_FORMAT, PART_VERSION = "revdistill-benchmark-part", 1
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
#: ``on_done(progress)`` after each assay this process committed.
DoneCallback = Callable[["JobProgress"], None]
Variants = dict[str, tuple[np.ndarray, dict[PredictionKey, np.ndarray]]]


def results_folder(out: str | Path) -> Path:
    """The results folder of a job writing ``out``: ``<out stem>.results`` beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}.results")


def part_path(folder: str | Path, name: str) -> Path:
    """Where the committed part of assay ``name`` lives (unusual characters replaced, plus a digest)."""
    if _SAFE_NAME.fullmatch(name) and name != MANIFEST_NAME:
        return Path(folder) / f"{name}.npz"
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return Path(folder) / f"{re.sub(r'[^A-Za-z0-9._+-]', '_', name)[:80]}-{digest}.npz"


@dataclass(frozen=True)
class JobSpec:
    """What a job's results depend on; a results folder holds the results of one spec only.

    Attributes
    ----------
    protocol_id : str
        :attr:`revdistill.experiment.protocol.Protocol.id`.
    models : tuple of str
        Ladder levels, small to large.
    numerics : tuple of (str, value)
        Embedding settings that change the numbers (:meth:`EmbedOptions.numerics`).
    assays : tuple of str
        Assay names in the order of the final table.
    inputs : tuple of (str, str)
        ``(assay, sha256)`` of the assays given as CSV files (ProteinGym ids are named by their id).
    ladders : tuple of (str, str, str)
        ``(fit convention, ladder id, naive id)`` of each reference ladder; empty while not yet known.
    """

    protocol_id: str
    models: tuple[str, ...]
    numerics: tuple[tuple[str, Any], ...]
    assays: tuple[str, ...]
    inputs: tuple[tuple[str, str], ...] = ()
    ladders: tuple[tuple[str, str, str], ...] = ()

    def __post_init__(self) -> None:
        repeated = sorted({name for name in self.assays if self.assays.count(name) > 1})
        if repeated:
            raise ValueError(f"assays {repeated} are given more than once; give each assay once")
        if not self.assays:
            raise ValueError("a job needs at least one assay")

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to the manifest (lists, not tuples)."""
        return json.loads(json.dumps(asdict(self)))

    @property
    def job_id(self) -> str:
        """``job-`` and 12 hex digits of the SHA-256 of :meth:`to_dict` (ladders included)."""
        text = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return "job-" + hashlib.sha256(text.encode()).hexdigest()[:12]


_FIELD_LABELS = {"protocol_id": "protocol", "models": "models", "numerics": "embedding numerics",
                 "assays": "assays", "inputs": "assay files (sha256)", "ladders": "reference ladders"}


def open_results(folder: str | Path, spec: JobSpec, *, ladders_known: bool = True) -> Path:
    """Create the results folder with ``spec``'s manifest, or check that the folder holds this job.

    Parameters
    ----------
    folder : path
    spec : JobSpec
    ladders_known : bool
        False: check everything but the ladders (before they are fitted) and write nothing yet.

    Raises
    ------
    ValueError
        The folder holds another job's results (the message names what differs and what to do), or
        its manifest is not one.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not ladders_known and not path.is_file():
        return folder  # nothing to compare with, and nothing is written before the ladders are known
    folder.mkdir(parents=True, exist_ok=True)
    wanted = spec.to_dict()
    with file_lock(folder / ".manifest.lock"):
        if path.is_file():
            stored = _read_manifest(path)
            keys = [key for key in wanted if ladders_known or key != "ladders"]
            different = [key for key in keys if stored["spec"].get(key) != wanted[key]]
            if different:
                lines = "; ".join(f"{_FIELD_LABELS[key]}: {_short(stored['spec'].get(key))} there, "
                                  f"{_short(wanted[key])} now" for key in different)
                raise ValueError(f"results folder {folder} holds another job ({stored['job_id']}): {lines}. Rerun "
                                 f"with the settings it was started with to resume it, or give another --out "
                                 f"(or delete {folder} to start over)")
        elif ladders_known:
            text = json.dumps({"format": MANIFEST_FORMAT, "version": MANIFEST_VERSION, "job_id": spec.job_id,
                               "spec": wanted}, indent=1, sort_keys=True) + "\n"
            write_atomically(path, lambda temporary: temporary.write_text(text))
    return folder


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 160 else f"{text[:150]}... ({len(value)} entries)"


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path} is not a job manifest (not JSON: {error}); move it away or give another --out") \
            from error
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT \
            or not isinstance(manifest.get("spec"), dict):
        raise ValueError(f"{path} is not a revdistill job manifest (format {MANIFEST_FORMAT!r}); move it away "
                         f"or give another --out")
    if manifest.get("version") != MANIFEST_VERSION:
        raise ValueError(f"{path}: job manifest version {manifest.get('version')!r}; this revdistill reads version "
                         f"{MANIFEST_VERSION}; give another --out")
    return manifest


# ------------------------------------------------------------------------------------------ parts
def write_part(folder: str | Path, job_id: str, result: TaskResult, seconds: float = 0.0) -> Path:
    """Commit one assay's rows, true scores and out-of-fold predictions (float64) as one npz, atomically."""
    table = result.table
    columns, arrays = [], {}
    for index, column in enumerate(table.columns):
        values = table[column]
        kind = str(values.dtype)
        if kind in ("float64", "int64", "bool"):
            arrays[f"column_{index:03d}"] = values.to_numpy()
        else:
            missing = values.isna().to_numpy()
            cells = ["" if gone else value for value, gone in zip(values.tolist(), missing)]
            if not all(isinstance(cell, str) for cell in cells):
                raise TypeError(f"column {column!r} of {result.task.name} holds non-text values of dtype {kind}")
            arrays[f"column_{index:03d}"] = np.array(cells, dtype=str)
            arrays[f"missing_{index:03d}"] = missing
        columns.append({"name": str(column), "dtype": kind})
    keys = list(result.predictions)
    for index, key in enumerate(keys):
        arrays[f"prediction_{index:05d}"] = np.asarray(result.predictions[key], dtype=np.float64)
    arrays["scores"] = np.asarray(result.task.scores, dtype=np.float64)
    arrays["ids"] = np.array([record_id for record_id, _ in result.task.records], dtype=str)
    arrays["meta"] = encode_meta({"format": PART_FORMAT, "version": PART_VERSION, "job_id": job_id,
                                  "assay": result.task.name, "columns": columns,
                                  "prediction_keys": [list(key) for key in keys], "seconds": round(seconds, 3)})
    return save_npz(part_path(folder, result.task.name), arrays)


def read_part(path: str | Path, job_id: str | None = None) -> tuple[str, pd.DataFrame, np.ndarray,
                                                                     dict[PredictionKey, np.ndarray]]:
    """``(assay, rows, true scores (n_records,), predictions by key)`` of a committed part.

    Raises
    ------
    ValueError
        Not a part, a damaged one, or a part of another job than ``job_id``; the message names the file.
    """
    path = Path(path)
    arrays = load_npz(path)
    meta = read_meta(arrays, PART_FORMAT, PART_VERSION)
    if job_id is not None and meta.get("job_id") != job_id:
        raise ValueError(f"{path} is a part of job {meta.get('job_id')!r}, not of {job_id!r} (this folder's "
                         f"manifest); move it away and rerun to compute that assay again")
    try:
        data = {}
        for index, column in enumerate(meta["columns"]):
            values = arrays[f"column_{index:03d}"]
            if column["dtype"] in ("float64", "int64", "bool"):
                data[column["name"]] = pd.Series(values, dtype=column["dtype"])
            else:
                series = pd.Series(values.tolist(), dtype=column["dtype"])
                data[column["name"]] = series.mask(arrays[f"missing_{index:03d}"])
        table = pd.DataFrame(data)
        predictions = {(str(k[0]), str(k[1]), str(k[2]), str(k[3]), int(k[4])): arrays[f"prediction_{index:05d}"]
                       for index, k in enumerate(meta["prediction_keys"])}
        scores = arrays["scores"]
    except (KeyError, TypeError, IndexError) as error:
        raise ValueError(f"{path} is damaged: entry {error} is missing or malformed; move it away and rerun to "
                         f"compute that assay again") from error
    if any(len(values) != len(scores) for values in predictions.values()):
        raise ValueError(f"{path} is damaged: its predictions and scores differ in length")
    return str(meta["assay"]), table, scores, predictions


def load_results(folder: str | Path) -> tuple[pd.DataFrame, Variants]:
    """The job's table (parts concatenated in the manifest's assay order) and, per assay, its true scores
    and out-of-fold predictions: ``variants[assay] = (scores, {PredictionKey: predictions})``.

    Raises
    ------
    ValueError
        No manifest, an unfinished job (the message lists the missing assays), or a part of another job.
    """
    folder = Path(folder)
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise ValueError(f"{folder} is not a results folder of `revdistill proteingym` (no {MANIFEST_NAME})")
    manifest = _read_manifest(path)
    assays = manifest["spec"]["assays"]
    missing = [name for name in assays if not part_path(folder, name).is_file()]
    if missing:
        raise ValueError(f"the job in {folder} is not finished: {len(missing)} of {len(assays)} assay(s) have no "
                         f"results yet ({', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}); rerun the "
                         f"same command to finish it")
    tables, variants = [], {}
    for name in assays:
        assay, table, scores, predictions = read_part(part_path(folder, name), manifest["job_id"])
        if assay != name:
            raise ValueError(f"{part_path(folder, name)} holds assay {assay!r}, not {name!r}")
        tables.append(table)
        variants[name] = (scores, predictions)
    return pd.concat(tables, ignore_index=True), variants


# ------------------------------------------------------------------------------------------ running
@dataclass(frozen=True)
class JobProgress:
    """Where a job stands after an assay was committed.

    Attributes
    ----------
    assay : str
        The assay just committed.
    seconds : float
        Time it took (embedding and probe).
    done, total : int
        Assays committed (by every rank and earlier runs) and in the job.
    eta_s : float or None
        Estimated seconds left for the whole job, from this run's pace (by size of the assays).
    rank : int
    """

    assay: str
    seconds: float
    done: int
    total: int
    eta_s: float | None
    rank: int = 0


class RankEmbedder:
    """Embed in this process only, even under torchrun: the ranks of a job share assays, not records.

    Wraps a :class:`~revdistill.esm.runner.LocalEmbedder` (its ``embed`` would otherwise shard every call
    across the ranks, which must then all make the same calls).
    """

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    @property
    def options(self):
        return self.embedder.options

    def embed(self, store: Any, records: Any, models: Any, **kwargs: Any) -> int:
        return self.embedder.embed(store, records, models, rank=0, world_size=1, **kwargs)


@dataclass
class _Pace:
    sizes: Mapping[str, float]
    before: frozenset
    start: float = field(default_factory=time.monotonic)

    def progress(self, folder: Path, spec: JobSpec, assay: str, seconds: float, rank: int) -> JobProgress:
        done = {name for name in spec.assays if part_path(folder, name).is_file()}
        new = sum(self.sizes.get(name, 1.0) for name in done - self.before)
        left = sum(self.sizes.get(name, 1.0) for name in spec.assays if name not in done)
        elapsed = time.monotonic() - self.start
        eta = left * elapsed / new if new > 0 else None
        return JobProgress(assay=assay, seconds=seconds, done=len(done), total=len(spec.assays), eta_s=eta, rank=rank)


def run_job(folder: str | Path, spec: JobSpec, *, load_task: Callable[[str], Any], ladders: Sequence[Any],
            protocol: Any, store: Any, embedder: Any, sizes: Mapping[str, float] | None = None, rank: int = 0,
            run_id: str | None = None, on_done: DoneCallback | None = None) -> list[str]:
    """Compute and commit every assay of ``spec`` that has no part yet and that this rank claims.

    Parameters
    ----------
    folder : path
        The results folder (:func:`open_results` done).
    spec : JobSpec
        With its ladders.
    load_task : callable
        ``load_task(name) -> Task``, called only for assays this process computes.
    ladders, protocol, store, embedder
        As for :func:`~revdistill.experiment.pipeline.run_experiment`; ``store`` is this rank's own.
    sizes : mapping, optional
        Assay name -> work (residues); largest first, and the ETA's weights. Default: equal.
    rank : int
        This process's rank (for the claim files and the progress).
    run_id : str, optional
        The same on every rank of one run (claims of other runs are ignored). Default: a new one.
    on_done : callable, optional
        ``on_done(JobProgress)`` after each committed assay.

    Returns
    -------
    list of str
        The assays this process computed.
    """
    folder = Path(folder)
    sizes = dict(sizes or {})
    run_id = run_id or uuid.uuid4().hex
    claims = folder / ".claims" / run_id
    claims.mkdir(parents=True, exist_ok=True)
    position = {name: index for index, name in enumerate(spec.assays)}
    order = sorted(spec.assays, key=lambda name: (-sizes.get(name, 0.0), position[name]))
    pace = _Pace(sizes=sizes, before=frozenset(n for n in spec.assays if part_path(folder, n).is_file()))
    computed = []
    for name in order:
        target = part_path(folder, name)
        if target.is_file() or not _claim(claims / target.name, rank):
            continue
        if target.is_file():  # committed by another run since the first look
            continue
        start = time.monotonic()
        task = load_task(name)
        if task.name != name:
            raise ValueError(f"assay {name!r} was read as {task.name!r}; give each assay by its id or file once")
        result = run_experiment([task], spec.models, ladders, protocol, store=store, embedder=embedder)
        seconds = time.monotonic() - start
        write_part(folder, spec.job_id, result.tasks[0], seconds)
        computed.append(name)
        logger.info("rank %d committed %s (%.1f s)", rank, target.name, seconds)
        if on_done is not None:
            on_done(pace.progress(folder, spec, name, seconds, rank))
    return computed


def _claim(path: Path, rank: int) -> bool:
    """Take an assay for this run: create ``path`` exclusively (False when another rank has it)."""
    try:
        descriptor = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as stream:
        stream.write(f"rank {rank} pid {os.getpid()}\n")
    return True


def wait_for_parts(folder: str | Path, spec: JobSpec, *, poll_s: float = 2.0,
                   timeout_s: float | None = None) -> None:
    """Return once every assay of ``spec`` has a committed part (rank 0 waits for the other ranks).

    A rank that dies ends the whole ``torchrun`` job, so this waits without a collective (a barrier
    would time out while another rank spends hours on one large assay).
    """
    folder = Path(folder)
    start = time.monotonic()
    while True:
        missing = [name for name in spec.assays if not part_path(folder, name).is_file()]
        if not missing:
            return
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"{len(missing)} assay(s) of {folder} still have no results after {timeout_s} s: "
                               f"{missing[:5]}")
        time.sleep(poll_s)


def finish_job(folder: str | Path) -> None:
    """Remove the claim files of finished runs (call once every part is committed)."""
    shutil.rmtree(Path(folder) / ".claims", ignore_errors=True)
