"""ProteinGym's cross-validation folds, generated the way its fold script does.

*random* draws each variant's fold uniformly with a fixed seed; *modulo* sorts the distinct mutated
positions and gives the i-th position fold ``i mod 5`` (equal to ``(position - 1) mod 5`` when every
position is mutated); *contiguous* cuts the sorted distinct positions into 5 consecutive blocks whose
sizes differ by at most one (larger blocks first).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["SCHEMES", "N_FOLDS", "generate_folds"]

SCHEMES: tuple[str, ...] = ("fold_random_5", "fold_modulo_5", "fold_contiguous_5")
N_FOLDS = 5


def generate_folds(positions: Sequence[int], scheme: str, n_folds: int = N_FOLDS, seed: int = 42) -> np.ndarray:
    """Assign folds the way ProteinGym's fold script does (see the module docstring).

    Parameters
    ----------
    positions : sequence of int
        Mutated position of each variant, ``(n_variants,)``.
    scheme : {"fold_random_5", "fold_modulo_5", "fold_contiguous_5"}
    seed : int
        Seed of the random scheme (``numpy.random.RandomState(seed).randint``).

    Returns
    -------
    ndarray of int, ``(n_variants,)`` with values in ``0..n_folds-1``.
    """
    positions = np.asarray(positions, dtype=np.int64)
    distinct = np.unique(positions)
    if len(distinct) < n_folds:
        raise ValueError(f"{scheme}: only {len(distinct)} distinct mutated position(s); "
                         f"{n_folds} folds need at least {n_folds}")
    if scheme == "fold_random_5":
        return np.random.RandomState(seed).randint(0, n_folds, size=len(positions)).astype(np.int64)
    elif scheme == "fold_modulo_5":
        fold_of = dict(zip(distinct.tolist(), (np.arange(len(distinct)) % n_folds).tolist()))
    elif scheme == "fold_contiguous_5":
        size, extra = divmod(len(distinct), n_folds)
        blocks = np.repeat(np.arange(n_folds), [size + (i < extra) for i in range(n_folds)])
        fold_of = dict(zip(distinct.tolist(), blocks.tolist()))
    else:
        raise ValueError(f"scheme={scheme!r}; choose from {SCHEMES}")
    return np.array([fold_of[p] for p in positions.tolist()], dtype=np.int64)
