"""The dashboard's computation, without widgets: one experiment, plus the views the panels draw.

:func:`compute_analysis` gets the reference ladder(s) (cached by id; the corpus is embedded once),
runs :func:`revdistill.experiment.pipeline.run_experiment` — the very function ``revdistill
proteingym`` runs — on the chosen task, and precomputes the slicer's views. The panels read the
returned :class:`Analysis`; they never talk to each other.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from revdistill.esm.interfaces import Embedder
from revdistill.experiment.ladders import Corpus, ReferenceLadder, reference_ladder
from revdistill.experiment.pipeline import ExperimentResult, TaskResult, run_experiment
from revdistill.experiment.protocol import Protocol
from revdistill.experiment.tasks import Task
from revdistill.views.slicer import SlicerViews, slicer_views

logger = logging.getLogger(__name__)

__all__ = ["Choices", "Analysis", "compute_analysis", "ladder_choices", "LADDER_CORPORA", "FIT_ON_CHOICES",
           "ModelChoice", "model_choices", "default_models", "available_device", "WEIGHTS_HELP", "task_store_path"]

ProgressCallback = Callable[[float, str], None]

WEIGHTS_HELP = (
    "To use real ESM-2 weights, put fair-esm checkpoints (e.g. esm2_t6_8M_UR50D.pt and "
    "esm2_t6_8M_UR50D-contact-regression.pt) in ~/.cache/torch/hub/checkpoints/ or in a folder named by "
    "$REVDISTILL_WEIGHTS, or download them once with `revdistill weights download 8M,35M,150M`, then reload "
    "this page."
)
LADDER_CORPORA = {"proteingym": "ProteinGym v1.3 wild types (the reference corpus)",
                  "data": "this data set's own sequences (explicit choice)"}
FIT_ON_CHOICES = {"nested": "ours: each step fitted on the input it is applied to",
                  "raw": "released: fitted on raw embeddings, applied to nested",
                  "both": "both, to compare"}


@dataclass(frozen=True)
class Choices:
    """What the visitor chose in the models panel."""

    models: tuple[str, ...]
    fit_on: str = "nested"
    corpus: str = "proteingym"
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.fit_on not in FIT_ON_CHOICES:
            raise ValueError(f"fit_on={self.fit_on!r}; choose from {list(FIT_ON_CHOICES)}")
        if self.corpus not in LADDER_CORPORA:
            raise ValueError(f"corpus={self.corpus!r}; choose from {list(LADDER_CORPORA)}")
        if len(self.models) < 2:
            raise ValueError(f"tick at least two model sizes for a ladder (got {list(self.models) or 'none'})")


@dataclass
class Analysis:
    """Everything the panels show for one task and one choice of models, ladder and protocol.

    Attributes
    ----------
    task : Task
    choices : Choices
    result : ExperimentResult
        The experiment (its ``table`` is what ``revdistill proteingym`` writes for the same inputs).
    summary : pandas.DataFrame
        ``result.summary()``: Spearman per series with intervals.
    views : SlicerViews
        Per-``k`` views of the primary ladder's nested embedding.
    trained : bool
        False for the untrained tiny family.
    seconds : dict of str to float
    """

    task: Task
    choices: Choices
    result: ExperimentResult
    summary: pd.DataFrame
    views: SlicerViews
    trained: bool
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def task_result(self) -> TaskResult:
        return self.result.tasks[0]

    @property
    def ladder(self) -> ReferenceLadder:
        """The primary reference ladder (views show its nested embedding)."""
        return self.result.ladders[0]

    @property
    def nested(self):
        return self.task_result.nested[self.ladder.ladder_id]

    @property
    def models(self) -> tuple[str, ...]:
        return self.result.models

    def caption(self) -> str:
        return self.result.caption()


def ladder_choices(choices: Choices, task: Task, embedder: Embedder, cache: Path | None,
                   progress: ProgressCallback | None = None) -> list[ReferenceLadder]:
    """The reference ladder(s) for the choices: one per convention, from the cache or fitted now."""
    if choices.corpus == "proteingym":
        corpus = None
    else:
        corpus = Corpus.from_records(f"data:{task.name}", task.records,
                                     f"{task.name}'s own sequences (explicit choice, not the reference corpus)")
    conventions = ("nested", "raw") if choices.fit_on == "both" else (choices.fit_on,)
    return [reference_ladder(choices.models, corpus, fit_on=fit_on, embedder=embedder, cache=cache, progress=progress)
            for fit_on in conventions]


def compute_analysis(task: Task, choices: Choices, protocol: Protocol, *, embedder: Embedder,
                     cache: str | Path | None = None, progress: ProgressCallback | None = None,
                     cpu_threads: int | None = None) -> Analysis:
    """Fit or fetch the ladders, run the experiment on ``task`` and precompute the views.

    Parameters
    ----------
    task : Task
    choices : Choices
    protocol : Protocol
    embedder : LocalEmbedder or WorkerEmbedder
        Kept by the session, so models load once per kernel (or once per server with a worker).
    cache : path, optional
        Cache root (default :func:`revdistill.io.paths.cache_root`): stores, ladders, corpora.
    progress : callable, optional
        ``progress(fraction, message)``, called from the worker thread.
    cpu_threads : int, optional
        On CPU, torch's intra-op threads for this kernel (one kernel per visitor on few cores: 1 is
        fastest when others are busy). Set here, at compute time, never at import.
    """
    from revdistill.esm.models.registry import get_spec, parse_models  # noqa: PLC0415
    from revdistill.esm.store import EmbeddingStore  # noqa: PLC0415

    report = progress or (lambda fraction, message: None)
    models = parse_models(choices.models)
    choices = Choices(models=models, fit_on=choices.fit_on, corpus=choices.corpus, device=choices.device)
    if cpu_threads is not None and choices.device == "cpu":
        import torch  # noqa: PLC0415

        torch.set_num_threads(int(cpu_threads))
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    ladders = ladder_choices(choices, task, embedder, cache, lambda f, m: report(0.3 * f, m))
    seconds["ladder"] = time.perf_counter() - start
    store = EmbeddingStore(task_store_path(task, models, embedder, cache))
    start = time.perf_counter()
    result = run_experiment([task], models, ladders, protocol, store=store, embedder=embedder,
                            progress=lambda f, m: report(0.3 + 0.55 * f, m))
    summary = result.summary()
    seconds["experiment"] = time.perf_counter() - start
    start = time.perf_counter()
    nested = result.tasks[0].nested[ladders[0].ladder_id]
    views = slicer_views(nested, progress=lambda f, m: report(0.85 + 0.15 * f, m))
    seconds["views"] = time.perf_counter() - start
    report(1.0, "done")
    return Analysis(task=task, choices=choices, result=result, summary=summary, views=views,
                    trained=all(get_spec(name).trained for name in models), seconds=seconds)


def task_store_path(task: Task, models: tuple[str, ...], embedder: Embedder, cache: str | Path | None = None) -> Path:
    """The store a task's embeddings go to (:func:`~revdistill.experiment.pipeline.default_store_path`)."""
    from revdistill.experiment.pipeline import default_store_path  # noqa: PLC0415

    return default_store_path(task, models, embedder.options.numerics(), cache)


# ---------------------------------------------------------------------------------------------- model choices
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
    """
    from revdistill.esm.models.registry import ESM2_MODELS, TINY_MODELS  # noqa: PLC0415
    from revdistill.esm.models.weights import weights_available  # noqa: PLC0415
    from revdistill.esm.runner import DTYPE_BYTES, default_dtype  # noqa: PLC0415

    free = _available_memory_bytes(device)
    bytes_per_param = DTYPE_BYTES[default_dtype(device)]
    choices = []
    for spec in ESM2_MODELS + TINY_MODELS:
        alias = spec.alias
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
    """The registry's default ladder (8M -> 35M -> 150M) when its weights are present, else the tiny family."""
    from revdistill.esm.models.registry import DEFAULT_LADDER, TINY_MODELS  # noqa: PLC0415

    available = {choice.alias for choice in choices if choice.available}
    if all(alias in available for alias in DEFAULT_LADDER):
        return DEFAULT_LADDER
    return tuple(spec.alias for spec in TINY_MODELS)
