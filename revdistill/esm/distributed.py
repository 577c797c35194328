"""Joining a ``torchrun`` job: one home for the process-group rules of ``embed`` and ``proteingym``.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`join_process_group` initialises
``torch.distributed`` with ``nccl`` for CUDA (each rank on ``cuda:LOCAL_RANK``) and ``gloo``
otherwise; outside ``torchrun`` it does nothing, so the same command runs in one process.

>>> rank_world()                      # outside torchrun
(0, 1)
"""
from __future__ import annotations

import os
from typing import Any

__all__ = ["join_process_group", "leave_process_group", "rank_world", "broadcast_from_first"]


def join_process_group(device: str) -> tuple[str, bool]:
    """Initialise ``torch.distributed`` under torchrun; return this rank's device and whether we did.

    Parameters
    ----------
    device : str
        ``"cpu"`` or ``"cuda"`` (a rank uses ``cuda:LOCAL_RANK``, whatever index was given).
    """
    import torch  # noqa: PLC0415
    import torch.distributed as dist  # noqa: PLC0415

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or dist.is_initialized():
        return device, False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
        backend = "nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    return device, True


def leave_process_group(initialised: bool) -> None:
    """Destroy the process group :func:`join_process_group` created (no-op when it created none)."""
    if initialised:
        import torch.distributed as dist  # noqa: PLC0415

        if dist.is_initialized():
            dist.destroy_process_group()


def rank_world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised process group, ``(0, 1)`` without one."""
    import torch.distributed as dist  # noqa: PLC0415

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast_from_first(value: Any) -> Any:
    """Rank 0's ``value`` on every rank (a JSON-like object; returned as is without a process group)."""
    import torch.distributed as dist  # noqa: PLC0415

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
