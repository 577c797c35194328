"""The dashboard's computation, run in the compute service: ladders, the experiment, the views' data.

:func:`compute_analysis` gets the reference ladder(s) (cached by id; the corpus is embedded once), runs
:func:`revdistill.experiment.pipeline.run_experiment` — the very function ``revdistill proteingym`` runs —
on the chosen task and precomputes the slicer's views. :func:`encode_analysis` turns the result into what
a visitor's kernel draws (:class:`~revdistill.service.results.AnalysisResult`); the nested embedding itself
stays here, and projections of it are asked for by the analysis' key.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from revdistill.dashboard.analysis import Choices, ModelChoice
from revdistill.service.protocol import encode_frame

__all__ = ["Analysis", "compute_analysis", "encode_analysis", "ladder_choices",
           "available_device", "model_choices", "block_correlations", "subspace_values"]

ProgressCallback = Callable[[float, str], None]


@dataclass
class Analysis:
    """Everything computed for one task and one choice of models, ladder and protocol (service side)."""

    task: Any
    choices: Choices
    result: Any
    summary: Any
    paired: Any
    views: Any
    trained: bool
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def task_result(self) -> Any:
        return self.result.tasks[0]

    @property
    def ladder(self) -> Any:
        """The primary reference ladder (views show its nested embedding)."""
        return self.result.ladders[0]

    @property
    def nested(self) -> Any:
        return self.task_result.nested[self.ladder.ladder_id]


def ladder_choices(choices: Choices, task: Any, embedder: Any, cache: Path | None,
                   progress: ProgressCallback | None = None) -> list[Any]:
    """The reference ladder(s) for the choices: one per convention, from the cache or fitted now."""
    from revdistill.experiment.ladders import Corpus, reference_ladder  # noqa: PLC0415

    if choices.corpus == "proteingym":
        corpus = None
    else:
        corpus = Corpus.from_records(f"data:{task.name}", task.records,
                                     f"{task.name}'s own sequences (explicit choice, not the reference corpus)")
    conventions = ("nested", "raw") if choices.fit_on == "both" else (choices.fit_on,)
    return [reference_ladder(choices.models, corpus, fit_on=fit_on, embedder=embedder, cache=cache, progress=progress)
            for fit_on in conventions]


def compute_analysis(task: Any, choices: Choices, protocol: Any, *, embedder: Any,
                     cache: str | Path | None = None, progress: ProgressCallback | None = None) -> Analysis:
    """Fit or fetch the ladders, run the experiment on ``task`` and precompute the views.

    Parameters
    ----------
    task : Task
    choices : Choices
    protocol : Protocol
    embedder : LocalEmbedder
        The service's (one model copy per model, shared by every visitor).
    cache : path, optional
        Cache root (default :func:`revdistill.io.paths.cache_root`): stores, ladders, corpora.
    progress : callable, optional
        ``progress(fraction, message)``; it may raise to cancel.
    """
    from revdistill.esm.models.registry import get_spec, parse_models  # noqa: PLC0415
    from revdistill.esm.store import EmbeddingStore  # noqa: PLC0415
    from revdistill.experiment.pipeline import default_store_path, run_experiment  # noqa: PLC0415
    from revdistill.views.slicer import slicer_views  # noqa: PLC0415

    report = progress or (lambda fraction, message: None)
    models = parse_models(choices.models)
    choices = dataclasses.replace(choices, models=models)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    ladders = ladder_choices(choices, task, embedder, cache, lambda f, m: report(0.3 * f, m))
    seconds["ladder"] = time.perf_counter() - start
    store = EmbeddingStore(default_store_path(task, models, embedder.options.numerics(), cache))
    start = time.perf_counter()
    result = run_experiment([task], models, ladders, protocol, store=store, embedder=embedder,
                            progress=lambda f, m: report(0.3 + 0.55 * f, m))
    summary = result.summary()
    paired = result.paired()
    seconds["experiment"] = time.perf_counter() - start
    start = time.perf_counter()
    nested = result.tasks[0].nested[ladders[0].ladder_id]
    views = slicer_views(nested, progress=lambda f, m: report(0.85 + 0.15 * f, m))
    seconds["views"] = time.perf_counter() - start
    report(1.0, "done")
    return Analysis(task=task, choices=choices, result=result, summary=summary, paired=paired, views=views,
                    trained=all(get_spec(name).trained for name in models), seconds=seconds)


def block_correlations(nested: Any) -> list[float]:
    """Largest absolute correlation between each level's block and the prefix before it (pooled rows).

    On the per-residue fitting data the ladder makes it zero by construction; on pooled rows it is small
    but need not be zero. One value per level after the first.
    """
    values = np.asarray(nested.values, dtype=np.float64)
    centred = values - values.mean(axis=0)
    scale = np.sqrt((centred**2).sum(axis=0))
    scale[scale == 0] = 1.0
    normalised = centred / scale
    result = []
    for start, end in zip(nested.boundaries[:-1], nested.boundaries[1:]):
        correlation = normalised[:, :start].T @ normalised[:, start:end]
        result.append(float(np.abs(correlation).max()) if correlation.size else 0.0)
    return result


def subspace_values(nested: Any, key: str) -> np.ndarray:
    """The rows of a prefix (``"prefix:<k>"``) or a level's block (``"block:<name>"``)."""
    from revdistill.views import projection  # noqa: PLC0415

    kind, _, value = key.partition(":")
    if kind == "prefix":
        return projection.subspace(nested, prefix=int(value))
    elif kind == "block":
        return projection.subspace(nested, block=value)
    raise ValueError(f"subspace {key!r} must start with 'prefix:' or 'block:'")


def _json_value(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def encode_analysis(key: str, analysis: Analysis) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(header, arrays)`` of what the panels draw (decoded by :func:`~revdistill.service.results.decode_analysis`)."""
    result, views = analysis.result, analysis.views
    table, arrays = encode_frame(result.table, "table")
    summary, summary_arrays = encode_frame(analysis.summary, "summary")
    arrays.update(summary_arrays)
    paired, paired_arrays = encode_frame(analysis.paired, "paired")
    arrays.update(paired_arrays)
    predictions = []
    for index, (prediction_key, values) in enumerate(analysis.task_result.predictions.items()):
        arrays[f"prediction:{index}"] = np.asarray(values)
        predictions.append([_json_value(part) for part in prediction_key])
    for name in ("ks", "nn_agreement", "cosine", "views"):
        arrays[f"views.{name}"] = np.asarray(getattr(views, name))
    ladders = [{"ladder_id": ladder.ladder_id, "fit_on": ladder.fit_on, "description": ladder.describe(),
                "diagnostics": [{name: _json_value(value) for name, value in row.items()}
                                for row in ladder.ladder.diagnostics()]} for ladder in result.ladders]
    nested = analysis.nested
    header = {"key": key, "choices": dataclasses.asdict(analysis.choices), "protocol_id": result.protocol.id,
              "table": table, "summary": summary, "paired": paired, "caption": result.caption(),
              "trained": analysis.trained,
              "seconds": analysis.seconds, "schemes": list(result.schemes), "models": list(result.models),
              "ladders": ladders, "predictions": predictions, "boundaries": [int(b) for b in nested.boundaries],
              "names": list(nested.names), "block_correlations": block_correlations(nested),
              "views": {"boundaries": [int(b) for b in views.boundaries], "names": list(views.names),
                        "n_neighbors": int(views.n_neighbors)}}
    return header, arrays


# ---------------------------------------------------------------------------------------------- environment
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
