"""Streaming, mergeable first and second moments of per-residue embeddings.

A :class:`Moments` holds, for the concatenation of several embedding *levels* (one per model of
the ladder), the residue count, the mean and the centred scatter matrix
``sum_i (z_i - mean)(z_i - mean)^T`` in float64. Chunks are accumulated with Chan et al.'s
pairwise update, so shards computed on different GPUs or machines combine exactly
(``a + b``, :meth:`Moments.merge`, :meth:`Moments.all_reduce`), and the whole reverse-distillation
ladder can be fitted from one streaming pass without keeping residues in memory.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from revdistill.core.arrays import as_float_tensor, check_finite
from revdistill.io.files import encode_meta

FORMAT_NAME = "revdistill-moments"
FORMAT_VERSION = 1
_PRECISIONS = {"float64": torch.float64, "float32": torch.float32}


class Moments:
    """Joint count, mean and centred scatter of several concatenated embedding levels.

    Parameters
    ----------
    names : sequence of str
        Level names in ladder order (small to large), e.g. ``("8M", "35M")``.
    dims : sequence of int
        Feature dimension of each level, e.g. ``(320, 480)``.
    device : str or torch.device, default="cpu"
        Where the float64 accumulators live (``"cuda"`` for the GPU path).
    chunk_size : int, default=16384
        Rows processed at once by :meth:`update`; bounds the float64 working memory.
    precision : {"float64", "float32"}, default="float64"
        Arithmetic of each chunk's cross-products. Chunks are always combined in float64.
        ``"float32"`` roughly doubles CPU throughput; chunks are then capped at 8192 rows so the
        rounding (about 1e-6 relative) stays far below the sampling error of any covariance
        estimated from that many residues. The default is exact to float64 rounding.

    Attributes
    ----------
    count : int
        Number of residues accumulated.
    mean : torch.Tensor of shape (n_features,)
        Mean of the concatenated levels, float64.
    scatter : torch.Tensor of shape (n_features, n_features)
        Centred sum of cross-products, float64; ``scatter / (count - 1)`` is the covariance.
    """

    def __init__(
        self,
        names: Sequence[str],
        dims: Sequence[int],
        device: str | torch.device = "cpu",
        chunk_size: int = 16384,
        precision: str = "float64",
    ) -> None:
        names = tuple(str(name) for name in names)
        dims = tuple(int(dim) for dim in dims)
        if len(names) == 0:
            raise ValueError("names must name at least one level, got an empty sequence")
        if len(names) != len(dims):
            raise ValueError(f"names has {len(names)} entries but dims has {len(dims)}; they must match")
        if len(set(names)) != len(names):
            raise ValueError(f"level names must be unique, got {names}")
        if any(dim < 1 for dim in dims):
            raise ValueError(f"every dim must be a positive integer, got {dims}")
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size={chunk_size} must be a positive integer")
        self.names = names
        self.dims = dims
        self.device = torch.device(device)
        if precision not in _PRECISIONS:
            raise ValueError(f"precision={precision!r} is not supported; choose one of {tuple(_PRECISIONS)}")
        self.chunk_size = int(chunk_size)
        self.precision = precision
        total = sum(dims)
        self.count = 0
        self._shift: torch.Tensor | None = None
        self.mean = torch.zeros(total, dtype=torch.float64, device=self.device)
        self.scatter = torch.zeros(total, total, dtype=torch.float64, device=self.device)

    # ------------------------------------------------------------------ layout
    @property
    def n_features(self) -> int:
        """Total dimension of the concatenated levels."""
        return sum(self.dims)

    def _column_names(self) -> list[str]:
        """``level[column]`` of each concatenated column, for messages."""
        return [f"{name}[{column}]" for name, dim in zip(self.names, self.dims) for column in range(dim)]

    def slice_of(self, name: str) -> slice:
        """Columns of level ``name`` in the concatenated layout."""
        if name not in self.names:
            raise ValueError(f"unknown level {name!r}; this Moments holds {list(self.names)}")
        index = self.names.index(name)
        start = sum(self.dims[:index])
        return slice(start, start + self.dims[index])

    # ------------------------------------------------------------------ updates
    def update(self, levels: Mapping[str, Any]) -> "Moments":
        """Accumulate one batch of residues given level by level.

        Parameters
        ----------
        levels : mapping of str to array of shape (n_residues, dim)
            One array per level, all with the same rows (the same residues), numpy or torch.
        """
        missing = [name for name in self.names if name not in levels]
        extra = [name for name in levels if name not in self.names]
        if missing or extra:
            raise ValueError(
                f"update() needs exactly the levels {list(self.names)}; missing {missing}, unexpected {extra}"
            )
        blocks = []
        for name, dim in zip(self.names, self.dims):
            block = as_float_tensor(levels[name], name=name, device=self.device)
            if block.ndim != 2 or block.shape[1] != dim:
                raise ValueError(f"level {name!r} must have shape (n, {dim}), got {tuple(block.shape)}")
            blocks.append(block)
        rows = {block.shape[0] for block in blocks}
        if len(rows) != 1:
            counts = {name: block.shape[0] for name, block in zip(self.names, blocks)}
            raise ValueError(f"all levels must have the same number of rows (residues), got {counts}")
        return self.update_concatenated(torch.cat(blocks, dim=1))

    def update_concatenated(self, values: Any) -> "Moments":
        """Accumulate residues whose levels are already concatenated, shape (n, n_features)."""
        values = as_float_tensor(values, name="values", device=self.device)
        if values.ndim != 2 or values.shape[1] != self.n_features:
            raise ValueError(
                f"values must have shape (n, {self.n_features}) for levels {list(self.names)}, "
                f"got {tuple(values.shape)}"
            )
        work_dtype = _PRECISIONS[self.precision]
        step = self.chunk_size if work_dtype == torch.float64 else min(self.chunk_size, 8192)
        for start in range(0, values.shape[0], step):
            chunk = values[start : start + step].to(work_dtype, copy=True)
            count = chunk.shape[0]
            if count == 0:
                continue
            if not bool(torch.isfinite(chunk.sum(dim=0)).all()):
                check_finite(chunk, "values" if work_dtype == values.dtype else f"values (as {self.precision})",
                             columns=self._column_names())
            # Centre on a fixed shift (the first chunk's mean) so the float64 sums stay well
            # conditioned, then convert each chunk to (count, mean, centred scatter) and merge.
            if self._shift is None:
                self._shift = chunk.to(torch.float64).mean(dim=0)
            shift = self._shift.to(work_dtype)
            chunk.sub_(shift)
            column_sum = chunk.sum(dim=0, dtype=torch.float64)
            scatter = _gram(chunk).to(torch.float64) - torch.outer(column_sum, column_sum) / count
            self._combine(count, shift.to(torch.float64) + column_sum / count, scatter)
        return self

    def _combine(self, count: int, mean: torch.Tensor, scatter: torch.Tensor) -> None:
        """Chan et al.'s pairwise merge of (count, mean, scatter) into self; refuses non-finite results
        (and leaves self unchanged)."""
        if count == 0:
            return
        if self.count == 0:
            self._check_statistics(count, mean, scatter)
            self.count = int(count)
            self.mean = mean.clone()
            self.scatter = scatter.clone()
            return
        total = self.count + count
        delta = mean - self.mean
        new_scatter = self.scatter + scatter + torch.outer(delta, delta) * (self.count * count / total)
        new_mean = self.mean + delta * (count / total)
        self._check_statistics(total, new_mean, new_scatter)
        self.scatter = new_scatter
        self.mean = new_mean
        self.count = total

    def _check_statistics(self, count: int, mean: torch.Tensor, scatter: torch.Tensor, loaded: bool = False) -> None:
        """Raise a ValueError naming the levels whose mean or scatter is NaN or infinite."""
        bad_mean = ~torch.isfinite(mean)
        bad_scatter = ~torch.isfinite(scatter)
        if not (bool(bad_mean.any()) or bool(bad_scatter.any())):
            return
        bad_columns = bad_mean | bad_scatter.any(dim=0) | bad_scatter.any(dim=1)
        levels = [name for name in self.names if bool(bad_columns[self.slice_of(name)].any())]
        arrays = [label for label, bad in (("mean", bad_mean), ("scatter", bad_scatter)) if bool(bad.any())]
        if loaded:
            raise ValueError(f"moments array(s) {arrays} hold NaN or infinity for level(s) {levels}: damaged, or "
                             f"saved from statistics that overflowed")
        raise ValueError(
            f"Moments of level(s) {levels}: the accumulated {' and '.join(arrays)} became NaN or infinite after "
            f"{count} residues: the values are too large for float64 second moments (squares overflow "
            f"past about 1e154) or hold NaN/inf; rescale or clean the inputs of those levels"
        )

    # ------------------------------------------------------------------ merging
    def merge(self, other: "Moments") -> "Moments":
        """Add another shard's moments into this one, in place, and return self."""
        if not isinstance(other, Moments):
            raise TypeError(f"can only merge Moments, got {type(other).__name__}")
        if other.names != self.names or other.dims != self.dims:
            raise ValueError(
                f"cannot merge moments of levels {list(other.names)} {other.dims} into "
                f"{list(self.names)} {self.dims}"
            )
        self._combine(other.count, other.mean.to(self.device), other.scatter.to(self.device))
        return self

    def __add__(self, other: "Moments") -> "Moments":
        return self.copy().merge(other)

    def copy(self) -> "Moments":
        """A deep copy."""
        clone = Moments(self.names, self.dims, device=self.device, chunk_size=self.chunk_size,
                        precision=self.precision)
        clone.count = self.count
        clone.mean = self.mean.clone()
        clone.scatter = self.scatter.clone()
        clone._shift = None if self._shift is None else self._shift.clone()
        return clone

    def to(self, device: str | torch.device) -> "Moments":
        """A copy whose accumulators live on ``device``."""
        moved = self.copy()
        moved.device = torch.device(device)
        moved.mean = moved.mean.to(moved.device)
        moved.scatter = moved.scatter.to(moved.device)
        moved._shift = None if moved._shift is None else moved._shift.to(moved.device)
        return moved

    def all_reduce(self, group: Any = None) -> "Moments":
        """Combine the moments of every rank of a ``torch.distributed`` group, in place.

        Sums ``count``, ``count * mean`` and the uncentred second moment about the rank-0 mean,
        which is exact in float64 up to rounding, then re-centres.
        """
        import torch.distributed as dist  # noqa: PLC0415

        if not (dist.is_available() and dist.is_initialized()):
            raise RuntimeError("all_reduce() needs an initialised torch.distributed process group")
        # A common shift (rank 0's mean) keeps the uncentred sums well conditioned.
        shift = self.mean.clone()
        dist.broadcast(shift, src=0, group=group)
        count = torch.tensor([float(self.count)], dtype=torch.float64, device=self.device)
        delta = self.mean - shift
        first = delta * self.count
        second = self.scatter + torch.outer(delta, delta) * self.count
        for tensor in (count, first, second):
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
        total = int(round(count.item()))
        if total == 0:
            return self
        mean_delta = first / total
        scatter = second - torch.outer(mean_delta, mean_delta) * total
        self._check_statistics(total, shift + mean_delta, scatter)
        self.count = total
        self.mean = shift + mean_delta
        self.scatter = scatter
        return self

    # ------------------------------------------------------------------ statistics
    def covariance(self, ddof: int = 1) -> torch.Tensor:
        """Covariance of the concatenated levels, shape (n_features, n_features), float64."""
        if self.count - ddof <= 0:
            raise ValueError(f"covariance needs more than ddof={ddof} residues, have {self.count}")
        return self.scatter / (self.count - ddof)

    def __repr__(self) -> str:
        levels = ", ".join(f"{name}:{dim}" for name, dim in zip(self.names, self.dims))
        return f"Moments(count={self.count}, levels=[{levels}], device={self.device})"

    # ------------------------------------------------------------------ persistence
    def to_state(self) -> dict[str, np.ndarray]:
        """Plain arrays (no objects) describing these moments, for npz or HDF5."""
        meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "names": list(self.names),
                "dims": list(self.dims)}
        return {
            "meta": encode_meta(meta),
            "count": np.asarray(self.count, dtype=np.int64),
            "mean": self.mean.cpu().numpy(),
            "scatter": self.scatter.cpu().numpy(),
        }

    @classmethod
    def from_state(cls, state: Mapping[str, np.ndarray], device: str | torch.device = "cpu") -> "Moments":
        """Rebuild from :meth:`to_state`'s arrays, checking format, version, shapes and values.

        Raises
        ------
        ValueError
            Wrong format or version, missing arrays, wrong shapes or dtypes, a negative or fractional
            count, non-finite statistics or negative variances; the message names the array.
        """
        from revdistill.io.files import read_meta  # noqa: PLC0415

        meta = read_meta(state, FORMAT_NAME, FORMAT_VERSION)
        missing = [key for key in ("count", "mean", "scatter") if key not in state]
        if missing:
            raise ValueError(f"moments state lacks the array(s) {missing}")
        try:
            moments = cls(meta["names"], meta["dims"], device=device)
        except (KeyError, TypeError, ValueError) as error:
            raise ValueError(f"moments metadata (names, dims) is damaged: {error}") from None
        total = moments.n_features
        arrays = {key: np.asarray(state[key]) for key in ("count", "mean", "scatter")}
        for key, array in arrays.items():
            if array.dtype.kind not in "iuf":
                raise ValueError(f"moments array {key!r} has dtype {array.dtype}; expected numbers")
        mean, scatter, count = arrays["mean"], arrays["scatter"], arrays["count"]
        if mean.shape != (total,) or scatter.shape != (total, total):
            raise ValueError(
                f"moments arrays have shapes mean {mean.shape}, scatter {scatter.shape}; "
                f"the metadata needs ({total},) and ({total}, {total})"
            )
        if count.shape != () or not np.isfinite(count) or count < 0 or count != np.floor(count):
            raise ValueError(f"moments array 'count' must be one non-negative integer, got {count.tolist()!r}")
        moments.count = int(count)
        moments.mean = torch.as_tensor(mean, dtype=torch.float64, device=moments.device).clone()
        moments.scatter = torch.as_tensor(scatter, dtype=torch.float64, device=moments.device).clone()
        moments._check_statistics(moments.count, moments.mean, moments.scatter, loaded=True)
        diagonal = torch.diagonal(moments.scatter)
        if bool((diagonal < -1e-9 * max(1.0, float(diagonal.abs().max()))).any()):
            levels = [name for name in moments.names if bool((diagonal[moments.slice_of(name)] < 0).any())]
            raise ValueError(f"moments array 'scatter' has negative variances for level(s) {levels}: damaged")
        return moments

    def save(self, path: str | Path) -> Path:
        """Write to ``path`` as an uncompressed ``.npz`` of plain arrays."""
        from revdistill.io.files import save_npz  # noqa: PLC0415

        return save_npz(path, self.to_state())

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "Moments":
        """Read a file written by :meth:`save`; pickled payloads are refused."""
        from revdistill.io.files import load_npz  # noqa: PLC0415

        try:
            return cls.from_state(load_npz(path), device=device)
        except ValueError as error:
            if str(path) in str(error):
                raise
            raise ValueError(f"{path}: {error}") from None

    @classmethod
    def from_arrays(cls, levels: Mapping[str, Any], device: str | torch.device = "cpu",
                    chunk_size: int = 16384) -> "Moments":
        """Moments of one set of per-residue arrays, given level by level in ladder order."""
        names = list(levels)
        dims = []
        for name in names:
            shape = getattr(levels[name], "shape", None)
            if shape is None or len(shape) != 2:
                raise ValueError(f"level {name!r} must be a 2-D array (n_residues, dim), got shape {shape}")
            dims.append(int(shape[1]))
        return cls(names, dims, device=device, chunk_size=chunk_size).update(levels)


_GRAM_BLOCK = 512


def _gram(values: torch.Tensor) -> torch.Tensor:
    """``values.T @ values`` computing only the lower block triangle (about half the work), then
    mirroring it, so the result is exactly symmetric."""
    n_features = values.shape[1]
    if n_features <= _GRAM_BLOCK:
        gram = values.T @ values
        return (gram + gram.T) / 2
    gram = torch.empty(n_features, n_features, dtype=values.dtype, device=values.device)
    for start in range(0, n_features, _GRAM_BLOCK):
        stop = min(start + _GRAM_BLOCK, n_features)
        column_block = values[:, start:stop]
        diagonal_block = column_block.T @ column_block
        gram[start:stop, start:stop] = (diagonal_block + diagonal_block.T) / 2
        if stop < n_features:
            gram[stop:, start:stop] = values[:, stop:].T @ column_block
            gram[start:stop, stop:] = gram[stop:, start:stop].T
    return gram
