"""Sharding a batch job across processes: torchrun ranks (``RANK``/``WORLD_SIZE``) or ``--shard i/n`` tasks.

Under ``torchrun`` a gloo process group is opened only to wait for the other ranks before rank 0 merges the
per-rank summaries (gloo works on CPU and next to CUDA; no tensors travel). Without a process group (job
arrays), every shard tries the merge after writing its own summary, so the last one to finish completes
``summary.json``; each shard file is written atomically, so a racing merge only ever sees whole files.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from typing import Iterator

import torch.distributed as dist

__all__ = ["process_group", "shard_from_environment"]

logger = logging.getLogger(__name__)

#: Ranks wait this long for the slowest one at the final barrier (a shard may take hours).
BARRIER_TIMEOUT = datetime.timedelta(hours=48)


def shard_from_environment() -> tuple[int, int]:
    """``(RANK, WORLD_SIZE)`` as set by torchrun or another launcher; ``(0, 1)`` when unset."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise ValueError("RANK and WORLD_SIZE must be integers (as torchrun sets them)") from None
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is not within WORLD_SIZE={world_size}")
    return rank, world_size


@contextlib.contextmanager
def process_group(world_size: int) -> Iterator[bool]:
    """Open a gloo process group when launched by torchrun (yields whether one is usable), close it after."""
    created = False
    if world_size > 1 and dist.is_available() and not dist.is_initialized() and "MASTER_ADDR" in os.environ:
        dist.init_process_group("gloo", timeout=BARRIER_TIMEOUT)
        created = True
    try:
        yield dist.is_available() and dist.is_initialized()
    finally:
        if created:
            dist.destroy_process_group()
