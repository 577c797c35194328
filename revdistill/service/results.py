"""What a visitor's kernel holds: typed results of the compute service, and the calls that return them.

:class:`DashboardCompute` is the dashboard's one door to computation. Each method sends a request to a
backend (:class:`~.client.ServiceCompute`, the server's one service; or :class:`~.client.LocalCompute`, in
this process) and decodes the answer into a typed result: :class:`Environment` (device and model choices),
:class:`AnalysisResult` (everything the panels draw for one Compute), :class:`Projection` (a PCA or UMAP of
one subspace). Importing this module imports numpy and pandas only.
"""
from __future__ import annotations

import base64
import dataclasses
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from revdistill.service.protocol import decode_frame, encode_task

__all__ = ["AnalysisResult", "DashboardCompute", "Environment", "LadderInfo", "LoadedRun", "Projection", "SpeedInfo"]

Progress = Callable[[float, str], None]


@dataclass(frozen=True)
class LadderInfo:
    """A reference ladder as the panels show it: its id, convention, one-line description, per-step rows."""

    ladder_id: str
    fit_on: str
    description: str
    diagnostics: list[dict[str, Any]]

    def describe(self) -> str:
        return self.description


@dataclass
class AnalysisResult:
    """Everything the panels draw for one task and one choice of models, ladder and protocol.

    Attributes
    ----------
    key : str
        The service's id of the analysis (projections name it).
    task : Task
    choices : Choices
    table, summary : pandas.DataFrame
        The experiment's results (what ``revdistill proteingym`` writes) and its Spearman summary.
    paired : pandas.DataFrame
        Paired differences RD − ESM-2, RD − naive, prefix − truncated (:mod:`revdistill.experiment.paired`).
    views : SlicerViews
        Per-``k`` views of the primary ladder's nested embedding.
    ladders : list of LadderInfo
        The first is the primary one.
    predictions : dict
        Out-of-fold predictions ``(n_records,)`` per ``(scheme, fit_on, representation, model, dim)``.
    boundaries, names : tuple
        The nested embedding's levels.
    block_correlations : list of float
        Largest |correlation| of each level's block with the prefix before it, on the pooled rows.
    """

    key: str
    task: Any
    choices: Any
    protocol_id: str
    table: Any
    summary: Any
    paired: Any
    views: Any
    ladders: list[LadderInfo]
    predictions: dict[tuple, np.ndarray]
    boundaries: tuple[int, ...]
    names: tuple[str, ...]
    block_correlations: list[float]
    schemes: tuple[str, ...]
    models: tuple[str, ...]
    trained: bool
    caption_text: str
    seconds: dict[str, float] = field(default_factory=dict)
    request: tuple[dict[str, Any], dict[str, np.ndarray]] | None = field(default=None, repr=False)

    @property
    def ladder(self) -> LadderInfo:
        """The primary reference ladder (views show its nested embedding)."""
        return self.ladders[0]

    def caption(self) -> str:
        return self.caption_text


@dataclass(frozen=True)
class Environment:
    """Where the service computes: ``device``, torch ``threads`` of a job, its handling of long sequences
    (:data:`revdistill.esm.batching.LONG_MODES`) and the model choices."""

    device: str
    threads: int
    long_sequences: str
    choices: tuple[Any, ...]


@dataclass(frozen=True)
class Projection:
    """Two-dimensional coordinates of one subspace (None: a UMAP not computed yet)."""

    coords: np.ndarray | None
    n_points: int
    n_dims: int
    note: str = ""


@dataclass(frozen=True)
class LoadedRun:
    """A finished benchmark as the scaling panel shows it (read in the service by
    :func:`revdistill.views.report.load_results`).

    Attributes
    ----------
    name : str
        The table's file name (or the upload's).
    rows, n_assays : int
        Rows of the results table and assays in it.
    sources : dict of str to str
        Where each part came from (``table``, ``paired``, ``variants``).
    caption : str
        What the table holds, the ids that produced it and its deviations from the released method.
    figures : tuple of dict
        The scaling figures (by size, by prefix), each with its paired panel, as plotly figure dicts.
    csv : dict of str to str
        ``table``, ``summary`` (per series) and ``paired`` (paired differences) as CSV text.
    """

    name: str
    rows: int
    n_assays: int
    sources: dict[str, str]
    caption: str
    figures: tuple[dict[str, Any], ...]
    csv: dict[str, str]


@dataclass(frozen=True)
class SpeedInfo:
    """What an estimate needs from the service: stored records, corpus residues, a measured speed."""

    stored: np.ndarray | None
    corpus_residues: int
    speed: Any


class DashboardCompute:
    """The dashboard's computations, sent to ``backend`` and decoded into typed results.

    Parameters
    ----------
    backend : callable
        ``backend(op, header, arrays, progress=, cancel=) -> (header, arrays)``.
    cache_dir, weights_dir : path, optional
        Sent with each request (the service's cache and weights folders).
    """

    def __init__(self, backend: Callable[..., tuple[dict[str, Any], dict[str, np.ndarray]]],
                 cache_dir: str | Path | None = None, weights_dir: str | Path | None = None) -> None:
        self.backend = backend
        self.cache_dir = None if cache_dir is None else str(cache_dir)
        self.weights_dir = None if weights_dir is None else str(weights_dir)
        self._environment: Environment | None = None
        self._lock = threading.Lock()

    def _common(self) -> dict[str, Any]:
        return {"cache": self.cache_dir, "weights_dir": self.weights_dir}

    def environment(self, refresh: bool = False) -> Environment:
        """Device, threads and model choices (asked once; ``refresh`` asks again, e.g. after a download)."""
        from revdistill.dashboard.analysis import ModelChoice  # noqa: PLC0415

        with self._lock:
            if self._environment is None or refresh:
                reply, _ = self.backend("environment", self._common())
                self._environment = Environment(device=reply["device"], threads=int(reply["threads"]),
                                                long_sequences=str(reply["long_sequences"]),
                                                choices=tuple(ModelChoice(*choice) for choice in reply["choices"]))
            return self._environment

    def analysis(self, task: Any, choices: Any, protocol: Any, *, progress: Progress | None = None,
                 cancel: threading.Event | None = None) -> AnalysisResult:
        """Ladders, experiment and views for ``task`` (shared with every visitor who asks the same)."""
        spec, arrays = encode_task(task)
        header = {**self._common(), "task": spec, "choices": dataclasses.asdict(choices),
                  "probe_protocol": dataclasses.asdict(protocol)}
        reply, reply_arrays = self.backend("analysis", header, arrays, progress=progress, cancel=cancel)
        return decode_analysis(reply, reply_arrays, task, choices, request=(header, arrays))

    def projection(self, analysis: AnalysisResult, subspace: str, method: str, *, progress: Progress | None = None,
                   cancel: threading.Event | None = None) -> Projection:
        """PCA (``"pca"``), UMAP (``"umap"``) or a cached UMAP (``"cached_umap"``) of one subspace.

        A service that restarted since the analysis gets the analysis again first (its parts are cached).
        """
        header = {**self._common(), "analysis": analysis.key, "subspace": subspace, "method": method}
        try:
            reply, arrays = self.backend("projection", header, progress=progress, cancel=cancel)
        except LookupError:
            if analysis.request is None:
                raise
            self.backend("analysis", *analysis.request, cancel=cancel)
            reply, arrays = self.backend("projection", header, progress=progress, cancel=cancel)
        return Projection(coords=arrays.get("coords"), n_points=int(reply["n_points"]), n_dims=int(reply["n_dims"]),
                          note=str(reply.get("note", "")))

    def estimate(self, choices: Any, *, length: float, store_key: str | None = None, ids: list[str] | None = None,
                 records: list[tuple[str, str]] | None = None) -> SpeedInfo:
        """Which of ``ids`` the task's store holds, corpus residues still to embed, the cached speed."""
        header = {**self._common(), "choices": dataclasses.asdict(choices), "length": int(round(length)),
                  "store_key": store_key, "ids": ids, "records": records}
        reply, arrays = self.backend("estimate", header)
        return SpeedInfo(stored=arrays.get("stored"), corpus_residues=int(reply["corpus_residues"]),
                         speed=_speed(reply["speed"]))

    def calibrate(self, choices: Any, length: float) -> Any:
        """Measure the embedding speed of the chosen models (cached by the service)."""
        header = {**self._common(), "choices": dataclasses.asdict(choices), "length": int(round(length))}
        return _speed(self.backend("calibrate", header)[0]["speed"])

    def results(self, *, path: str | Path | None = None, content: bytes | None = None, name: str | None = None,
                data_dir: str | Path | None = None, progress: Progress | None = None,
                cancel: threading.Event | None = None) -> LoadedRun:
        """A finished benchmark: the results CSV or folder at ``path`` (read by the service) or an uploaded CSV's
        ``content`` (named ``name``); ``data_dir`` is the ProteinGym folder the zero-shot reference comes from."""
        if (path is None) == (content is None):
            raise ValueError("give either path= or content= (an uploaded results CSV)")
        header = {**self._common(), "path": None if path is None else str(path), "name": name,
                  "data_dir": None if data_dir is None else str(data_dir)}
        arrays = {} if content is None else {"content": np.frombuffer(content, dtype=np.uint8)}
        reply, _ = self.backend("results", header, arrays, progress=progress, cancel=cancel)
        return LoadedRun(name=str(reply["name"]), rows=int(reply["rows"]), n_assays=int(reply["n_assays"]),
                         sources=dict(reply["sources"]), caption=str(reply["caption"]),
                         figures=tuple(_typed_arrays(json.loads(text)) for text in reply["figures"]),
                         csv=dict(reply["csv"]))

    def warm_up(self) -> float:
        """Compile UMAP in the service (once per server); returns the seconds it took (0 when ready)."""
        return float(self.backend("warm_up", {})[0]["seconds"])


def _typed_arrays(value: Any) -> Any:
    """``value`` (a plotly figure's JSON) with plotly's typed-array entries (``{"dtype", "bdata"[, "shape"]}``,
    base64 of the array's bytes, as plotly writes numpy arrays) turned back into numpy arrays, bit for bit."""
    if isinstance(value, dict):
        if set(value) in ({"dtype", "bdata"}, {"dtype", "bdata", "shape"}) and isinstance(value["bdata"], str):
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
            shape = value.get("shape")
            return array.reshape([int(part) for part in str(shape).split(",")]) if shape else array
        return {key: _typed_arrays(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_typed_arrays(item) for item in value]
    return value


def _speed(values: Mapping[str, Any] | None) -> Any:
    if values is None:
        return None
    from revdistill.dashboard.timing import Speed  # noqa: PLC0415

    return Speed(**{**values, "models": tuple(values["models"])})


def decode_analysis(header: Mapping[str, Any], arrays: Mapping[str, np.ndarray], task: Any, choices: Any,
                    request: Any = None) -> AnalysisResult:
    """The :class:`AnalysisResult` of an ``analysis`` reply.

    See :func:`revdistill.service.analysis.encode_analysis`.
    """
    from revdistill.views.slicer import SlicerViews  # noqa: PLC0415

    views = header["views"]
    slicer = SlicerViews(ks=arrays["views.ks"], boundaries=tuple(views["boundaries"]), names=tuple(views["names"]),
                         nn_agreement=arrays["views.nn_agreement"], cosine=arrays["views.cosine"],
                         views=arrays["views.views"], n_neighbors=int(views["n_neighbors"]))
    predictions = {tuple(key): arrays[f"prediction:{index}"] for index, key in enumerate(header["predictions"])}
    models = tuple(header["choices"]["models"])
    return AnalysisResult(
        key=header["key"], task=task, choices=dataclasses.replace(choices, models=models),
        protocol_id=header["protocol_id"], table=decode_frame(header["table"], arrays),
        summary=decode_frame(header["summary"], arrays), paired=decode_frame(header["paired"], arrays),
        views=slicer,
        ladders=[LadderInfo(**ladder) for ladder in header["ladders"]], predictions=predictions,
        boundaries=tuple(header["boundaries"]), names=tuple(header["names"]),
        block_correlations=list(header["block_correlations"]), schemes=tuple(header["schemes"]),
        models=tuple(header["models"]), trained=bool(header["trained"]), caption_text=header["caption"],
        seconds=dict(header["seconds"]), request=request)
