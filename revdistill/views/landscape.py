"""The mutational landscape of a DMS assay: positions × amino acids, measured beside predicted.

From a task's single mutants (``position``, ``wild_type``, ``mutated_aa``, ``score``) and one vector of
out-of-fold predictions of the experiment (``TaskResult.predictions[key]``, original units), :func:`landscape`
builds the matrices and :func:`landscape_figure` draws them: the measured score, the prediction and their
difference as heatmaps over the sequence (wild type marked), and the per-position Spearman between
prediction and score along the sequence (optionally against a second representation, to see where a
larger model's block helps). Nothing is fitted here: the predictions are the experiment's.

>>> import numpy as np, pandas as pd
>>> table = pd.DataFrame({"mutant": ["M1A", "M1C", "K2A"], "position": [1, 1, 2], "wild_type": ["M", "M", "K"],
...                       "mutated_aa": ["A", "C", "A"], "score": [0.1, 0.5, -1.0]})
>>> scape = landscape(table, np.array([0.2, 0.4, -0.8]))
>>> scape.n_cells, scape.positions.tolist(), scape.wild_type
(3, [1, 2], ['M', 'K'])
"""
from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["AMINO_ACIDS", "Landscape", "landscape", "per_position_spearman", "landscape_figure", "prediction_label",
           "typed_array", "decode_array", "MIN_PER_POSITION"]

#: Row order of the heatmaps: grouped by side-chain chemistry (positive, negative, polar, special,
#: hydrophobic, aromatic), the usual order of DMS figures.
AMINO_ACIDS = "RHKDESTNQCGPAVILMFYW"
#: Fewest measured variants at a position for its per-position Spearman.
MIN_PER_POSITION = 5


@dataclass
class Landscape:
    """Single-mutant scores and predictions on a position × amino-acid grid.

    Attributes
    ----------
    positions : numpy.ndarray of shape (n_positions,)
        Every position from the first to the last mutated one (unmeasured ones are empty columns).
    wild_type : list of str
        Wild-type residue per position (``""`` where unknown).
    score, prediction : numpy.ndarray of shape (20, n_positions)
        Rows follow :data:`AMINO_ACIDS`; NaN where nothing was measured.
    mutant : numpy.ndarray of shape (20, n_positions)
        The mutant's label per cell (``""`` where none).
    per_position : pandas.DataFrame
        ``position, n_variants, spearman`` (:func:`per_position_spearman`).
    """

    positions: np.ndarray
    wild_type: list[str]
    score: np.ndarray
    prediction: np.ndarray
    mutant: np.ndarray
    per_position: pd.DataFrame

    @property
    def difference(self) -> np.ndarray:
        """Prediction minus score, ``(20, n_positions)``, in the score's units."""
        return self.prediction - self.score

    @property
    def columns(self) -> list[str]:
        """Column labels: wild type and position (``"M12"``; ``"?12"`` when the wild type is unknown)."""
        return [f"{wild or '?'}{position}" for wild, position in zip(self.wild_type, self.positions)]

    @property
    def n_cells(self) -> int:
        """Measured (position, amino acid) pairs: the heatmap's filled cells."""
        return int(np.isfinite(self.score).sum())


def _singles(table: pd.DataFrame, prediction: np.ndarray) -> pd.DataFrame:
    """Single mutants to the 20 amino acids, with their prediction (duplicates averaged)."""
    needed = {"position", "wild_type", "mutated_aa", "score"}
    if not needed <= set(table.columns):
        raise ValueError(f"a mutational landscape needs a DMS assay: the task's table has {sorted(table.columns)}, "
                         f"not {sorted(needed)}")
    prediction = np.asarray(prediction, dtype=np.float64)
    if prediction.shape != (len(table),):
        raise ValueError(f"prediction has shape {prediction.shape}; the task has {len(table)} records")
    frame = table.assign(prediction=prediction)
    if "n_mutations" in frame:
        frame = frame[frame["n_mutations"] == 1]
    frame = frame[frame["mutated_aa"].isin(list(AMINO_ACIDS))]
    if frame.empty:
        raise ValueError("the task has no single substitutions to the 20 amino acids to draw")
    grouped = frame.groupby(["position", "mutated_aa"], sort=True)
    if grouped.ngroups < len(frame):
        logger.info("%d repeated (position, amino acid) pairs averaged", len(frame) - grouped.ngroups)
    return grouped.agg(score=("score", "mean"), prediction=("prediction", "mean"), mutant=("mutant", "first"),
                       wild_type=("wild_type", "first")).reset_index()


def per_position_spearman(frame: pd.DataFrame, min_variants: int = MIN_PER_POSITION) -> pd.DataFrame:
    """Spearman between prediction and score within each position (NaN below ``min_variants`` variants).

    The definition of :func:`revdistill.experiment.probe.spearman` (Pearson correlation of average ranks;
    NaN when either side is constant), computed for all positions at once: a loop over 3,000 positions
    would hold the kernel for a second.
    """
    by = frame["position"].to_numpy()
    ranks = frame.groupby("position")[["prediction", "score"]].rank()
    centred = ranks - ranks.groupby(by).transform("mean")
    grouped = pd.DataFrame({"position": by, "cross": centred["prediction"] * centred["score"],
                            "a": centred["prediction"] ** 2, "b": centred["score"] ** 2}).groupby("position")
    sums, counts = grouped.sum(), grouped.size()
    denominator = np.sqrt(sums["a"] * sums["b"])
    with np.errstate(invalid="ignore", divide="ignore"):
        rho = np.where((denominator > 0) & (counts >= min_variants), sums["cross"] / denominator, np.nan)
    return pd.DataFrame({"position": sums.index.to_numpy(dtype=np.int64), "n_variants": counts.to_numpy(),
                         "spearman": np.clip(rho, -1.0, 1.0)})


def landscape(table: pd.DataFrame, prediction: np.ndarray, min_variants: int = MIN_PER_POSITION) -> Landscape:
    """Grid the single mutants of a DMS task.

    Parameters
    ----------
    table : pandas.DataFrame
        The task's table (``mutant, position, wild_type, mutated_aa, score``; ``n_mutations`` when present
        keeps singles only).
    prediction : numpy.ndarray of shape (n_records,)
        Out-of-fold predictions for the same rows (from ``TaskResult.predictions``).
    min_variants : int
        Fewest variants at a position for its per-position Spearman.

    Returns
    -------
    Landscape
    """
    frame = _singles(table, prediction)
    first, last = int(frame["position"].min()), int(frame["position"].max())
    positions = np.arange(first, last + 1)
    column = frame["position"].to_numpy(dtype=np.int64) - first
    row = frame["mutated_aa"].map({aa: i for i, aa in enumerate(AMINO_ACIDS)}).to_numpy(dtype=np.int64)
    score = np.full((len(AMINO_ACIDS), len(positions)), np.nan)
    predicted = np.full_like(score, np.nan)
    mutant = np.full(score.shape, "", dtype=object)
    score[row, column] = frame["score"].to_numpy(dtype=np.float64)
    predicted[row, column] = frame["prediction"].to_numpy(dtype=np.float64)
    mutant[row, column] = frame["mutant"].astype(str).to_numpy()
    wild = dict(zip(frame["position"].astype(int), frame["wild_type"].astype(str)))
    return Landscape(positions=positions, wild_type=[wild.get(int(p), "") for p in positions], score=score,
                     prediction=predicted, mutant=mutant, per_position=per_position_spearman(frame, min_variants))


def prediction_label(key: Sequence[Any], both_conventions: bool = False) -> str:
    """Human name of a prediction key ``(scheme, fit_on, representation, model, dim)``."""
    from revdistill.views.style import series_name  # noqa: PLC0415

    _, fit_on, representation, model, dim = key
    name = series_name(representation, fit_on, both_conventions)
    if representation in ("nested", "truncated"):
        return f"{name}, k = {dim}" + (f" (inside {model})" if representation == "nested" else "")
    return f"{name} {model} ({dim} dims)"


def _range(values: np.ndarray, symmetric: bool = False) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return (-1.0, 1.0)
    if symmetric:
        bound = float(np.quantile(np.abs(finite), 0.98)) or 1.0
        return (-bound, bound)
    low, high = (float(v) for v in np.quantile(finite, [0.02, 0.98]))
    return (low, high) if high > low else (low - 0.5, high + 0.5)


def typed_array(values: np.ndarray) -> dict[str, str]:
    """plotly's typed-array form of a float array (``dtype``, base64 ``bdata``, ``shape``): plotly.js reads it
    as is, and a figure widget sends it as one string instead of nested lists (a 2-D array would become
    lists of Python floats, seconds for a long protein)."""
    array = np.ascontiguousarray(values, dtype=np.float64)
    return {"dtype": "f8", "bdata": base64.b64encode(array.tobytes()).decode("ascii"),
            "shape": ", ".join(str(size) for size in array.shape)}


def decode_array(value: Any) -> np.ndarray:
    """A figure's data array as numpy: decodes :func:`typed_array`'s form, passes anything else through."""
    if isinstance(value, dict) and "bdata" in value:
        shape = tuple(int(size) for size in str(value["shape"]).split(","))
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).reshape(shape)
    return np.asarray(value, dtype=np.float64)


def _heatmap(go: Any, scape: Landscape, values: np.ndarray, name: str, zrange: tuple[float, float],
             colorscale: str, colorbar: dict[str, Any] | None) -> Any:
    # Columns are named wild type + position ("M12"), so hovering reads the mutant ("M12A") from x and y; the
    # score rides in customdata and the prediction in text (numbers, formatted by the hover template).
    return go.Heatmap(z=typed_array(values), x=scape.columns, y=list(AMINO_ACIDS), zmin=zrange[0], zmax=zrange[1],
                      colorscale=colorscale, name=name, customdata=typed_array(scape.score),
                      text=typed_array(scape.prediction), showscale=colorbar is not None, colorbar=colorbar,
                      xgap=0, ygap=0, hoverongaps=False,
                      hovertemplate=("%{x}%{y}<br>score %{customdata:.3f}<br>prediction %{text:.3f}"
                                     f"<extra>{name}</extra>"))


def landscape_figure(scape: Landscape, *, prediction_name: str, title: str = "",
                     compare: Landscape | None = None, compare_name: str = "", note: str = "",
                     width: int = 1100) -> Any:
    """Measured, predicted and difference heatmaps over the sequence, and per-position Spearman.

    Parameters
    ----------
    scape : Landscape
    prediction_name : str
        What predicted it (legend and hover).
    title : str
    compare : Landscape, optional
        A second representation's landscape of the same task: its per-position Spearman is drawn too,
        and the difference of the two.
    compare_name : str
    note : str
        Grey line under the figure (protocol, subsample ...).
    width : int

    Returns
    -------
    plotly.graph_objects.Figure
    """
    import plotly.graph_objects as go  # noqa: PLC0415
    from plotly.subplots import make_subplots  # noqa: PLC0415

    from revdistill.views.style import COLOURS, TEMPLATE  # noqa: PLC0415

    figure = make_subplots(rows=4, cols=1, shared_xaxes=True, vertical_spacing=0.045,
                           row_heights=[0.27, 0.27, 0.27, 0.19],
                           subplot_titles=("measured score", f"out-of-fold prediction · {prediction_name}",
                                           "prediction − score", "per-position Spearman (prediction vs score)"))
    scale = _range(scape.score)
    bar = {"len": 0.5, "y": 0.76, "thickness": 12, "title": {"text": "score"}}
    figure.add_trace(_heatmap(go, scape, scape.score, "measured", scale, "RdBu", bar), row=1, col=1)
    figure.add_trace(_heatmap(go, scape, scape.prediction, "predicted", scale, "RdBu", None), row=2, col=1)
    difference = {"len": 0.24, "y": 0.35, "thickness": 12, "title": {"text": "pred − score"}}
    figure.add_trace(_heatmap(go, scape, scape.difference, "difference", _range(scape.difference, True), "PiYG",
                              difference), row=3, col=1)
    columns = scape.columns
    label = dict(zip(scape.positions.tolist(), columns))
    known = [i for i, wild in enumerate(scape.wild_type) if wild in AMINO_ACIDS]
    for row in (1, 2, 3):
        figure.add_trace(go.Scatter(x=[columns[i] for i in known], y=[scape.wild_type[i] for i in known],
                                    mode="markers", name="wild type", legendgroup="wt", showlegend=row == 1,
                                    marker={"symbol": "x-thin", "size": 5, "line": {"width": 1, "color": "black"}},
                                    hovertemplate="wild type %{x}<extra></extra>"), row=row, col=1)
    per = scape.per_position
    figure.add_trace(go.Scatter(x=[label[p] for p in per["position"]], y=per["spearman"], mode="lines+markers",
                                name=prediction_name, line={"color": COLOURS["rd"], "width": 1.2}, marker={"size": 3},
                                connectgaps=False), row=4, col=1)
    if compare is not None:
        other = compare.per_position
        figure.add_trace(go.Scatter(x=[label[p] for p in other["position"]], y=other["spearman"], mode="lines",
                                    name=compare_name, line={"color": COLOURS["esm2"], "width": 1, "dash": "dot"}),
                         row=4, col=1)
        merged = per.merge(other, on="position", suffixes=("", "_other"))
        gain = merged["spearman"] - merged["spearman_other"]
        figure.add_trace(go.Bar(x=[label[p] for p in merged["position"]], y=gain, name=f"gain over {compare_name}",
                                marker={"color": np.where(gain.fillna(0) >= 0, "#4d9221", "#c51b7d")},
                                opacity=0.45), row=4, col=1)
    for row in (1, 2, 3):
        figure.update_yaxes(tickfont={"size": 8}, autorange="reversed", tickmode="array", tickvals=list(AMINO_ACIDS),
                            ticktext=list(AMINO_ACIDS), row=row, col=1)
    figure.update_yaxes(range=[-1.05, 1.05], title_text="ρ", row=4, col=1)
    figure.update_xaxes(type="category", categoryorder="array", categoryarray=columns)
    figure.update_xaxes(title_text="position (wild type and number)", row=4, col=1)
    annotations = list(figure.layout.annotations)
    if note:
        annotations.append({"text": note, "xref": "paper", "yref": "paper", "x": 0, "y": -0.08, "showarrow": False,
                            "xanchor": "left", "yanchor": "top", "font": {"size": 10, "color": "#777"}})
    figure.update_layout(template=TEMPLATE, height=1000, width=width, title={"text": title} if title else None,
                         legend={"orientation": "h", "y": -0.1, "x": 0.5, "xanchor": "center"},
                         margin={"l": 50, "r": 20, "t": 60, "b": 90}, annotations=annotations, bargap=0)
    return figure
