"""Checks every command makes before any work starts, and the one-line error contract.

- :func:`split_list` — a comma-separated argument: no empty items, no repeats, only allowed items.
- :func:`check_output` — an output is never an input or the store, never a folder, lands in a writable
  folder, and replaces an existing file only if that file is of the kind the command writes.
- :func:`write_atomically` — write to a temporary file beside the target, fsync, rename (all or nothing).
- :func:`check_device` — ``cuda`` without CUDA is an error before any model is loaded.
- :func:`describe_error` — the one-line message of an expected failure (``None`` for a bug).
"""
from __future__ import annotations

import errno
import os
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

from revdistill.io.files import write_atomically
from revdistill.errors import describe_error

__all__ = ["split_list", "check_output", "write_atomically", "check_device", "describe_error", "OUTPUT_KINDS"]


def split_list(text: str, what: str, allowed: Sequence[str] | None = None) -> list[str]:
    """Items of a comma-separated argument, in order.

    Parameters
    ----------
    text : str
        E.g. ``"esm2,rd"``; spaces around items are ignored.
    what : str
        The argument's name for messages, e.g. ``"--representations"``.
    allowed : sequence of str, optional
        The accepted items; others are an error listing these.

    Raises
    ------
    ValueError
        An empty list or item (``"a,,b"``, ``"a,"``), a repeated item, or an item not in ``allowed``.
    """
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a comma-separated string, got {type(text).__name__}")
    items = [item.strip() for item in text.split(",")]
    if not any(items):
        raise ValueError(f"{what} is empty; give a comma-separated list"
                         + (f" of {','.join(allowed)}" if allowed is not None else ""))
    if not all(items):
        raise ValueError(f"{what}={text!r} has an empty item; give a comma-separated list without empty entries")
    repeated = sorted({item for item in items if items.count(item) > 1})
    if repeated:
        raise ValueError(f"{what}={text!r} names {repeated} more than once; give each item once")
    if allowed is not None:
        unknown = [item for item in items if item not in allowed]
        if unknown:
            raise ValueError(f"{what}={text!r}: unknown {unknown}; choose from {','.join(allowed)}")
    return items


# --------------------------------------------------------------------------------------------- outputs
def _npz_format(path: Path) -> str | None:
    """The ``format`` in a revdistill npz's JSON metadata, reading only that entry (safely); None if not one."""
    from revdistill.io.files import read_npz_meta  # noqa: PLC0415

    meta = read_npz_meta(path) if path.is_file() else None
    return None if meta is None else meta.get("format")


def _is_results_csv(path: Path) -> bool:
    try:
        with open(path, "rb") as stream:
            head = stream.read(200)
    except OSError:
        return False
    return head.startswith(b"assay,scheme,")


def _is_store(path: Path) -> bool:
    from revdistill.esm._hdf5 import open_checked  # noqa: PLC0415

    try:
        open_checked(path, "store").close()
        return True
    except ValueError:
        return False


#: kind -> (what it is, test that an existing file is one). ``store`` outputs are extended, not replaced.
OUTPUT_KINDS: dict[str, tuple[str, Callable[[Path], bool]]] = {
    "csv": ("a results table written by revdistill (header 'assay,scheme,...')", _is_results_csv),
    "ladder": ("a ladder written by revdistill", lambda p: _npz_format(p) == "revdistill-ladder"),
    "naive": ("a naive baseline written by revdistill", lambda p: _npz_format(p) == "revdistill-naive"),
    "moments": ("moments written by revdistill", lambda p: _npz_format(p) == "revdistill-moments"),
    "npz": ("an .npz written by revdistill", lambda p: str(_npz_format(p)).startswith("revdistill-")),
    "store": ("a revdistill embedding store", _is_store),
    "html": ("a report written by revdistill", lambda p: _is_report(p)),
}


def _is_report(path: Path) -> bool:
    from revdistill.views.report import REPORT_GENERATOR  # noqa: PLC0415

    with open(path, "rb") as handle:
        return f'content="{REPORT_GENERATOR}"'.encode() in handle.read(4096)


def _same_file(a: Path, b: Path) -> bool:
    if a.exists() and b.exists():
        try:
            return os.path.samefile(a, b)  # same inode: catches symlinks and hard links
        except OSError:
            pass
    return a.resolve() == b.resolve()


def _writable_folder(folder: Path) -> tuple[bool, Path]:
    """Whether files can be created in ``folder`` (or in its nearest existing ancestor, if missing)."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return False, probe
    return os.access(probe, os.W_OK | os.X_OK), probe


def check_output(path: str | Path, *, inputs: Iterable[str | Path | None], kind: str,
                 suffixes: Sequence[str] | None = None, writable: bool = True, what: str = "--out") -> Path:
    """Refuse an output that would destroy something, before any work starts.

    Parameters
    ----------
    path : str or Path
        The output the command will write.
    inputs : iterable of path or None
        Every file the command reads, and the store (``None`` entries are skipped). The output may be
        none of them (same resolved path or same inode).
    kind : {"csv", "ladder", "naive", "moments", "npz", "store", "html"}
        What the command writes; an existing ``path`` is replaced only if it is already of this kind
        (``store`` outputs are extended, so an existing one must be a store).
    suffixes : sequence of str, optional
        Accepted file name endings, e.g. ``(".csv",)``.
    writable : bool
        Also require that the folder (or the nearest existing ancestor, which will hold the new
        folders) is writable.
    what : str
        The argument's name for messages.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ValueError
        Unknown ``kind``, a wrong suffix, an output that is an input or a folder, an existing file of
        another kind.
    PermissionError
        The folder is not writable.
    """
    if kind not in OUTPUT_KINDS:
        raise ValueError(f"kind={kind!r} is not an output kind; choose one of {sorted(OUTPUT_KINDS)}")
    description, is_kind = OUTPUT_KINDS[kind]
    path = Path(path)
    if suffixes is not None and not str(path.name).lower().endswith(tuple(s.lower() for s in suffixes)):
        raise ValueError(f"{what} {path}: the file name must end in {' or '.join(suffixes)}")
    for source in inputs:
        if source is not None and _same_file(path, Path(source)):
            raise ValueError(f"{what} {path} is also an input ({source}); writing it would destroy that input. "
                             f"Choose another file name")
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory; give a file name")
    if path.exists() and not is_kind(path):
        action = "extend" if kind == "store" else "replace"
        raise ValueError(f"{what} {path} exists and is not {description}; refusing to {action} it. Choose another "
                         f"file name or move that file away")
    if writable:
        ok, folder = _writable_folder(path.parent)
        if not folder.is_dir():
            raise ValueError(f"{what} {path}: {folder} is not a folder")
        if not ok:
            raise PermissionError(errno.EACCES, f"{what} {path}: folder {folder} is not writable", str(folder))
    return path


# --------------------------------------------------------------------------------------------- device
_DEVICE = re.compile(r"^(cpu|cuda|cuda:(\d+)|mps)$")


def check_device(device: str | None, what: str = "--device") -> str:
    """The torch device to use; ``None`` means ``cuda`` when available, else ``cpu``.

    Raises
    ------
    ValueError
        Not ``cpu``, ``cuda``, ``cuda:<n>`` or ``mps``; or that device is not available here.
    """
    import torch  # noqa: PLC0415

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    match = _DEVICE.match(str(device).strip()) if isinstance(device, str) else None
    if match is None:
        raise ValueError(f"{what} {device!r}: allowed: cpu, cuda, cuda:<index>, mps")
    device = match.group(0)
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            reason = ("this torch was built without CUDA" if torch.version.cuda is None
                      else "no GPU is visible" + (f" (CUDA_VISIBLE_DEVICES={os.environ['CUDA_VISIBLE_DEVICES']!r})"
                                                  if "CUDA_VISIBLE_DEVICES" in os.environ else ""))
            raise ValueError(f"{what} {device}: CUDA is not available here ({reason}); use {what} cpu")
        index = int(match.group(2) or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"{what} {device}: only {torch.cuda.device_count()} GPU(s) visible "
                             f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif device == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"{what} mps: Apple's MPS backend is not available here; use {what} cpu")
    return device


# --------------------------------------------------------------------------------------------- errors
