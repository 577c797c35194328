"""Array conversion and validation shared by the core estimators."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def as_float_tensor(values: Any, name: str, device: str | torch.device | None = None) -> torch.Tensor:
    """Return ``values`` (numpy or torch) as a floating torch tensor, without copying when possible."""
    if isinstance(values, torch.Tensor):
        tensor = values
    elif isinstance(values, np.ndarray):
        tensor = torch.from_numpy(np.ascontiguousarray(values))
    else:
        try:
            tensor = torch.as_tensor(np.asarray(values))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name} must be a numeric array, got {type(values).__name__}") from error
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int32, torch.int64)):
        raise ValueError(f"{name} must hold real numbers, got dtype {tensor.dtype}")
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float64)
    if device is not None:
        tensor = tensor.to(device)
    return tensor


def check_finite(values: torch.Tensor | np.ndarray, name: str) -> None:
    """Raise a ValueError naming the first row that holds NaN or infinity."""
    if isinstance(values, np.ndarray):
        bad_rows = np.flatnonzero(~np.isfinite(values).all(axis=-1)) if values.ndim > 1 else \
            np.flatnonzero(~np.isfinite(values))
        if bad_rows.size:
            raise ValueError(f"{name} contains NaN or infinity (first bad row: {int(bad_rows[0])})")
        return
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        rows = finite.all(dim=-1) if values.ndim > 1 else finite
        first = int(torch.nonzero(~rows)[0, 0])
        raise ValueError(f"{name} contains NaN or infinity (first bad row: {first})")
