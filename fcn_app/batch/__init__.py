"""Batch jobs: folders, globs and lists of thousands of images → mirrored outputs, a summary, resumable, shardable.

Typical use::

    items, _ = collect_inputs(["photos/"], recursive=True, out_dir="results")
    job = run_job(HeatmapTask(network, HeatmapOptions()), items, "results")

See ``docs/batch.md`` for the command-line side.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch.distributed as dist

from ..tasks.base import ImageTask
from .distributed import process_group, shard_from_environment
from .gallery import GALLERY_NAME, build_gallery
from .inputs import WorkItem, collect_inputs, is_glob_pattern, parse_shard, read_list_file, shard_items
from .runner import BatchResult, DecodeDataset, default_num_workers, is_up_to_date, run_batch
from .summary import SUMMARY_NAME, merge_summaries, rank_summary_path, read_summary_rows

__all__ = [
    "GALLERY_NAME",
    "SUMMARY_NAME",
    "BatchResult",
    "DecodeDataset",
    "JobResult",
    "WorkItem",
    "build_gallery",
    "collect_inputs",
    "default_num_workers",
    "is_glob_pattern",
    "is_up_to_date",
    "merge_summaries",
    "parse_shard",
    "process_group",
    "rank_summary_path",
    "read_list_file",
    "read_summary_rows",
    "run_batch",
    "run_job",
    "shard_from_environment",
    "shard_items",
]


@dataclass
class JobResult:
    """This process's :class:`BatchResult` plus where the job-wide summary is (``None`` until all shards are in)
    and the gallery page this process wrote (``None`` if it wrote none)."""

    result: BatchResult
    rank: int
    world_size: int
    summary_path: Path | None
    gallery_path: Path | None = None


def run_job(
    task: ImageTask,
    items: Sequence[WorkItem],
    out_dir: str | os.PathLike,
    *,
    shard: tuple[int, int] | None = None,
    gallery: bool = True,
    **batch_arguments,
) -> JobResult:
    """Run this process's shard of ``items`` and produce ``summary.json`` when the job is complete.

    ``shard=(i, n)`` takes shard ``i`` of ``n`` (``--shard``); otherwise ``RANK``/``WORLD_SIZE`` from the
    environment decide (torchrun), and a single process takes everything. With ``gallery`` each picture gets a
    thumbnail as it is written and the process that completes ``summary.json`` writes ``OUT/index.html``
    (:mod:`~fcn_app.batch.gallery`), once per run.
    """
    rank, world_size = shard if shard is not None else shard_from_environment()
    mine = shard_items(items, rank, world_size)
    completes_summary = True
    with process_group(world_size if shard is None else 1) as grouped:
        result = run_batch(task, mine, out_dir, rank=rank, world_size=world_size, thumbnails=gallery,
                           **batch_arguments)
        if world_size == 1:
            merged = result.summary_path
        elif grouped:
            dist.barrier()
            merged = merge_summaries(out_dir, world_size) if rank == 0 else None
            dist.barrier()  # the others leave only once summary.json is complete
            completes_summary = rank == 0
            merged = merged or Path(out_dir) / SUMMARY_NAME
        else:
            merged = merge_summaries(out_dir, world_size)
    # After the process group: a gallery that cannot be written must not leave the other ranks at a barrier.
    page = build_gallery(out_dir, merged) if gallery and completes_summary and merged is not None else None
    return JobResult(result, rank, world_size, merged, page)
