"""What the compute service does for each operation (also run in-process by :class:`~.client.LocalCompute`).

:class:`Context` holds the service's shared state: one embedder per embedding configuration (so one model
copy per model, used by one job at a time: the device lock), the analyses computed so far (by key, so that
projections of their nested embeddings can be asked for without sending them back), and counters.
:meth:`Context.run` maps ``(op, header, arrays)`` to ``(header, arrays)``; ``progress(fraction, message)`` is
called at progress points and raises :class:`~.protocol.Cancelled` to stop a job.
"""
from __future__ import annotations

import collections
import gc
import logging
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from revdistill.esm.runner import LocalEmbedder
from revdistill.service.protocol import decode_task

logger = logging.getLogger(__name__)

__all__ = ["Context", "OPERATIONS"]

#: Operations a client may ask for (``status``, ``release``, ``shutdown`` and ``cancel`` are the server's own).
OPERATIONS = ("embed", "environment", "analysis", "projection", "estimate", "calibrate", "warm_up", "results")
Progress = Callable[[float, str], None]
Reply = tuple[dict[str, Any], dict[str, np.ndarray]]
_KEPT_ANALYSES = 8


class Context:
    """Shared state of one compute service (or of one in-process :class:`~.client.LocalCompute`).

    Parameters
    ----------
    threads : int, optional
        torch threads of a job (set where a job embeds, never at import).
    """

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads
        self.device_lock = threading.Lock()
        self.guard = threading.Lock()
        self.embedders: dict[tuple, Any] = {}
        self.analyses: collections.OrderedDict[str, Any] = collections.OrderedDict()
        self.loads: dict[str, int] = {}
        self.modules: dict[str, list[weakref.ref]] = {}  # alias -> every module loaded (alive while in memory)
        self.requests: collections.Counter = collections.Counter()  # op -> jobs run (cached answers included)
        self.computed: collections.Counter = collections.Counter()  # op -> computations actually run
        self.last_active = time.monotonic()

    def run(self, op: str, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray], progress: Progress,
            key: str = "") -> Reply:
        """Do ``op``; see the module docstring."""
        handler = getattr(self, f"_op_{op}", None) if op in OPERATIONS else None
        if handler is None:
            raise ValueError(f"op={op!r} must be one of {list(OPERATIONS)}")
        self.requests[op] += 1
        if op != "analysis":  # an analysis counts when it is not in memory yet
            self.computed[op] += 1
        try:
            return handler(dict(header), dict(arrays), progress, key)
        finally:
            self.last_active = time.monotonic()

    # -------------------------------------------------------------------- embedding
    def embedder(self, options: Any) -> "_SharedEmbedder":
        """The embedder of this configuration; another configuration's models are freed first (one copy)."""
        key = (options.device, options.dtype, str(options.weights_dir), options.download)
        with self.device_lock:
            if key not in self.embedders:
                self._release()
                self.embedders[key] = _CountingEmbedder(options, self)
        return _SharedEmbedder(self, self.embedders[key], options)

    def count_loads(self, modules: Mapping[str, Any]) -> None:
        """Count the modules that were not loaded before (a new object for an alias is a new load)."""
        with self.guard:
            for alias, module in modules.items():
                known = self.modules.setdefault(alias, [])
                if not any(ref() is module for ref in known):
                    self.loads[alias] = self.loads.get(alias, 0) + 1
                    known[:] = [ref for ref in known if ref() is not None] + [weakref.ref(module)]

    def loaded(self) -> dict[str, int]:
        with self.guard:
            return {alias: n for alias, refs in self.modules.items() if (n := sum(r() is not None for r in refs))}

    def release(self) -> None:
        """Drop every model and return the memory (waits for a running embedding)."""
        with self.device_lock:
            self._release()

    def _release(self) -> None:
        if not self.embedders:
            return
        for embedder in self.embedders.values():
            embedder.release()
        self.embedders.clear()
        gc.collect()
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.empty_cache()
        logger.info("released the models (%.0f s since the last job)", time.monotonic() - self.last_active)

    def _options(self, values: Mapping[str, Any]) -> Any:
        from revdistill.esm.runner import EmbedOptions  # noqa: PLC0415

        values = dict(values, progress=False)
        weights_dir = values.get("weights_dir")
        return EmbedOptions(**{**values, "weights_dir": Path(weights_dir) if weights_dir else None})

    def _op_embed(self, header: dict, arrays: dict, progress: Progress, key: str) -> Reply:
        from revdistill.esm.store import EmbeddingStore  # noqa: PLC0415

        embedder = self.embedder(self._options(header["options"]))
        records = [(str(record_id), str(sequence)) for record_id, sequence in header["records"]]

        def on_progress(done: int, total: int) -> None:
            progress(done / total if total > 0 else 0.0, f"embedded {done} of {total}")

        added = embedder.embed(EmbeddingStore(header["store"]), records, header["models"],
                               per_residue=header["per_residue"], on_progress=on_progress)
        return {"added": int(added)}, {}

    # -------------------------------------------------------------------- the dashboard's work
    def _op_environment(self, header: dict, arrays: dict, progress: Progress, key: str) -> Reply:
        from revdistill.service.analysis import available_device, model_choices  # noqa: PLC0415

        device = available_device()
        choices = model_choices(device, header.get("weights_dir"))
        return {"device": device, "threads": self._threads(device),
                "long_sequences": _analysis_options(device, header.get("weights_dir")).long_sequences,
                "choices": [[c.alias, c.label, c.available, c.reason] for c in choices]}, {}

    def _threads(self, device: str) -> int:
        if device != "cpu":
            return 0
        if self.threads is not None:
            return int(self.threads)
        import torch  # noqa: PLC0415

        return int(torch.get_num_threads())

    def _analysis_embedder(self, header: Mapping[str, Any]) -> Any:
        return self.embedder(_analysis_options(header["choices"]["device"], header.get("weights_dir")))

    def _op_analysis(self, header: dict, arrays: dict, progress: Progress, key: str) -> Reply:
        from revdistill.dashboard.analysis import Choices  # noqa: PLC0415
        from revdistill.experiment.protocol import Protocol  # noqa: PLC0415
        from revdistill.service.analysis import compute_analysis, encode_analysis  # noqa: PLC0415

        with self.guard:
            known = self.analyses.get(key)
        if known is None:
            self.computed["analysis"] += 1
            task = decode_task(header["task"], arrays)
            choices = Choices(**{**header["choices"], "models": tuple(header["choices"]["models"])})
            protocol = Protocol(**{name: tuple(value) if isinstance(value, list) else value
                                   for name, value in header["probe_protocol"].items()})
            known = compute_analysis(task, choices, protocol, embedder=self._analysis_embedder(header),
                                     cache=header.get("cache"), progress=progress)
            with self.guard:
                self.analyses[key] = known
                while len(self.analyses) > _KEPT_ANALYSES:
                    self.analyses.popitem(last=False)
        return encode_analysis(key, known)

    def _op_projection(self, header: dict, arrays: dict, progress: Progress, key: str) -> Reply:
        from revdistill.io.paths import cache_dir  # noqa: PLC0415
        from revdistill.service.analysis import subspace_values  # noqa: PLC0415
        from revdistill.views import projection  # noqa: PLC0415

        with self.guard:
            analysis = self.analyses.get(header["analysis"])
        if analysis is None:
            raise LookupError(f"analysis {header['analysis']} is not in the service (it restarted); "
                              f"compute it again")
        values = subspace_values(analysis.nested, header["subspace"])
        folder = cache_dir("umap", header.get("cache"))
        method = header["method"]
        progress(0.0, f"{method} of {values.shape[0]:,} points")
        if method == "pca":
            coords = projection.pca_view(values)
        elif method == "cached_umap":
            coords = projection.cached_umap_view(values, cache_dir=folder)
        elif method == "umap":
            coords = projection.umap_view(values, cache_dir=folder, progress=progress)
        else:
            raise ValueError(f"method={method!r} must be 'pca', 'umap' or 'cached_umap'")
        progress(1.0, "done")
        reply = {"n_points": int(values.shape[0]), "n_dims": int(values.shape[1]), "found": coords is not None,
                 "note": projection.umap_note(values.shape[0]) if method != "pca" else ""}
        return reply, ({} if coords is None else {"coords": np.asarray(coords)})

    def _op_results(self, header: dict, arrays: dict, progress: Progress, key: str) -> Reply:
        """A finished benchmark (a results CSV or folder by path, or an uploaded CSV's bytes) as the scaling panel
        shows it: both figures as plotly JSON, the caption, where each part came from, and the three tables as CSV
        (:func:`revdistill.views.report.load_results` reads it; its bootstrap runs here, not in a kernel)."""
        import plotly.io as pio  # noqa: PLC0415

        from revdistill.views.report import load_results, results_figures  # noqa: PLC0415

        progress(0.0, "reading the results")
        if "content" in arrays:
            loaded = load_results(np.asarray(arrays["content"], dtype=np.uint8).tobytes(), name=header["name"])
        else:
            loaded = load_results(Path(header["path"]))
        notes = "; ".join(note.short for note in loaded.notes(header.get("cache")))
        figures = results_figures(loaded, data_dir=header.get("data_dir"))
        progress(1.0, "done")
        return {"name": loaded.name, "rows": len(loaded.table), "n_assays": len(loaded.assays),
                "sources": dict(loaded.sources), "caption": loaded.caption() + "\n" + notes,
                "figures": [pio.to_json(figure, validate=False) for figure in figures],
                "csv": {part: frame.to_csv(index=False) for part, frame in
                        (("table", loaded.table), ("summary", loaded.summary), ("paired", loaded.paired))}}, {}

    def _op_estimate(self, header: dict, arrays: dict, progress: Progress, key: str) -> Reply:
        """What Compute has to embed: records already stored, corpus residues, the speed measured before."""
        from revdistill.dashboard.timing import cached_speed, corpus_residues_to_embed, stored_records  # noqa: PLC0415
        from revdistill.experiment.pipeline import default_store_path  # noqa: PLC0415

        options = _analysis_options(header["choices"]["device"], header.get("weights_dir"))  # no model touched
        models, cache = tuple(header["choices"]["models"]), header.get("cache")
        numerics = options.numerics()
        stored = None
        if header.get("ids") is not None:
            path = default_store_path(_StoreIdentity(header["store_key"]), models, numerics, cache)
            in_store = stored_records(path)
            stored = [record_id in in_store for record_id in header["ids"]]
        records = [tuple(record) for record in header.get("records") or []]
        corpus = corpus_residues_to_embed(models, header["choices"]["corpus"], header["choices"]["fit_on"], options,
                                          cache, records or None)
        device = header["choices"]["device"]
        speed = cached_speed(models, device, numerics, header["length"], threads=self._threads(device), cache=cache)
        reply = {"corpus_residues": int(corpus), "speed": None if speed is None else _speed_dict(speed)}
        return reply, ({} if stored is None else {"stored": np.asarray(stored, dtype=bool)})

    def _op_calibrate(self, header: dict, arrays: dict, progress: Progress, key: str) -> Reply:
        from revdistill.dashboard.timing import calibrate  # noqa: PLC0415

        embedder = self._analysis_embedder(header)
        speed = calibrate(embedder, tuple(header["choices"]["models"]), int(header["length"]),
                          cache=header.get("cache"), threads=self._threads(header["choices"]["device"]))
        return {"speed": _speed_dict(speed)}, {}

    def _op_warm_up(self, header: dict, arrays: dict, progress: Progress, key: str) -> Reply:
        """Wait for UMAP's compilation (one low-priority thread per process, started on first use)."""
        from revdistill.views.umap_engine import start_warm_up, umap_ready  # noqa: PLC0415

        start = time.monotonic()
        start_warm_up().join()
        if not umap_ready():
            raise RuntimeError("the UMAP warm-up failed; see the service log")
        return {"seconds": float(time.monotonic() - start)}, {}


def _analysis_options(device: str, weights_dir: str | None) -> Any:
    """The settings the dashboard's work embeds with on ``device`` (the quick requests read them without
    taking the device lock or loading a model)."""
    from revdistill.esm.runner import EmbedOptions, default_dtype  # noqa: PLC0415

    return EmbedOptions(device=device, dtype=default_dtype(device),
                        weights_dir=Path(weights_dir) if weights_dir else None)


class _StoreIdentity:
    """What :func:`~revdistill.experiment.pipeline.default_store_path` reads of a task."""

    def __init__(self, store_key: str) -> None:
        self.from_benchmark = store_key == "proteingym"
        self.key = store_key


def _speed_dict(speed: Any) -> dict[str, Any]:
    from dataclasses import asdict  # noqa: PLC0415

    return {**asdict(speed), "models": list(speed.models)}


class _CountingEmbedder(LocalEmbedder):
    """A LocalEmbedder that tells the context which models it had to load."""

    def __init__(self, options: Any, context: Context) -> None:
        super().__init__(options)
        self._context = context

    def models(self, aliases: Sequence[str]) -> dict[str, Any]:
        modules = super().models(aliases)
        self._context.count_loads(modules)
        return modules


class _SharedEmbedder:
    """The context's embedder for one job: its own options (token budget ...), the device lock held while
    it embeds, and torch's threads set for the job."""

    def __init__(self, context: Context, embedder: Any, options: Any) -> None:
        self.context, self._embedder, self.options = context, embedder, options

    def embed(self, store: Any, records: Any, models: Any, **keywords: Any) -> int:
        with self.context.device_lock:
            if self.context.threads is not None and self.options.device == "cpu":
                import torch  # noqa: PLC0415

                torch.set_num_threads(int(self.context.threads))
            self._embedder.options = self.options
            return self._embedder.embed(store, records, models, **keywords)
