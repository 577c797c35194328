"""What a probe predicts: records to embed, one score per record, and the CV folds of each scheme.

A :class:`Task` is built from a ProteinGym assay (or a DMS CSV: the measured score, official or
generated folds) or from a plain set of sequences (the target is then a sequence property, labelled
as such, and only the random scheme can run: there are no mutated positions to fold by).

>>> sequence_task("demo", [("a", "MKV" * 20), ("b", "DEEK" * 15)])
Traceback (most recent call last):
...
ValueError: demo: 2 sequence(s); 5-fold CV needs at least 10
"""
from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from revdistill.experiment.protocol import Protocol
from revdistill.proteingym.assays import MIN_VARIANTS, Assay, read_assay
from revdistill.proteingym.folds import N_FOLDS
from revdistill.proteingym.mutants import parse_mutant

logger = logging.getLogger(__name__)

__all__ = ["Task", "assay_task", "read_task", "sequence_task", "sequence_properties", "subsample_task",
           "SEQUENCE_TARGETS", "SUBSAMPLE_NOTE"]

# Kyte & Doolittle (1982) hydropathy; net charge at pH 7 counts K, R as +1 and D, E as -1.
_KYTE_DOOLITTLE = {
    "A": 1.8, "R": -4.5, "N": -3.5, "D": -3.5, "C": 2.5, "Q": -3.5, "E": -3.5, "G": -0.4, "H": -3.2,
    "I": 4.5, "L": 3.8, "K": -3.9, "M": 1.9, "F": 2.8, "P": -1.6, "S": -0.8, "T": -0.7, "W": -0.9,
    "Y": -1.3, "V": 4.2,
}
_CHARGE = {"K": 1.0, "R": 1.0, "D": -1.0, "E": -1.0}
#: Start of the note (and of the name's suffix) that marks a seeded subsample of a task.
SUBSAMPLE_NOTE = "seeded subsample"
#: Sequence properties a set of proteins can be probed for (no measured fitness).
SEQUENCE_TARGETS = {
    "hydrophobicity": "mean Kyte-Doolittle hydropathy (a sequence property, not a measurement)",
    "net_charge": "net charge at pH 7 (a sequence property, not a measurement)",
    "length": "sequence length (a sequence property, not a measurement)",
}


@dataclass
class Task:
    """Records, their scores and CV folds: one probe problem.

    Attributes
    ----------
    name : str
        Assay id or data-set name (the ``assay`` column of results).
    records : list of (str, str)
        ``(id, sequence)``; ids are unique and prefixed by the task (``"<name>:<mutant>"``), so one
        store can hold several tasks.
    scores : numpy.ndarray of shape (n_records,)
        What the probe predicts.
    target : str
        What ``scores`` are (``"DMS_score"`` or a sequence property), with its description.
    folds : dict of str to numpy.ndarray of shape (n_records,)
        Fold label per scheme that can run on this task.
    fold_source : dict of str to str
        ``"official"`` or ``"generated"`` per scheme.
    table : pandas.DataFrame
        One row per record: ``id, label`` and, for mutants, ``mutant, position, wild_type, mutated_aa``;
        also ``score`` and the sequence properties (what views colour and hover by).
    uniprot_id, selection_type : str
        ProteinGym's grouping for its average (the task name and ``"unknown"`` when absent).
    target_seq : str
        Wild type of a mutant set ("" otherwise).
    from_benchmark : bool
        Read by its ProteinGym id from the benchmark's files (its embeddings can share one store with
        every other benchmark assay); False for uploads and other CSVs.
    """

    name: str
    records: list[tuple[str, str]]
    scores: np.ndarray
    target: str
    folds: dict[str, np.ndarray]
    fold_source: dict[str, str]
    table: pd.DataFrame
    uniprot_id: str = ""
    selection_type: str = "unknown"
    target_seq: str = ""
    source: str = ""
    notes: list[str] = field(default_factory=list)
    from_benchmark: bool = False

    def __len__(self) -> int:
        return len(self.records)

    @property
    def is_mutant_set(self) -> bool:
        """True for DMS data (mutants of one wild type)."""
        return "mutant" in self.table.columns

    @property
    def key(self) -> str:
        """Short content hash of ids and sequences (names stores of this task's data)."""
        digest = hashlib.sha256()
        for record_id, sequence in self.records:
            digest.update(f"{record_id}\0{sequence}\n".encode())
        return digest.hexdigest()[:20]

    def schemes(self, protocol: Protocol) -> tuple[str, ...]:
        """The protocol's schemes that can run on this task, in the protocol's order."""
        return tuple(scheme for scheme in protocol.schemes if scheme in self.folds)


def sequence_properties(sequences: Sequence[str]) -> pd.DataFrame:
    """Length, mean Kyte-Doolittle hydropathy and net charge of each sequence, ``(n_sequences, 3)``.

    Letters without a hydropathy value (X, B, Z, U, O) are left out of the mean; a sequence of only
    such letters gets NaN, never a silent 0.
    """
    lengths, hydro, charge = [], [], []
    for sequence in sequences:
        values = [_KYTE_DOOLITTLE[a] for a in sequence if a in _KYTE_DOOLITTLE]
        lengths.append(len(sequence))
        hydro.append(float(np.mean(values)) if values else np.nan)
        charge.append(float(sum(_CHARGE.get(a, 0.0) for a in sequence)))
    return pd.DataFrame({"length": np.asarray(lengths, dtype=np.int64), "hydrophobicity": hydro,
                         "net_charge": charge})


def assay_task(assay: Assay) -> Task:
    """The probe task of a ProteinGym assay (already read with the protocol's settings)."""
    variants = assay.variants
    mutants = variants["mutant"].astype(str).tolist()
    first = [parse_mutant(m)[0] for m in mutants]
    sequences = variants["mutated_sequence"].astype(str).tolist()
    scores = variants["DMS_score"].to_numpy(dtype=np.float64)
    table = pd.DataFrame({
        "id": [f"{assay.dms_id}:{m}" for m in mutants], "label": mutants, "mutant": mutants,
        "position": [position for _, position, _ in first], "wild_type": [wild for wild, _, _ in first],
        "mutated_aa": [new for _, _, new in first], "n_mutations": [m.count(":") + 1 for m in mutants],
        "score": scores,
    })
    table = pd.concat([table, sequence_properties(sequences)], axis=1)
    folds = {scheme: assay.folds(scheme) for scheme in assay.fold_source}
    return Task(name=assay.dms_id, records=list(zip(table["id"], sequences)), scores=scores, target="DMS_score",
                folds=folds, fold_source=dict(assay.fold_source), table=table, uniprot_id=assay.uniprot_id,
                selection_type=assay.selection_type, target_seq=assay.target_seq, source=assay.source)


def read_task(id_or_csv: str | Path, protocol: Protocol, data_dir: str | Path | None = None,
              reference: pd.DataFrame | None = None) -> Task:
    """Read a ProteinGym assay (by id or CSV path) as the protocol asks (singles, fold seed)."""
    task = assay_task(read_assay(id_or_csv, data_dir=data_dir, reference=reference,
                                 singles_only=protocol.singles_only, seed=protocol.fold_seed))
    text = str(id_or_csv)
    task.from_benchmark = not (text.endswith(".csv") or Path(text).expanduser().exists())
    return task


def sequence_task(name: str, records: Sequence[tuple[str, str]], target: str = "hydrophobicity",
                  protocol: Protocol | None = None) -> Task:
    """A task on a set of proteins: predict a sequence property (labelled as such), random folds only.

    Parameters
    ----------
    name : str
        Data-set name; record ids become ``"<name>:<id>"``.
    records : sequence of (id, sequence)
        Checked by :func:`revdistill.esm.sequences.validate_records` (lowercase letters are upper-cased).
    target : str
        A key of :data:`SEQUENCE_TARGETS`.
    protocol : Protocol, optional
        Its ``fold_seed`` seeds the random folds.
    """
    protocol = protocol or Protocol()
    if target not in SEQUENCE_TARGETS:
        raise ValueError(f"target={target!r} is not a sequence property; choose from {list(SEQUENCE_TARGETS)}")
    from revdistill.esm.sequences import validate_records  # noqa: PLC0415

    records = validate_records(records)
    if len(records) < MIN_VARIANTS:
        raise ValueError(f"{name}: {len(records)} sequence(s); 5-fold CV needs at least {MIN_VARIANTS}")
    properties = sequence_properties([sequence for _, sequence in records])
    scores = properties[target].to_numpy(dtype=np.float64)
    if not np.isfinite(scores).all():
        bad = [record_id for (record_id, _), score in zip(records, scores) if not np.isfinite(score)]
        raise ValueError(f"{name}: {target} is undefined for {len(bad)} record(s) (no standard amino acid): "
                         f"{bad[:5]}")
    ids = [f"{name}:{record_id}" for record_id, _ in records]
    table = pd.concat([pd.DataFrame({"id": ids, "label": [record_id for record_id, _ in records]}), properties],
                      axis=1)
    table["score"] = scores
    # balanced random folds (a permutation cut in 5): small protein sets never get an empty fold
    folds = (np.random.RandomState(protocol.fold_seed).permutation(len(records)) % N_FOLDS).astype(np.int64)
    return Task(name=name, records=list(zip(ids, [sequence for _, sequence in records])), scores=scores,
                target=f"{target}: {SEQUENCE_TARGETS[target]}", folds={"fold_random_5": folds},
                fold_source={"fold_random_5": "generated"}, table=table,
                notes=["only the random scheme runs: a set of proteins has no mutated positions to fold by"])


def subsample_task(task: Task, n: int, seed: int = 0) -> Task:
    """A seeded subsample of ``n`` records of ``task`` (for a quick look), labelled as such.

    The records keep their ids, scores and fold labels (official folds stay official), in the task's
    order; the name and ``notes`` say ``"seeded subsample: n of N variants, seed s"`` so that every
    result, caption and figure made from it says so. ``n >= len(task)`` returns ``task`` itself.

    >>> task = sequence_task("demo", [(f"p{i}", "MKVLAG"[: 2 + i % 4] * 5) for i in range(40)])
    >>> small = subsample_task(task, 20, seed=1)
    >>> len(small), small.name
    (20, 'demo [seeded subsample: 20 of 40 variants, seed 1]')
    """
    if n < MIN_VARIANTS:
        raise ValueError(f"n={n}: a subsample needs at least {MIN_VARIANTS} records for 5-fold CV")
    if n >= len(task):
        return task
    rows = np.sort(np.random.default_rng(seed).choice(len(task), size=int(n), replace=False))
    label = f"{SUBSAMPLE_NOTE}: {int(n)} of {len(task)} variants, seed {seed}"
    return Task(name=f"{task.name} [{label}]", records=[task.records[i] for i in rows], scores=task.scores[rows],
                target=task.target, folds={scheme: folds[rows] for scheme, folds in task.folds.items()},
                fold_source=dict(task.fold_source), table=task.table.iloc[rows].reset_index(drop=True),
                uniprot_id=task.uniprot_id or task.name, selection_type=task.selection_type,
                target_seq=task.target_seq, source=task.source, notes=[*task.notes, label],
                from_benchmark=task.from_benchmark)
