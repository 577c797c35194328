"""Reading ESM-2 checkpoint files (``.pt``) safely: the one place revdistill opens one.

A file is trusted for what it is, not for its name: :func:`read_checkpoint` loads with
``weights_only=True`` (a pickle that would run code is refused, naming the file) and turns every way a
file can fail to be a checkpoint (an HTML page, a truncated download, random bytes) into one
``ValueError`` naming the file; :func:`check_esm2_checkpoint` checks that what was read is fair-esm's
ESM-2 layout with the architecture the registry expects (layers, width, heads, tensor shapes).
"""
from __future__ import annotations

import argparse
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any


__all__ = ["read_checkpoint", "check_esm2_checkpoint", "check_checkpoint_file"]

_LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:200] if text else type(error).__name__


def read_checkpoint(path: str | Path, what: str = "checkpoint") -> dict[str, Any]:
    """The content of a ``.pt`` file, loaded with ``weights_only=True`` (memory-mapped when possible).

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Naming ``path``: not a PyTorch checkpoint (HTML, truncated, other bytes), a pickle holding Python
        objects other than tensors (refused: it could run code), or not a dictionary.
    """
    import torch  # noqa: PLC0415 - loaded only when a checkpoint is read (asking about weights stays light)

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} does not exist")
    with open(path, "rb") as stream:
        head = stream.read(64)
    if head.lstrip()[:1] == b"<":
        raise ValueError(f"{what} {path} is not a PyTorch checkpoint: it is text starting with "
                         f"{head.lstrip()[:15]!r} (an HTML error page from a mirror?); delete it and download again")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            try:
                data = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:
                if "mmap" not in str(error):
                    raise
                data = torch.load(str(path), map_location="cpu", weights_only=True)  # the legacy format
    except pickle.UnpicklingError as error:
        text = str(error)
        if "Unsupported global" in text or "GLOBAL" in text:
            found = re.search(r"(?:Unsupported global|GLOBAL)[: ]+(\S+(?: \S+)?)", text)
            raise ValueError(f"{what} {path} holds Python objects other than tensors "
                             f"({found.group(0) if found else 'unsupported pickle content'}): such a pickle could "
                             f"run code when loaded, so revdistill (weights_only=True) refuses it") from None
        detail = text.split("WeightsUnpickler error:")[-1].strip().splitlines()[0] if text.strip() else "empty"
        raise ValueError(f"{what} {path} is not a PyTorch checkpoint ({detail[:200]}); delete it and download it "
                         f"again") from None
    except (RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError, TypeError, AttributeError,
            IndexError, KeyError, MemoryError) as error:
        if isinstance(error, (FileNotFoundError, PermissionError)):
            raise
        raise ValueError(f"{what} {path} is not a readable PyTorch checkpoint ({type(error).__name__}: "
                         f"{_first_line(error)}); delete it and download it again") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {path} holds a {type(data).__name__}, not a checkpoint dictionary")
    return data


def check_esm2_checkpoint(data: dict[str, Any], path: str | Path, spec: Any = None) -> None:
    """Check that ``data`` (read from ``path``) is fair-esm's ESM-2 layout, of ``spec``'s architecture if given.

    The layout: ``{"model": {name: tensor}, "cfg": {"model": Namespace(encoder_layers, encoder_embed_dim,
    encoder_attention_heads, ...)}}``, with ``embed_tokens.weight`` of width ``encoder_embed_dim`` and
    ``encoder_layers`` numbered layers.

    Raises
    ------
    ValueError
        Naming ``path``, what is missing or differs, and what was expected.
    """
    import torch  # noqa: PLC0415 - loaded only when a checkpoint is read (asking about weights stays light)

    state = data.get("model")
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path} has no 'model' dictionary of tensors (keys: {sorted(data)[:6]}); "
                         f"it is not an ESM-2 checkpoint")
    cfg = (data.get("cfg") or {}).get("model") if isinstance(data.get("cfg"), dict) else None
    declared = {key: getattr(cfg, key, None) for key in ("encoder_layers", "encoder_embed_dim",
                                                         "encoder_attention_heads")}
    if cfg is None or None in declared.values():
        raise ValueError(f"checkpoint {path} does not declare an ESM-2 architecture (cfg.model with encoder_layers, "
                         f"encoder_embed_dim, encoder_attention_heads); it is not an ESM-2 checkpoint")
    embed = [value for key, value in state.items() if key.endswith("embed_tokens.weight")]
    layers = {int(match.group(1)) for key in state for match in [_LAYER.search(key)] if match}
    found = {"encoder_layers": len(layers), "encoder_embed_dim": int(embed[0].shape[1]) if embed else None}
    for key, value in found.items():
        if value != declared[key]:
            raise ValueError(f"checkpoint {path} declares {key}={declared[key]} but its tensors have {value}; "
                             f"the file is damaged")
    if spec is not None:
        expected = {"encoder_layers": spec.layers, "encoder_embed_dim": spec.dim,
                    "encoder_attention_heads": spec.heads}
        differs = {key: (declared[key], value) for key, value in expected.items() if declared[key] != value}
        if differs:
            described = ", ".join(f"{key}={got} (expected {want})" for key, (got, want) in differs.items())
            raise ValueError(f"checkpoint {path} is not {spec.name}: {described}")


def check_checkpoint_file(path: str | Path, spec: Any = None, regression: bool = False) -> None:
    """Check a file is a loadable checkpoint: ESM-2 of ``spec``'s architecture, or (``regression``) a contact
    head (``{"model": {name: tensor}}``). Used before a download is renamed into place."""
    import torch  # noqa: PLC0415 - loaded only when a checkpoint is read (asking about weights stays light)

    data = read_checkpoint(path)
    if regression:
        state = data.get("model")
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"contact-regression file {path} has no 'model' dictionary of tensors")
        return
    check_esm2_checkpoint(data, path, spec)
