"""Running a batch job: decode in worker processes, score on the model, render and write in a thread.

Three stages overlap so the model never waits for files:

- **decode** — a torch ``DataLoader`` with ``num_workers`` processes calls :func:`~fcn_app.io.decode_input` with
  the task's ``decode_request`` (the network's copy at the task's working size; JPEGs decoded at reduced scale);
  a worker returns ``(position, input, None)`` or ``(position, None, reason)``, so a corrupt file is one failed
  row, never a dead loader;
- **score** — the main thread hands decoded images to the task's ``predict`` in groups of up to ``batch_size``
  same-size images (:class:`~fcn_app.tasks.base.ImageTask`: classifier heatmaps, detections or a segmentation
  model); the scoring path scores each image alone, so a group never changes an image's result;
- **render + write** — a background thread fed by a bounded queue runs the very task methods the single-image
  command runs (``render``, ``write``; a task that draws on a full-size picture decodes it there, overlapping
  the next image's scoring), so an image gives byte-identical outputs alone or in a folder.

Memory stays flat: at most ``num_workers × prefetch`` decoded images, the size groups and the queue are in
flight at any time, and what is kept per input is one small summary row. Ctrl-C (SIGINT, ``KeyboardInterrupt``)
and SIGTERM (:class:`~fcn_app.processes.Terminated`) stop a run the same way: the batch being scored is
discarded, the decode workers are shut down, the writer finishes what it already has (every file is written
whole, :mod:`~fcn_app.io.atomic`), the rest is marked ``pending`` and the summary is still written; further
signals wait until it is (:class:`~fcn_app.processes.StopSignals`). The decode workers die with this process
however it ends, ``kill -9`` included (:func:`~fcn_app.processes.loader_worker_init`).
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from ..choices import default_num_workers
from ..errors import FcnError, InputImageError, OptionError
from ..io import DecodeRequest, InputImage, decode_input, ensure_output_dir, remove_stale_temporaries
from ..processes import StopSignals, Terminated, loader_worker_init, stop_loader_workers
from ..tasks.base import ImageTask, preview_picture
from .gallery import main_picture, thumbnail_path, write_thumbnail
from .inputs import WorkItem
from .summary import (SUMMARY_NAME, RowSpool, rank_summary_path, read_summary_rows, summary_header,
                      write_summary)

__all__ = [
    "BatchResult",
    "DecodeDataset",
    "default_num_workers",
    "is_up_to_date",
    "remove_own_temporaries",
    "run_batch",
]

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[dict], None]


class DecodeDataset(Dataset):
    """Decodes ``items[position]`` as ``request`` says; never raises, so one bad file cannot stop the loader."""

    def __init__(self, items: Sequence[WorkItem], request: DecodeRequest) -> None:
        self.items = list(items)
        self.request = request

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> tuple[int, InputImage | None, str | None]:
        source = self.items[position].source
        try:
            return position, decode_input(source, self.request), None
        except InputImageError as error:
            return position, None, str(error)
        except Exception as error:  # noqa: BLE001 — any decoder bug becomes this file's failure, not the job's
            reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
            return position, None, f"{source}: cannot decode: {reason}"


def _keep_sample(sample):
    """DataLoader ``collate_fn`` that leaves numpy arrays alone (the default would turn them into tensors)."""
    return sample


def is_up_to_date(source: Path, paths: dict[str, Path]) -> bool:
    """True when every output exists and is at least as new as the input (so a rerun may skip it)."""
    try:
        source_time = os.stat(source).st_mtime_ns
        return all(os.stat(path).st_mtime_ns >= source_time for path in paths.values())
    except OSError:
        return False


def remove_own_temporaries(out_dir: Path, items: Sequence[WorkItem], task: ImageTask, also: Sequence[Path] = ()) -> int:
    """Delete leftover temporary files of *these* items' outputs (and of the paths in ``also``) only.

    Sharded ranks share ``OUT``; removing every ``.*.tmp`` there would delete a neighbour's file mid-write.
    """
    own = {path for item in items for path in task.output_paths(item.stem_in(out_dir)).values()} | set(also)
    return remove_stale_temporaries(out_dir, targets=own)


@dataclass
class BatchResult:
    """What a batch run did; the rows of this process's inputs are in the summary at ``summary_path``."""

    elapsed_s: float
    interrupted: bool
    summary_path: Path | None
    counts: dict[str, int] = field(default_factory=dict)
    #: What stopped an interrupted run: ``signal.SIGTERM``, or ``signal.SIGINT`` for Ctrl-C (any
    #: ``KeyboardInterrupt``); ``None`` for a run that was not interrupted.
    stopped_by: int | None = None

    @property
    def images_per_s(self) -> float:
        attempted = self.counts.get("ok", 0) + self.counts.get("failed", 0)
        return attempted / self.elapsed_s if self.elapsed_s > 0 else 0.0


def _row(item: WorkItem, status: str, outputs: dict[str, Path] | None = None, **fields) -> dict:
    return {
        "path": item.relative,
        "input": str(item.source),
        "status": status,
        "outputs": {kind: str(path) for kind, path in (outputs or {}).items()},
        "top_classes": fields.get("top_classes", []),
        "image_size": fields.get("image_size"),
        "reason": fields.get("reason"),
    }


class _Writer:
    """Background thread: render and write each scored image; records one row per image."""

    _DONE = object()

    def __init__(self, out_dir: Path, task: ImageTask, record: Callable[[int, dict], None], depth: int,
                 thumbnails: bool = True) -> None:
        self.out_dir = out_dir
        self.task = task
        self.thumbnails = thumbnails
        self.record = record
        self.queue: queue.Queue = queue.Queue(maxsize=depth)
        self.thread = threading.Thread(target=self._run, name="fcn-batch-writer", daemon=True)
        self.thread.start()

    def put(self, position: int, item: WorkItem, image: InputImage, prediction) -> None:
        self.queue.put((position, item, image, prediction))

    def close(self) -> None:
        self.queue.put(self._DONE)
        self.thread.join()

    def _run(self) -> None:
        while True:
            job = self.queue.get()
            if job is self._DONE:
                return
            position, item, image, prediction = job
            try:
                rendered = self.task.render(image, prediction, str(item.source))
                written = self.task.write(rendered, self.task.output_paths(item.stem_in(self.out_dir)))
                if self.thumbnails:
                    self._write_thumbnail(rendered, written)
                height, width = image.picture_size
                row = _row(item, "ok", written, image_size=[int(width), int(height)],
                           **self.task.row_fields(rendered))
            except FcnError as error:
                row = _row(item, "failed", reason=str(error))
            except Exception as error:  # noqa: BLE001 — one image's rendering bug must not end the job
                logger.debug("rendering %s failed", item.source, exc_info=True)
                row = _row(item, "failed", reason=f"{item.source}: cannot render: {error}".splitlines()[0])
            self.record(position, row)

    def _write_thumbnail(self, rendered, written: dict[str, Path]) -> None:
        """The gallery's thumbnail, from the pixels still in memory (no decoding of the file just written)."""
        picture, preview = main_picture(written), preview_picture(rendered)
        if picture is None or preview is None:
            return
        try:
            write_thumbnail(preview, thumbnail_path(self.out_dir, picture))
        except Exception as error:  # noqa: BLE001 — the image is done; the gallery remakes its thumbnail from the file
            logger.warning("no thumbnail for %s: %s", picture, error)


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def run_batch(
    task: ImageTask,
    items: Sequence[WorkItem],
    out_dir: str | os.PathLike,
    *,
    batch_size: int = 1,
    num_workers: int | None = None,
    overwrite: bool = False,
    rank: int = 0,
    world_size: int = 1,
    on_row: ProgressCallback | None = None,
    on_start: Callable[[int, int], None] | None = None,
    extra_summary: dict | None = None,
    thumbnails: bool = False,
) -> BatchResult:
    """Process ``items`` (this rank's shard) into ``out_dir``; see the module docstring for how.

    ``on_start(to_process, skipped)`` is called once the up-to-date inputs are known, ``on_row(row)`` after each
    processed or failed input (from the writer thread or the main thread; calls are serialised). With
    ``world_size > 1`` the summary goes to ``summary.rank<rank>.json``; merging is the caller's business
    (:func:`~fcn_app.batch.summary.merge_summaries`), because only the caller knows whether a process group can
    wait for the other ranks. ``thumbnails`` writes each picture's gallery thumbnail as it is written
    (:mod:`~fcn_app.batch.gallery`; :func:`~fcn_app.batch.run_job` asks for them when it writes a gallery).
    """
    if batch_size < 1:
        raise OptionError("batch_size", f"must be at least 1, got {batch_size}")
    num_workers = default_num_workers() if num_workers is None else num_workers
    if num_workers < 0:
        raise OptionError("num_workers", f"must be 0 or more, got {num_workers}")
    task.check()  # e.g. a class-name typo fails now, not once per image
    out_dir = ensure_output_dir(out_dir)
    started = time.perf_counter()
    if world_size == 1:
        removed = remove_stale_temporaries(out_dir)
    else:
        removed = remove_own_temporaries(out_dir, items, task, also=[rank_summary_path(out_dir, rank)])
    if removed:
        logger.info("removed %d temporary files left by an interrupted run", removed)

    summary_path = out_dir / SUMMARY_NAME if world_size == 1 else rank_summary_path(out_dir, rank)
    previous = {} if overwrite else read_summary_rows(summary_path) or read_summary_rows(out_dir / SUMMARY_NAME)
    lock = threading.Lock()
    # Decoded inputs waiting for a batch of their network size: shape → [(position, item, input)].
    groups: dict[tuple[int, ...], list[tuple[int, WorkItem, InputImage]]] = {}
    max_buffered = max(4 * batch_size, 8)
    interrupted, stopped_by = False, None
    writer = iterator = None

    def record(position: int, row: dict) -> None:
        with stop.held(), lock:  # a signal never cuts a row in two
            rows.put(position, row)
            if on_row is not None and row["status"] != "skipped":
                on_row(row)

    def score(group: list[tuple[int, WorkItem, InputImage]]) -> None:
        try:
            predictions = task.predict([image.network_pixels for _, _, image in group])
        except (RuntimeError, ValueError) as error:
            if len(group) > 1:  # e.g. out of memory for the whole batch: try one by one
                for single in group:
                    score([single])
                return
            position, item, _ = group[0]
            reason = f"{item.source}: cannot compute score map ({_first_line(error)}); try downscaling it"
            record(position, _row(item, "failed", reason=reason))
            return
        for (position, item, image), prediction in zip(group, predictions):
            writer.put(position, item, image, prediction)

    with StopSignals() as stop:  # SIGINT and SIGTERM stop the run in order from here on
        with stop.held():
            rows = RowSpool(summary_path, len(items))  # on disk: memory stays flat however many inputs
        try:
            try:
                pending: list[int] = []
                for position, item in enumerate(items):
                    paths = task.output_paths(item.stem_in(out_dir))
                    if not overwrite and is_up_to_date(item.source, paths):
                        earlier = previous.get(item.relative, {})
                        record(position, _row(
                            item, "skipped", paths,
                            top_classes=earlier.get("top_classes", []), image_size=earlier.get("image_size"),
                        ))
                    else:
                        pending.append(position)
                del previous
                if on_start is not None:
                    on_start(len(pending), len(items) - len(pending))

                dataset = DecodeDataset([items[position] for position in pending], task.decode_request)
                loader = DataLoader(
                    dataset,
                    batch_size=None,
                    shuffle=False,
                    num_workers=num_workers,
                    collate_fn=_keep_sample,
                    worker_init_fn=loader_worker_init(),
                    prefetch_factor=2 if num_workers > 0 else None,
                )
                with stop.held():  # the writer thread and the decode workers start whole, so they are stopped whole
                    writer = _Writer(out_dir, task, record, depth=2 * batch_size + 2, thumbnails=thumbnails)
                    iterator = iter(loader)
                buffered = 0
                for local_position, image, reason in iterator:
                    position = pending[local_position]
                    item = items[position]
                    if reason is not None:
                        record(position, _row(item, "failed", reason=reason))
                        continue
                    shape = image.network_pixels.shape
                    group = groups.setdefault(shape, [])
                    group.append((position, item, image))
                    buffered += 1
                    if len(group) >= batch_size:
                        buffered -= len(group)
                        score(groups.pop(shape))
                    elif buffered > max_buffered:  # many sizes in flight: score the largest group to bound memory
                        largest = max(groups, key=lambda shape: len(groups[shape]))
                        buffered -= len(groups[largest])
                        score(groups.pop(largest))
                for shape in list(groups):
                    score(groups.pop(shape))
            except KeyboardInterrupt as stop_request:  # Ctrl-C, or SIGTERM's Terminated
                interrupted = True
                stopped_by = signal.SIGTERM if isinstance(stop_request, Terminated) else signal.SIGINT
                logger.info("%s: discarding the images being scored, finishing the ones already scored",
                            "terminated" if stopped_by == signal.SIGTERM else "interrupted")
            finally:
                stop.finish()  # from here on the run only finishes what it has; more signals wait for the summary
                groups.clear()
                stop_loader_workers(iterator)  # a run stopped early: their decodes would only be thrown away
                del iterator  # shuts the decode workers down
                if writer is not None:
                    writer.close()

            elapsed = time.perf_counter() - started
            for position, item in enumerate(items):
                if position not in rows:
                    rows.put(position, _row(item, "pending", reason="not processed: the run was interrupted"))
            header = summary_header(dict(rows.counts), elapsed_s=elapsed, world_size=world_size, ranks=[rank],
                                    interrupted=interrupted, extra=extra_summary)
            by_path = sorted(range(len(items)), key=lambda position: items[position].relative)
            written = write_summary(summary_path, header, (rows.get(position) for position in by_path))
        finally:
            rows.close()
    return BatchResult(elapsed, interrupted, written, header["counts"], stopped_by)
