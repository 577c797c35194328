"""The dashboard's computation, without widgets: data set -> embeddings -> ladder -> nested views.

:func:`compute_workspace` embeds a :class:`~.data.Dataset` with the chosen ESM-2 sizes through an
:class:`~revdistill.esm.store.EmbeddingStore` (so a second run, or reopening the page, embeds nothing
again), fits the :class:`~revdistill.core.ladder.DistillationLadder` and the naive baseline from the stored
per-residue moments, and applies both to the mean-pooled vectors (every step is affine, so pooling
commutes with the transform).
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .data import Dataset

logger = logging.getLogger(__name__)

__all__ = ["Workspace", "compute_workspace", "default_cache_dir", "available_device", "model_choices",
           "default_models", "ModelChoice", "REAL_MODELS", "TINY_FAMILY", "WEIGHTS_HELP"]

ProgressCallback = Callable[[float, str], None]

REAL_MODELS = ("8M", "35M", "150M", "650M", "3B", "15B")
TINY_FAMILY = ("tiny-32", "tiny-48", "tiny-64")
DEFAULT_REAL = ("8M", "35M", "150M")
WEIGHTS_HELP = (
    "To use real ESM-2 weights, put fair-esm checkpoints (e.g. esm2_t6_8M_UR50D.pt and "
    "esm2_t6_8M_UR50D-contact-regression.pt) in ~/.cache/torch/hub/checkpoints/ or in a folder named by "
    "$REVDISTILL_WEIGHTS, or download them once with "
    "`python -c \"import esm; esm.pretrained.esm2_t6_8M_UR50D()\"` (likewise 35M, 150M) on a machine "
    "with internet access, then reload this page."
)


def default_cache_dir() -> Path:
    """``$REVDISTILL_CACHE`` or ``~/.cache/revdistill``: embedding stores and UMAP caches."""
    root = os.environ.get("REVDISTILL_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "revdistill"


def available_device() -> str:
    """``"cuda"`` when torch sees a GPU, else ``"cpu"``."""
    import torch  # noqa: PLC0415

    return "cuda" if torch.cuda.is_available() else "cpu"


def _available_memory_bytes(device: str) -> int:
    """Free memory on ``device`` (GPU memory for CUDA, available RAM otherwise)."""
    if device.startswith("cuda"):
        import torch  # noqa: PLC0415

        free, _ = torch.cuda.mem_get_info()
        return int(free)
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - non-Linux
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


@dataclass(frozen=True)
class ModelChoice:
    """One checkbox of the models panel: a model and why it cannot be chosen, if it cannot."""

    alias: str
    label: str
    available: bool
    reason: str = ""


def model_choices(device: str, weights_dir: str | Path | None = None) -> list[ModelChoice]:
    """The ESM-2 ladder 8M..15B and the tiny family, each with availability and the reason if not.

    A model is unavailable when its checkpoint is missing, or when its weights (fp32 on CPU, bf16 on
    a GPU) plus working room need more memory than the device has free.

    Parameters
    ----------
    device : str
        ``"cpu"`` or ``"cuda"``.
    weights_dir : str or Path, optional
        Folder holding checkpoints; default the torch-hub cache.
    """
    from revdistill.esm.models import get_spec, weights_available  # noqa: PLC0415

    free = _available_memory_bytes(device)
    bytes_per_param = 2 if device.startswith("cuda") else 4
    choices = []
    for alias in REAL_MODELS + TINY_FAMILY:
        spec = get_spec(alias)
        label = f"{alias} ({spec.layers} layers, {spec.dim} dims)"
        if not spec.trained:
            choices.append(ModelChoice(alias, f"{alias} (untrained, {spec.dim} dims)", True))
            continue
        needed = int(spec.params * bytes_per_param * 1.5)
        if not weights_available(alias, weights_dir):
            choices.append(ModelChoice(alias, label, False, "weights not found"))
        elif needed > free:
            choices.append(ModelChoice(
                alias, label, False, f"needs ~{needed / 1e9:.1f} GB, {free / 1e9:.1f} GB free on {device}"))
        else:
            choices.append(ModelChoice(alias, label, True))
    return choices


def default_models(choices: list[ModelChoice]) -> tuple[str, ...]:
    """8M -> 35M -> 150M when their weights are present, else the tiny family."""
    available = {choice.alias for choice in choices if choice.available}
    if all(alias in available for alias in DEFAULT_REAL):
        return DEFAULT_REAL
    return TINY_FAMILY


@dataclass
class Workspace:
    """Everything the panels show for one data set and one model selection.

    Attributes
    ----------
    dataset : Dataset
    models : tuple of str
        Chosen sizes, small to large.
    pooled : dict of str to numpy.ndarray
        Mean-pooled ESM-2 embeddings per model, ``(n_records, dim)`` float32, in table order.
    ladder : DistillationLadder
        Fitted from the stored per-residue moments.
    nested : NestedEmbedding
        Reverse-distilled pooled embeddings, ``(n_records, D)``.
    naive : dict of str to numpy.ndarray
        Naive baseline (concatenate + PCA) at each level, ``(n_records, dim)``.
    diagnostics : list of dict
        ``ladder.diagnostics()``.
    trained : bool
        False for the untrained tiny family.
    seconds : dict of str to float
        Time spent per stage.
    """

    dataset: Dataset
    models: tuple[str, ...]
    device: str
    pooled: dict[str, np.ndarray]
    ladder: Any
    nested: Any
    naive: dict[str, np.ndarray]
    diagnostics: list[dict]
    trained: bool
    seconds: dict[str, float] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)

    @property
    def dims(self) -> tuple[int, ...]:
        """Width of each model's embedding."""
        return tuple(int(self.pooled[name].shape[1]) for name in self.models)


def _check_models(models: tuple[str, ...]) -> tuple[str, ...]:
    from revdistill.esm.models import get_spec  # noqa: PLC0415

    if len(models) < 2:
        raise ValueError(f"choose at least two model sizes for a ladder, got {list(models)}")
    dims = [get_spec(name).dim for name in models]
    order = sorted(range(len(models)), key=lambda i: dims[i])
    ordered = tuple(models[i] for i in order)
    sorted_dims = [dims[i] for i in order]
    if any(b <= a for a, b in zip(sorted_dims, sorted_dims[1:])):
        raise ValueError(f"model widths must strictly increase along the ladder, got {dict(zip(ordered, sorted_dims))}")
    return ordered


def compute_workspace(
    dataset: Dataset,
    models: tuple[str, ...] | list[str],
    *,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
    weights_dir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    chunk_size: int = 500,
    cpu_threads: int | None = None,
) -> Workspace:
    """Embed ``dataset`` with ``models``, fit the ladder and the naive baseline, apply both.

    Parameters
    ----------
    dataset : Dataset
        What to embed.
    models : sequence of str
        At least two aliases (``"8M"``, ``"tiny-32"`` ...); sorted by width.
    device : str
        Torch device for embedding.
    cache_dir : str or Path, optional
        Where embedding stores live (default :func:`default_cache_dir`).
    weights_dir : str or Path, optional
        ESM-2 checkpoint folder.
    progress : callable, optional
        ``progress(fraction, message)``, called from the worker thread.
    chunk_size : int
        Records embedded between progress reports (the store appends each chunk atomically).
    cpu_threads : int, optional
        On CPU, set torch's intra-op threads (process-wide) first. A dashboard server runs one kernel
        per visitor on few cores; with other busy processes, 2 spinning OpenMP threads made a
        5,000-sequence run 3x slower than 1 thread (20.9 s vs 7.3 s here).

    Returns
    -------
    Workspace
    """
    from revdistill.esm.store import EmbeddingStore  # noqa: PLC0415

    report = progress or (lambda fraction, message: None)
    models = _check_models(tuple(models))
    if cpu_threads is not None and device == "cpu":
        import torch  # noqa: PLC0415

        torch.set_num_threads(int(cpu_threads))
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / "stores"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{dataset.key}-{'_'.join(models)}.h5"
    # Visitors computing the same data set share its store; the store lets one writer in at a time
    # (the others then find everything embedded).
    return _compute(dataset, models, EmbeddingStore(path), device, weights_dir, report, chunk_size)


def _compute(dataset: Dataset, models: tuple[str, ...], store: Any, device: str,
                    weights_dir: str | Path | None, report: ProgressCallback, chunk_size: int) -> Workspace:
    from revdistill.core.ladder import DistillationLadder  # noqa: PLC0415
    from revdistill.esm.models import get_spec  # noqa: PLC0415
    from revdistill.core.naive import NaiveConcatPCA  # noqa: PLC0415

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    records = dataset.records
    report(0.0, f"embedding {len(records)} sequences (those already in the store are skipped)")

    def on_part(done: int, total: int) -> None:
        report(0.8 * done / max(total, 1), f"embedded {done} / {total} new sequences")

    # One call: the models load once and the store is consolidated once; a part file (and a progress
    # report) every chunk_size records.
    from revdistill.esm.runner import EmbedOptions, LocalEmbedder  # noqa: PLC0415

    options = EmbedOptions(device=device, weights_dir=weights_dir, flush_every=chunk_size)
    LocalEmbedder(options).embed(store, records, models, on_progress=on_part)
    seconds["embed"] = time.perf_counter() - start

    start = time.perf_counter()
    report(0.85, "fitting the ladder from per-residue moments")
    moments = store.moments()
    ladder = DistillationLadder(regressor="pcr").fit_moments(moments)
    naive_model = NaiveConcatPCA().fit_moments(moments)
    pooled = {name: _pooled_in_order(store, name, dataset) for name in models}
    nested = ladder.transform(pooled)
    naive = {name: np.asarray(values, dtype=np.float32) for name, values in naive_model.transform(pooled).items()}
    seconds["fit"] = time.perf_counter() - start
    report(1.0, "done")
    trained = all(get_spec(name).trained for name in models)
    return Workspace(dataset=dataset, models=models, device=device, pooled=pooled, ladder=ladder,
                     nested=nested, naive=naive, diagnostics=ladder.diagnostics(), trained=trained,
                     seconds=seconds)


def _pooled_in_order(store: Any, model: str, dataset: Dataset) -> np.ndarray:
    """Pooled vectors of ``model`` for the dataset's records, in the dataset's order."""
    ids, values = store.pooled(model)
    row_of = {record_id: row for row, record_id in enumerate(ids)}
    missing = [record_id for record_id, _ in dataset.records if record_id not in row_of]
    if missing:
        raise RuntimeError(f"the embedding store lacks {len(missing)} record(s), e.g. {missing[:3]}")
    rows = np.fromiter((row_of[record_id] for record_id, _ in dataset.records), dtype=np.int64,
                       count=len(dataset.records))
    return np.asarray(values, dtype=np.float32)[rows]
