"""What the dashboard embeds: the bundled demo set, a ProteinGym assay, or an uploaded file.

Every loader returns a :class:`Dataset`: ``(id, sequence)`` records plus a table with one row per
record holding what the panels colour and hover by (fitness, position, mutated amino acid, simple
sequence properties). No widgets here.
"""
from __future__ import annotations

import hashlib
import io
import tempfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "Dataset",
    "demo_dataset",
    "proteingym_dataset",
    "uploaded_dataset",
    "sequence_properties",
    "DEMO_FASTA",
]

DEMO_FASTA = "demo.fasta"

# Kyte & Doolittle (1982) hydropathy; net charge at pH 7 counts K, R as +1 and D, E as -1.
_KYTE_DOOLITTLE = {
    "A": 1.8, "R": -4.5, "N": -3.5, "D": -3.5, "C": 2.5, "Q": -3.5, "E": -3.5, "G": -0.4, "H": -3.2,
    "I": 4.5, "L": 3.8, "K": -3.9, "M": 1.9, "F": 2.8, "P": -1.6, "S": -0.8, "T": -0.7, "W": -0.9,
    "Y": -1.3, "V": 4.2,
}
_CHARGE = {"K": 1.0, "R": 1.0, "D": -1.0, "E": -1.0}


@dataclass
class Dataset:
    """Records to embed and what is known about each.

    Attributes
    ----------
    name : str
        Shown in the app (file name, assay id, "demo").
    kind : str
        ``"demo"``, ``"proteingym"``, ``"fasta"`` or ``"dms"``.
    records : list of (str, str)
        ``(id, sequence)`` in table order.
    table : pandas.DataFrame
        One row per record: ``id, label, length, hydrophobicity, net_charge`` and, for mutant sets,
        ``mutant, position, mutated_aa, fitness``.
    target : str
        Column a probe predicts: ``"fitness"`` when measured, else ``"hydrophobicity"`` (labelled).
    folds : numpy.ndarray or None
        Official cross-validation fold per record (ProteinGym ``fold_random_5``) when known.
    """

    name: str
    kind: str
    records: list[tuple[str, str]]
    table: pd.DataFrame
    target: str
    folds: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.records)

    @property
    def key(self) -> str:
        """Short content hash of ids and sequences (names the embedding store)."""
        digest = hashlib.sha256()
        for record_id, sequence in self.records:
            digest.update(record_id.encode())
            digest.update(b"\0")
            digest.update(sequence.encode())
            digest.update(b"\n")
        return digest.hexdigest()[:20]

    @property
    def color_options(self) -> list[str]:
        """Table columns a scatter can be coloured by, most informative first."""
        preferred = ["fitness", "position", "mutated_aa", "hydrophobicity", "net_charge", "length"]
        return [column for column in preferred if column in self.table.columns]


def sequence_properties(sequences: list[str]) -> pd.DataFrame:
    """Length, mean Kyte-Doolittle hydropathy and net charge of each sequence.

    Parameters
    ----------
    sequences : list of str
        Protein sequences.

    Returns
    -------
    pandas.DataFrame
        Columns ``length, hydrophobicity, net_charge``; ``(n_sequences, 3)``.
    """
    lengths = np.array([len(s) for s in sequences], dtype=np.int64)
    hydro = np.array([np.mean([_KYTE_DOOLITTLE.get(a, 0.0) for a in s]) if s else 0.0 for s in sequences])
    charge = np.array([sum(_CHARGE.get(a, 0.0) for a in s) for s in sequences])
    return pd.DataFrame({"length": lengths, "hydrophobicity": hydro, "net_charge": charge})


def _from_records(name: str, kind: str, records: list[tuple[str, str]]) -> Dataset:
    """Dataset of plain sequences (no measured fitness)."""
    if not records:
        raise ValueError(f"{name}: no sequences")
    table = pd.DataFrame({"id": [r[0] for r in records], "label": [r[0] for r in records]})
    table = pd.concat([table, sequence_properties([r[1] for r in records])], axis=1)
    return Dataset(name=name, kind=kind, records=list(records), table=table, target="hydrophobicity")


def demo_dataset() -> Dataset:
    """The bundled demo protein set (``revdistill/data/demo.fasta``)."""
    from revdistill.esm.sequences import read_fasta  # noqa: PLC0415 - torch import deferred to first use

    with resources.as_file(resources.files("revdistill") / "data" / DEMO_FASTA) as path:
        if not path.is_file():
            raise FileNotFoundError(f"the bundled demo set {path} is missing; reinstall revdistill")
        return _from_records("demo", "demo", read_fasta(path))


def _from_assay(assay, kind: str) -> Dataset:
    """Dataset of an assay's variants (mutant id, mutated sequence, fitness)."""
    from revdistill.proteingym import parse_mutant  # noqa: PLC0415

    variants = assay.variants
    mutants = variants["mutant"].astype(str).tolist()
    first = [parse_mutant(m)[0] for m in mutants]
    sequences = variants["mutated_sequence"].astype(str).tolist()
    table = pd.DataFrame({
        "id": mutants,
        "label": mutants,
        "mutant": mutants,
        "position": [position for _, position, _ in first],
        "mutated_aa": [mutated for _, _, mutated in first],
        "fitness": variants["DMS_score"].to_numpy(dtype=float),
    })
    table = pd.concat([table, sequence_properties(sequences)], axis=1)
    folds = variants["fold_random_5"].to_numpy(dtype=np.int64) if "fold_random_5" in variants else None
    return Dataset(name=assay.dms_id, kind=kind, records=list(zip(mutants, sequences)), table=table,
                   target="fitness", folds=folds)


def proteingym_dataset(assay_id: str, data_dir: str | Path | None = None) -> Dataset:
    """Variants of one ProteinGym assay (all substitutions, singles and multiples).

    Parameters
    ----------
    assay_id : str
        ``DMS_id`` such as ``"PIN1_HUMAN_Tsuboyama_2023_1I6C"``.
    data_dir : str or Path, optional
        Local ProteinGym folder (see :func:`revdistill.proteingym.resolve_data_dir`).
    """
    from revdistill.proteingym import read_assay  # noqa: PLC0415

    assay_id = assay_id.strip()
    if not assay_id:
        raise ValueError("enter a ProteinGym assay id (DMS_id), e.g. PIN1_HUMAN_Tsuboyama_2023_1I6C")
    return _from_assay(read_assay(assay_id, data_dir=data_dir, singles_only=False), "proteingym")


def uploaded_dataset(name: str, content: bytes, max_bytes: int) -> Dataset:
    """Parse an uploaded FASTA or DMS CSV (``mutant, DMS_score`` and ``mutated_sequence`` columns).

    Parameters
    ----------
    name : str
        The uploaded file's name (its extension picks the parser when clear).
    content : bytes
        File content.
    max_bytes : int
        Size limit; larger files are refused.
    """
    size = len(content)
    if size > max_bytes:
        raise ValueError(f"{name} is {size / 1e6:.1f} MB; the upload limit is {max_bytes / 1e6:.1f} MB")
    if size == 0:
        raise ValueError(f"{name} is empty")
    text = content.decode("utf-8", errors="strict")
    stripped = text.lstrip()
    lower = name.lower()
    if stripped.startswith(">") or lower.endswith((".fa", ".fasta", ".faa")):
        return _from_records(Path(name).stem, "fasta", _parse_fasta_text(text, name))
    if lower.endswith(".csv") or "," in stripped.splitlines()[0]:
        return _dms_from_csv_text(name, text)
    raise ValueError(f"{name}: not a FASTA file (no '>' header) nor a CSV with a mutant column")


def _parse_fasta_text(text: str, name: str) -> list[tuple[str, str]]:
    """FASTA text -> records, with the same rules as :func:`revdistill.esm.sequences.read_fasta`."""
    from revdistill.esm.sequences import read_fasta  # noqa: PLC0415

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upload.fasta"
        path.write_text(text)
        try:
            return read_fasta(path)
        except ValueError as error:
            raise ValueError(str(error).replace(str(path), name)) from None


def _dms_from_csv_text(name: str, text: str) -> Dataset:
    """DMS CSV text -> Dataset, checked by :func:`revdistill.proteingym.read_assay`."""
    from revdistill.proteingym import read_assay  # noqa: PLC0415

    header = pd.read_csv(io.StringIO(text), nrows=0).columns.tolist()
    if "mutant" not in header:
        raise ValueError(f"{name}: a DMS CSV needs columns mutant, DMS_score (and mutated_sequence); "
                         f"found {header}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / (Path(name).stem + ".csv")
        path.write_text(text)
        try:
            assay = read_assay(path, singles_only=False)
        except (ValueError, FileNotFoundError) as error:
            raise ValueError(str(error).replace(str(path), name)) from None
    return _from_assay(assay, "dms")
