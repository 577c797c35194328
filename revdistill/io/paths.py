"""Where revdistill keeps what it downloads and computes: one definition of the cache folders.

``$REVDISTILL_CACHE`` when set, else ``$XDG_CACHE_HOME/revdistill``, else ``~/.cache/revdistill``.
Inside it, one sub-folder per kind of thing (:data:`CACHE_KINDS`). Nothing is created here; writers
create their folder when they first write.

>>> import os; os.environ["REVDISTILL_CACHE"] = "/tmp/rd"
>>> str(cache_dir("ladders"))
'/tmp/rd/ladders'
>>> del os.environ["REVDISTILL_CACHE"]
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CACHE_ENV", "CACHE_KINDS", "cache_root", "cache_dir"]

CACHE_ENV = "REVDISTILL_CACHE"
#: Sub-folders of the cache and what they hold.
CACHE_KINDS: dict[str, str] = {
    "proteingym": "ProteinGym files as downloaded (reference file, zips, single assays)",
    "stores": "embedding stores (HDF5) of data sets and assays",
    "corpora": "embedding stores of the corpora reference ladders are fitted on",
    "ladders": "fitted reference ladders and naive baselines, named by their id",
    "umap": "UMAP coordinates, named by a digest of their input",
    "calibration": "measured embedding speeds per model and device (for time estimates)",
    "service": "the compute service's socket, key and log (one service per server)",
    "numba": "numba's compiled code for UMAP (set by the compute service for itself only)",
}


def cache_root() -> Path:
    """The cache folder: ``$REVDISTILL_CACHE``, ``$XDG_CACHE_HOME/revdistill`` or ``~/.cache/revdistill``."""
    explicit = os.environ.get(CACHE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "revdistill"


def cache_dir(kind: str, root: str | Path | None = None) -> Path:
    """One sub-folder of the cache (``root`` when given, else :func:`cache_root`).

    ``kind`` is a key of :data:`CACHE_KINDS`.
    """
    if kind not in CACHE_KINDS:
        raise ValueError(f"kind={kind!r} is not a cache folder; choose from {sorted(CACHE_KINDS)}")
    return (Path(root).expanduser() if root is not None else cache_root()) / kind
