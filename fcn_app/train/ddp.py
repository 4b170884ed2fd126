"""torch.distributed for training: one process per device under ``torchrun``, or a plain single process.

``torchrun --nproc-per-node N`` (and ``--nnodes``/``--rdzv-*`` for several machines) sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK``; :func:`init_distributed` reads them and joins the process group (NCCL on
GPUs, Gloo on CPUs). Without them everything degrades to a single process with the same code path.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..launcher import launcher_rank, local_device

__all__ = ["DistributedContext", "init_distributed", "shutdown_distributed"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 logs, shows progress and writes checkpoints."""
        return self.rank == 0

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over all processes (in place on a device copy; returns the result on the tensor's device)."""
        if not self.enabled:
            return tensor
        work = tensor.to(self.device)
        dist.all_reduce(work, op=dist.ReduceOp.SUM)
        return work.to(tensor.device)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_distributed(device: str = "auto") -> DistributedContext:
    """Join the process group if launched by torchrun (``WORLD_SIZE`` > 1); pick this process's device."""
    rank, world_size = launcher_rank()
    chosen = local_device(device)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
        logger.info("rank %d/%d joined the %s process group on %s", rank, world_size, backend, chosen)
    return DistributedContext(rank=rank, world_size=world_size, device=chosen)


def shutdown_distributed(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()
