"""What the dashboard probes: the bundled demo set, a ProteinGym assay, or an uploaded file.

Every loader returns a :class:`~revdistill.experiment.tasks.Task` built with the session's protocol,
by the same functions the CLI uses (no widgets here).
"""
from __future__ import annotations

import io
import tempfile
from importlib import resources
from pathlib import Path

import pandas as pd

from revdistill.experiment.protocol import Protocol
from revdistill.experiment.tasks import Task, read_task, sequence_task

__all__ = ["demo_task", "proteingym_task", "uploaded_task", "color_options", "DEMO_FASTA"]

DEMO_FASTA = "demo.fasta"


def color_options(task: Task) -> list[str]:
    """Columns of ``task.table`` a scatter can be coloured by, most informative first."""
    preferred = ["score", "position", "mutated_aa", "hydrophobicity", "net_charge", "length"]
    return [column for column in preferred if column in task.table.columns]


def demo_task(protocol: Protocol) -> Task:
    """The bundled demo protein set (``revdistill/data/demo.fasta``); the probe predicts hydrophobicity."""
    from revdistill.esm.sequences import read_fasta  # noqa: PLC0415 - torch import deferred to first use

    with resources.as_file(resources.files("revdistill") / "data" / DEMO_FASTA) as path:
        if not path.is_file():
            raise FileNotFoundError(f"the bundled demo set {path} is missing; reinstall revdistill")
        return sequence_task("demo", read_fasta(path), "hydrophobicity", protocol)


def proteingym_task(assay_id: str, protocol: Protocol, data_dir: str | Path | None = None) -> Task:
    """One ProteinGym assay (``DMS_id`` such as ``"PIN1_HUMAN_Tsuboyama_2023_1I6C"``), read as the protocol asks."""
    assay_id = str(assay_id).strip()
    if not assay_id:
        raise ValueError("choose a ProteinGym assay (DMS_id), e.g. PIN1_HUMAN_Tsuboyama_2023_1I6C")
    return read_task(assay_id, protocol, data_dir=data_dir)


def uploaded_task(name: str, content: bytes, max_bytes: int, protocol: Protocol,
                  data_dir: str | Path | None = None) -> Task:
    """Parse an uploaded FASTA (probe target: hydrophobicity) or DMS CSV (``mutant, DMS_score`` columns).

    Parameters
    ----------
    name : str
        The uploaded file's name (its extension picks the parser when clear; a CSV named like a
        ProteinGym ``DMS_id`` is checked against that assay's target).
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
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise ValueError(f"{name} is not UTF-8 text (byte {error.start}); upload a FASTA or CSV text file") from None
    stripped = text.lstrip()
    lower = name.lower()
    if stripped.startswith(">") or lower.endswith((".fa", ".fasta", ".faa")):
        return sequence_task(Path(name).stem, _parse_fasta_text(text, name), "hydrophobicity", protocol)
    if lower.endswith(".csv") or "," in stripped.splitlines()[0]:
        return _dms_task(name, text, protocol, data_dir)
    raise ValueError(f"{name}: not a FASTA file (no '>' header) nor a CSV with a mutant column")


def _parse_fasta_text(text: str, name: str) -> list[tuple[str, str]]:
    """FASTA text -> records, with the same rules as :func:`revdistill.esm.sequences.read_fasta`."""
    from revdistill.esm import sequences  # noqa: PLC0415

    if hasattr(sequences, "parse_fasta_text"):
        return sequences.parse_fasta_text(text, name)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "upload.fasta"
        path.write_text(text)
        try:
            return sequences.read_fasta(path)
        except ValueError as error:
            raise ValueError(str(error).replace(str(path), name)) from None


def _dms_task(name: str, text: str, protocol: Protocol, data_dir: str | Path | None) -> Task:
    """DMS CSV text -> Task, checked by :func:`revdistill.proteingym.read_assay`."""
    header = pd.read_csv(io.StringIO(text), nrows=0).columns.tolist()
    if "mutant" not in header:
        raise ValueError(f"{name}: a DMS CSV needs columns mutant, DMS_score (and mutated_sequence); "
                         f"found {header}")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / (Path(name).stem + ".csv")
        path.write_text(text)
        try:
            return read_task(path, protocol, data_dir=data_dir)
        except (ValueError, FileNotFoundError) as error:
            raise ValueError(str(error).replace(str(path), name)) from None
