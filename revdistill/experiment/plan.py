"""What a benchmark job will cost, before any work: assays, variants, residues, store size, device-hours.

:func:`plan_job` counts from the reference file (ProteinGym ids) or the CSV itself (other assays):
variants (singles, or all with ``singles_only=False``), residues per model (variants × wild-type
length) and the residues the models actually run (records over 1,022 residues are cut into the
overlapping windows the engine uses, :func:`revdistill.esm.batching.plan`). Device-hours per size
come from the first source that has a number for the device: a ``bench/results`` JSON of
``bench/gpu.py`` (our engine's measured residues/s), the dashboard's calibration cache (one speed for
the ladder together, shared between sizes by their FLOPs), else a FLOP estimate from the model
registry at an assumed sustained rate; :func:`format_plan` says which.

>>> plan = plan_job(["PIN1_HUMAN_Tsuboyama_2023_1I6C"], ["8M", "35M"], device="cuda", bench_dir=None,
...                 cache="/nonexistent")
>>> plan.n_assays, plan.n_variants, plan.residues
(1, 686, 26754)
"""
from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import pandas as pd

__all__ = ["SizePlan", "JobPlan", "plan_job", "format_plan", "variant_counts", "ASSUMED_TFLOPS", "default_bench_dir"]

#: Sustained forward TFLOP/s assumed by the FLOP estimate when nothing was measured (about 40 % of an
#: H100's dense bf16 peak of 989 TFLOP/s on CUDA; a few cores' fp32 on the CPU).
ASSUMED_TFLOPS = {"cuda": 400.0, "mps": 5.0, "cpu": 0.1}
_STORAGE_BYTES = {"float32": 4, "float16": 2}
_ID_BYTES = 64 + 48  # sha256 hex + a typical record id


@dataclass(frozen=True)
class SizePlan:
    """One model's share of a job.

    Attributes
    ----------
    model : str
    layers, dim : int
    pflop : float
        Forward PFLOPs over every embedded residue.
    store_bytes : int
        Pooled vectors of this model in the store.
    hours : float
        Estimated device-hours.
    source : str
        Where the speed comes from (``"bench: <file>"``, ``"calibration: <file>"``, ``"FLOPs"``).
    """

    model: str
    layers: int
    dim: int
    pflop: float
    store_bytes: int
    hours: float
    source: str


@dataclass(frozen=True)
class JobPlan:
    """The size of a benchmark job (see :func:`plan_job`).

    Attributes
    ----------
    n_assays, n_variants : int
    residues : int
        Variants × wild-type length: residues per model.
    embedded : int
        Residues the models run per model (windows of long records overlap).
    n_long : int
        Assays whose wild type exceeds 1,022 residues.
    long_sequences : str
        How they are handled (``"window"``, ``"truncate"``, ``"error"``).
    moments_bytes : int
        The store's joint moments (one scatter matrix over all sizes, float64).
    ids_bytes : int
        Record ids and sequence digests.
    sizes : tuple of SizePlan
    device : str
    note : str
        What the hours rest on.
    """

    n_assays: int
    n_variants: int
    residues: int
    embedded: int
    n_long: int
    long_sequences: str
    moments_bytes: int
    ids_bytes: int
    sizes: tuple[SizePlan, ...]
    device: str
    note: str

    @property
    def store_bytes(self) -> int:
        """The store's size on disk (pooled vectors of every size, moments, ids)."""
        return sum(size.store_bytes for size in self.sizes) + self.moments_bytes + self.ids_bytes

    @property
    def hours(self) -> float:
        return sum(size.hours for size in self.sizes)


def default_bench_dir() -> Path:
    """``bench/results`` of a source checkout (absent in an installed wheel)."""
    return Path(__file__).resolve().parents[2] / "bench" / "results"


def plan_job(assays: Sequence[str], models: Sequence[str], *, device: str = "cpu", singles_only: bool = True,
             long_sequences: str = "window", storage_dtype: str = "float32", reference: pd.DataFrame | None = None,
             data_dir: str | Path | None = None, bench_dir: str | Path | None = "default",
             cache: str | Path | None = None) -> JobPlan:
    """Count a job's work and estimate its device-hours per size.

    Parameters
    ----------
    assays : sequence of str
        ProteinGym ids (counted from the reference file) or CSV paths (read).
    models : sequence of str
        Small to large (facts from :mod:`revdistill.esm.models`).
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``: which measurements apply.
    singles_only : bool
        Count single mutants only (the supervised protocol) or every variant.
    long_sequences : {"window", "truncate", "error"}
    storage_dtype : {"float32", "float16"}
    reference : DataFrame, optional
        ``DMS_substitutions.csv`` (default: :func:`revdistill.proteingym.load_reference`).
    bench_dir : path or None
        Folder of ``bench/gpu.py`` results (``"default"``: :func:`default_bench_dir`; None: do not look).
    cache : path, optional
        Cache root holding the dashboard's calibration (``calibration/``).
    """
    from revdistill.esm.batching import MAX_RESIDUES, WINDOW_OVERLAP  # noqa: PLC0415
    from revdistill.esm.batching import plan as window_plan  # noqa: PLC0415
    from revdistill.esm.models.registry import get_spec, parse_models  # noqa: PLC0415
    from revdistill.esm.runner import EmbedOptions  # noqa: PLC0415

    models = parse_models(models, "--models")
    EmbedOptions(device=device, long_sequences=long_sequences, storage_dtype=storage_dtype)  # checks the values
    counts = variant_counts(assays, singles_only, reference, data_dir)
    specs = [get_spec(model) for model in models]
    residues = embedded = n_long = 0
    flops = {spec.alias: 0.0 for spec in specs}
    for n_variants, length in counts:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the long-record warning is the plan's own line here
            pieces, _ = window_plan([("wild type", "A" * length)], long_sequences, WINDOW_OVERLAP, MAX_RESIDUES)
        residues += n_variants * length
        embedded += n_variants * sum(piece.length for piece in pieces)
        n_long += length > MAX_RESIDUES
        for spec in specs:
            flops[spec.alias] += n_variants * sum(piece.length * spec.forward_flops(piece.length) for piece in pieces)
    n_variants = sum(n for n, _ in counts)
    speeds, note = _speeds(models, device, flops, embedded, bench_dir, cache)
    itemsize = _STORAGE_BYTES[storage_dtype]
    sizes = tuple(SizePlan(model=spec.alias, layers=spec.layers, dim=spec.dim, pflop=flops[spec.alias] / 1e15,
                           store_bytes=n_variants * spec.dim * itemsize, hours=speeds[spec.alias][0],
                           source=speeds[spec.alias][1]) for spec in specs)
    features = sum(spec.dim for spec in specs)
    return JobPlan(n_assays=len(counts), n_variants=n_variants, residues=residues, embedded=embedded, n_long=n_long,
                   long_sequences=long_sequences, moments_bytes=8 * (features * features + features + 1),
                   ids_bytes=_ID_BYTES * n_variants, sizes=sizes, device=device, note=note)


def variant_counts(assays: Sequence[str], singles_only: bool = True, reference: pd.DataFrame | None = None,
                   data_dir: str | Path | None = None) -> list[tuple[int, int]]:
    """``(variants, wild-type length)`` per assay: from the reference row, else from reading the CSV.

    ``singles_only`` counts single mutants (the supervised protocol), else every variant.
    """
    from revdistill.proteingym import load_reference, read_assay  # noqa: PLC0415

    if not assays:
        raise ValueError("no assays to plan: give ProteinGym ids or CSV paths, or --all")
    counts = []
    for assay in assays:
        text = str(assay)
        if not (text.endswith(".csv") or Path(text).expanduser().exists()):
            reference = load_reference(data_dir) if reference is None else reference
            if text in reference.index:
                row = reference.loc[text]
                column = "DMS_number_single_mutants" if singles_only else "DMS_total_number_mutants"
                counts.append((int(row[column]), len(str(row["target_seq"]))))
                continue
        read = read_assay(text, data_dir=data_dir, reference=reference, singles_only=singles_only)
        counts.append((len(read.variants), len(read.target_seq)))
    return counts


def _speeds(models: tuple[str, ...], device: str, flops: dict[str, float], embedded: int,
            bench_dir: str | Path | None, cache: str | Path | None) -> tuple[dict[str, tuple[float, str]], str]:
    """Hours and their source per model, and one line saying what they rest on."""
    kind = device.split(":")[0]
    rate = ASSUMED_TFLOPS[kind] * 1e12
    hours = {model: (flops[model] / rate / 3600, "FLOPs") for model in models}
    notes = [f"FLOP estimate at an assumed {ASSUMED_TFLOPS[kind]:g} TFLOP/s sustained"]
    calibration = _calibration(models, kind, cache)
    if calibration is not None:
        name, speed = calibration
        total = embedded / speed / 3600
        share = sum(flops.values()) or 1.0
        hours = {model: (total * flops[model] / share, "calibration") for model in models}
        notes = [f"calibration {name} ({speed:,.0f} residues/s for the ladder together, shared by FLOPs)"]
    bench = _bench(kind, bench_dir)
    if bench is not None:
        name, rates = bench
        measured = [model for model in models if model in rates]
        for model in measured:
            hours[model] = (embedded / rates[model] / 3600, "bench")
        if measured:
            notes.insert(0, f"bench/results/{name} (our engine's residues/s) for {', '.join(measured)}")
    return hours, "; ".join(notes)


def _bench(kind: str, bench_dir: str | Path | None) -> tuple[str, dict[str, float]] | None:
    """The newest ``bench/gpu.py`` result for this device type: ``(file name, residues/s per model)``."""
    folder = default_bench_dir() if bench_dir == "default" else bench_dir
    if folder is None or not Path(folder).is_dir():
        return None
    for path in sorted(Path(folder).glob("*.json"), reverse=True):
        try:
            data = json.loads(path.read_text())
            if data.get("device", {}).get("type") != kind:
                continue
            rates = {row["model"]: float(row["residues_per_s"]) for row in data.get("rows", [])
                     if row.get("method") == "ours" and row.get("residues_per_s")}
        except (ValueError, TypeError, KeyError, AttributeError):
            continue  # not a bench result: ignored
        if rates:
            return path.name, rates
    return None


def _calibration(models: tuple[str, ...], kind: str, cache: str | Path | None) -> tuple[str, float] | None:
    """A calibration of exactly these models on this device type: ``(file name, residues/s)``, longest length."""
    from revdistill.io.paths import cache_dir  # noqa: PLC0415

    folder = cache_dir("calibration", cache)
    found = []
    for path in sorted(folder.glob("speed-*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text())
            if tuple(data["models"]) == models and str(data["device"]).split(":")[0] == kind:
                found.append((int(data["length"]), path.name, float(data["residues_per_s"])))
        except (ValueError, TypeError, KeyError):
            continue
    if not found:
        return None
    _, name, speed = max(found)
    return name, speed


def format_plan(plan: JobPlan) -> str:
    """A few lines: totals, then one row per size."""
    long_text = {"window": "cut into overlapping 1,022-residue windows", "truncate": "truncated to 1,022",
                 "error": "refused"}[plan.long_sequences]
    vectors = sum(size.store_bytes for size in plan.sizes)
    lines = [
        f"plan: {plan.n_assays} assays, {plan.n_variants:,} variants, {_count(plan.residues)} residues per model "
        f"({_count(plan.embedded)} embedded; {plan.n_long} assays with wild types over 1,022 residues, {long_text})",
        f"store on disk: {_bytes(plan.store_bytes)} (pooled vectors {_bytes(vectors)}, joint moments "
        f"{_bytes(plan.moments_bytes)}, ids {_bytes(plan.ids_bytes)})",
        f"device-hours on {plan.device}: {plan.note}",
        f"{'model':>6} {'layers':>6} {'dim':>5} {'PFLOP':>9} {'vectors':>9} {'device-h':>9}  source",
    ]
    for size in plan.sizes:
        lines.append(f"{size.model:>6} {size.layers:>6} {size.dim:>5} {_number(size.pflop):>9} "
                     f"{_bytes(size.store_bytes):>9} {_number(size.hours):>9}  {size.source}")
    lines.append(f"{'total':>6} {'':>6} {sum(s.dim for s in plan.sizes):>5} "
                 f"{_number(sum(s.pflop for s in plan.sizes)):>9} {_bytes(vectors):>9} {_number(plan.hours):>9}")
    return "\n".join(lines)


def _count(n: int) -> str:
    return f"{n / 1e6:,.1f} M" if n >= 1e6 else f"{n:,}"


def _bytes(n: float) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}" if n >= 10 * scale else f"{n / scale:.2f} {unit}"
    return f"{int(n)} B"


def _number(value: float) -> str:
    """Two decimals below 10, one above; small values with two significant digits (never a bare 0.00)."""
    if not math.isfinite(value):
        return "?"
    if value == 0 or value >= 0.01:
        return f"{value:,.2f}" if value < 10 else f"{value:,.1f}"
    return f"{value:.2g}"
