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

from ..launcher import launcher_rank

__all__ = ["process_group", "shard_from_environment"]

logger = logging.getLogger(__name__)

#: Ranks wait this long for the slowest one at the final barrier (a shard may take hours).
BARRIER_TIMEOUT = datetime.timedelta(hours=48)


#: This process's shard of the work list under a launcher: ``(RANK, WORLD_SIZE)``.
shard_from_environment = launcher_rank


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
