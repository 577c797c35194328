"""Array conversion and validation shared by the core estimators."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch


def as_float_tensor(values: Any, name: str, device: str | torch.device | None = None) -> torch.Tensor:
    """Return ``values`` (numpy or torch) as a floating torch tensor, without copying when possible."""
    if isinstance(values, torch.Tensor):
        tensor = values
    elif isinstance(values, np.ndarray):
        if values.dtype.kind not in "fiu":
            raise ValueError(f"{name} must hold real numbers (float or int), got dtype {values.dtype}")
        if not values.dtype.isnative:
            values = values.astype(values.dtype.newbyteorder("="))
        tensor = torch.from_numpy(np.ascontiguousarray(values))
    else:
        try:
            array = np.asarray(values)
            if array.dtype.kind not in "fiu":
                raise TypeError(array.dtype)
            tensor = torch.as_tensor(array)
        except (TypeError, ValueError) as error:
            raise ValueError(f"{name} must be a numeric array, got {type(values).__name__}") from error
    if not (tensor.is_floating_point() or tensor.dtype in (torch.int8, torch.int16, torch.int32, torch.int64,
                                                            torch.uint8, torch.uint16, torch.uint32, torch.uint64)):
        raise ValueError(f"{name} must hold real numbers (float or int), got dtype {tensor.dtype}")
    if not tensor.is_floating_point():
        tensor = tensor.to(torch.float64)
    if device is not None:
        tensor = tensor.to(device)
    return tensor


def check_finite(values: torch.Tensor | np.ndarray, name: str, columns: Sequence[str] | None = None) -> None:
    """Raise a ValueError naming the array, what is wrong (NaN or infinity) and where (first row, column).

    Parameters
    ----------
    values : array of shape (n,) or (n, d)
    name : str
        The array's name in the message.
    columns : sequence of str, optional
        Names of the ``d`` columns (e.g. ``"8M[12]"``), used in the message instead of the index.
    """
    if isinstance(values, torch.Tensor):
        if not values.is_floating_point() or bool(torch.isfinite(values).all()):
            return  # the common case stays on the tensor's device
        array = values.detach().to("cpu", torch.float64).numpy()
    else:
        array = np.asarray(values)
        if array.dtype.kind not in "fc":
            return
    finite = np.isfinite(array)
    if finite.all():
        return
    where = np.argwhere(~finite)[0]
    kind = "NaN" if np.isnan(array[tuple(where)]) else "infinity"
    column = ""
    if array.ndim > 1:
        index = int(where[-1])
        column = f" column {columns[index] if columns is not None and index < len(columns) else index},"
    raise ValueError(f"{name} contains NaN or infinity (first bad row: {int(where[0])}):{column} {kind}; "
                     f"{int((~finite).sum())} non-finite value(s) in all; remove or fix them")
