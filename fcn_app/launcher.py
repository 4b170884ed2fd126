"""What a launcher such as ``torchrun`` tells this process: its rank, the world size, and its own device.

Batch jobs (sharding) and training (DDP) read the same variables through these two functions.
"""

from __future__ import annotations

import os

import torch

from .device import resolve_device
from .errors import OptionError

__all__ = ["launcher_rank", "local_device"]


def launcher_rank() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` as set by torchrun or another launcher; ``(0, 1)`` when unset."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise OptionError("environment", "RANK and WORLD_SIZE must be integers (as torchrun sets them)") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise OptionError("environment", f"RANK={rank} is not within WORLD_SIZE={world_size}")
    return rank, world_size


def local_device(device: str | torch.device | None = "auto") -> torch.device:
    """:func:`~fcn_app.device.resolve_device`, with a CUDA device of no index meaning this process's own GPU
    (``LOCAL_RANK`` modulo the GPUs present), so one process per GPU needs no per-rank ``--device``."""
    chosen = resolve_device(device)
    if chosen.type == "cuda" and chosen.index is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        chosen = torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return chosen
