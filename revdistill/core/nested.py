"""NestedEmbedding: a Matryoshka embedding that knows its level boundaries."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


class NestedEmbedding:
    """Values of a nested (Matryoshka) embedding plus the names and boundaries of its levels.

    The first ``boundaries[i]`` columns are the embedding at level ``names[i]``; the columns
    ``boundaries[i-1]:boundaries[i]`` are the block that level adds.

    Parameters
    ----------
    values : ndarray or torch.Tensor of shape (n_rows, boundaries[-1])
        Rows are residues or pooled sequences.
    names : sequence of str
        Level names, small to large.
    boundaries : sequence of int
        Cumulative ends of the levels, strictly increasing; the last equals ``values.shape[1]``.
    """

    def __init__(self, values: Any, names: Sequence[str], boundaries: Sequence[int]) -> None:
        names = tuple(str(name) for name in names)
        boundaries = tuple(int(b) for b in boundaries)
        shape = getattr(values, "shape", None)
        if shape is None or len(shape) != 2:
            raise ValueError(f"values must be a 2-D array (n_rows, n_features), got shape {shape}")
        if len(names) != len(boundaries) or not names:
            raise ValueError(f"names {names} and boundaries {boundaries} must be non-empty and of equal length")
        if len(set(names)) != len(names):
            raise ValueError(f"level names must be unique, got {names}")
        if any(b <= a for a, b in zip((0,) + boundaries, boundaries)):
            raise ValueError(f"boundaries must be positive and strictly increasing, got {boundaries}")
        if boundaries[-1] != shape[1]:
            raise ValueError(f"the last boundary ({boundaries[-1]}) must equal the number of columns ({shape[1]})")
        self.values = values
        self.names = names
        self.boundaries = boundaries

    # ------------------------------------------------------------------ shape
    @property
    def dim(self) -> int:
        """Total number of columns."""
        return self.boundaries[-1]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.values.shape)

    @property
    def starts(self) -> tuple[int, ...]:
        """First column of each level's block."""
        return (0,) + self.boundaries[:-1]

    def __len__(self) -> int:
        return int(self.values.shape[0])

    def __getitem__(self, rows: Any) -> "NestedEmbedding":
        """Select rows (an index array, mask or slice); columns are kept."""
        if isinstance(rows, (int, np.integer)):
            rows = slice(int(rows), int(rows) + 1)
        return NestedEmbedding(self.values[rows], self.names, self.boundaries)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        array = self.to_numpy()
        return array.astype(dtype) if dtype is not None else array

    def to_numpy(self) -> np.ndarray:
        """Values as a numpy array."""
        if isinstance(self.values, torch.Tensor):
            return self.values.detach().cpu().numpy()
        return np.asarray(self.values)

    # ------------------------------------------------------------------ slicing
    def _index(self, name: str) -> int:
        if name not in self.names:
            raise ValueError(f"unknown level {name!r}; this embedding has levels {list(self.names)}")
        return self.names.index(name)

    def prefix(self, k: int, normalize: bool = False) -> Any:
        """The first ``k`` columns, shape (n_rows, k); L2-normalised per row if ``normalize``."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
            raise ValueError(f"k must be an integer, got {k!r}")
        if not 1 <= int(k) <= self.dim:
            raise ValueError(f"k={k} must be between 1 and {self.dim}")
        return _maybe_normalize(self.values[:, : int(k)], normalize)

    def level(self, name: str, normalize: bool = False) -> Any:
        """The embedding at level ``name``: the prefix up to that level's boundary."""
        return self.prefix(self.boundaries[self._index(name)], normalize=normalize)

    def block(self, name: str, normalize: bool = False) -> Any:
        """The columns level ``name`` adds to the previous level (for the first level, its prefix)."""
        index = self._index(name)
        return _maybe_normalize(self.values[:, self.starts[index] : self.boundaries[index]], normalize)

    def level_of(self, k: int) -> str:
        """Name of the smallest level whose embedding contains column ``k - 1``."""
        if not 1 <= int(k) <= self.dim:
            raise ValueError(f"k={k} must be between 1 and {self.dim}")
        return self.names[int(np.searchsorted(self.boundaries, int(k)))]

    def mean(self, groups: Sequence[int] | np.ndarray | None = None) -> "NestedEmbedding":
        """Mean over rows, overall or per group label (e.g. residue -> sequence index)."""
        values = self.to_numpy()
        if groups is None:
            return NestedEmbedding(values.mean(axis=0, keepdims=True), self.names, self.boundaries)
        groups = np.asarray(groups)
        if groups.shape != (len(self),):
            raise ValueError(f"groups must have one label per row ({len(self)}), got shape {groups.shape}")
        labels, inverse = np.unique(groups, return_inverse=True)
        sums = np.zeros((labels.size, values.shape[1]), dtype=np.float64)
        np.add.at(sums, inverse, values)
        counts = np.bincount(inverse, minlength=labels.size)[:, None]
        return NestedEmbedding((sums / counts).astype(values.dtype), self.names, self.boundaries)

    def __repr__(self) -> str:
        levels = ", ".join(f"{name}:{end}" for name, end in zip(self.names, self.boundaries))
        return f"NestedEmbedding(n_rows={len(self)}, levels=[{levels}])"


def _maybe_normalize(values: Any, normalize: bool) -> Any:
    if not normalize:
        return values
    if isinstance(values, torch.Tensor):
        return torch.nn.functional.normalize(values, dim=1)
    norms = np.linalg.norm(values, axis=1, keepdims=True)
    return values / np.where(norms > 0, norms, 1)
