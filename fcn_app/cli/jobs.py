"""What the image commands share: folder/glob/list inputs run as batch jobs with a progress bar and a summary.

``heatmap`` and ``detect`` both build an :class:`~fcn_app.tasks.base.ImageTask` and hand it to
:func:`run_folder_job` (many inputs) or :func:`~fcn_app.tasks.base.process_image` (one image), so every command
gets the same decoding workers, resume, sharding, exit codes and ``summary.json``.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Callable

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.text import Text

from ..choices import default_num_workers
from ..errors import InputImageError, OptionError
from .app import EXIT_FAILURES, EXIT_INTERRUPTED, EXIT_TERMINATED, error_console

if TYPE_CHECKING:
    from ..batch import JobResult
    from ..tasks.base import ImageTask

__all__ = [
    "BatchSizeOption",
    "ExcludeOption",
    "FolderOptions",
    "GalleryOption",
    "IncludeOption",
    "ListOption",
    "NumWorkersOption",
    "OverwriteOption",
    "RecursiveOption",
    "ShardOption",
    "is_batch_input",
    "run_folder_job",
]

ListOption = Annotated[
    Path | None,
    typer.Option("--list", help="Text file of image paths, one per line (relative to the file's folder).", dir_okay=False),
]
RecursiveOption = Annotated[bool, typer.Option("--recursive", "-r", help="Look in sub-folders of a folder too.")]
IncludeOption = Annotated[
    list[str] | None, typer.Option(help="Only inputs matching this glob ('*.jpg', or 'sub/*' for paths). Repeatable.")
]
ExcludeOption = Annotated[list[str] | None, typer.Option(help="Leave out inputs matching this glob. Repeatable.")]
BatchSizeOption = Annotated[int, typer.Option(
    help="Hand up to this many same-size images to the model per call (each is scored alone: outputs never depend "
         "on the batch).", min=1)]
NumWorkersOption = Annotated[
    int | None, typer.Option(help=f"Decoding processes (default: one per two CPUs, at most 2; here {default_num_workers()}).", min=0)
]
OverwriteOption = Annotated[bool, typer.Option("--overwrite", help="Redo inputs whose outputs are already complete.")]
GalleryOption = Annotated[bool, typer.Option(
    "--gallery/--no-gallery",
    help="Write OUT/index.html, a gallery of thumbnails to browse from disk (filter by class, sort by peak), and "
         "the thumbnails in OUT/.thumbs/.")]
ShardOption = Annotated[
    str | None, typer.Option(help="Process only shard I of N (I/N, from 0) of the sorted inputs, e.g. for job arrays.")
]


@dataclass
class FolderOptions:
    """How many inputs are found and run (the folder options of the image commands)."""

    list_file: Path | None = None
    recursive: bool = False
    include: list[str] | None = None
    exclude: list[str] | None = None
    batch_size: int = 1
    num_workers: int | None = None
    overwrite: bool = False
    shard: str | None = None
    gallery: bool = True


class _ImagesPerSecondColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} img/s" if speed else "– img/s")


def is_batch_input(inputs: list[Path], list_file: Path | None) -> bool:
    """A folder, a glob, several files or a list file run as a batch job; one existing file does not."""
    if list_file is not None or len(inputs) != 1:
        return True
    from ..io import is_glob_pattern

    single = inputs[0]
    return single.is_dir() or (not single.exists() and is_glob_pattern(single))


def run_folder_job(
    make_task: Callable[[], ImageTask],
    inputs: list[Path],
    out: Path | None,
    folder: FolderOptions,
    *,
    description: str,
    verbose: bool,
    extra_summary: dict | None = None,
) -> tuple[int, JobResult]:
    """Run ``make_task()`` over every input into ``out``; returns the exit code (0, 1, 130 after Ctrl-C or 143
    after SIGTERM) and the job."""
    from ..batch import collect_inputs, parse_shard, run_job
    from ..batch.distributed import shard_from_environment
    from ..io import ensure_output_dir

    if out is None:
        raise OptionError("out", "required for folders, globs and lists (outputs mirror the input tree there)")
    shard_spec = parse_shard(folder.shard) if folder.shard is not None else None
    rank, world_size = shard_spec if shard_spec is not None else shard_from_environment()
    items, passed_over = collect_inputs(
        inputs, list_file=folder.list_file, recursive=folder.recursive, include=folder.include or [],
        exclude=folder.exclude or [], out_dir=out,
    )
    if verbose:
        for path in passed_over:
            error_console.print(f"ignored (not an image extension): {escape(str(path))}")
    if not items:
        raise InputImageError(
            f"no image files found in {', '.join(map(str, inputs)) or folder.list_file}"
            + ("" if folder.recursive else " (add --recursive to look in sub-folders)")
        )
    out_dir = ensure_output_dir(out)
    task = make_task()
    label = f"rank {rank}/{world_size} " if world_size > 1 else ""
    progress = Progress(
        TextColumn(f"{label}[progress.description]{{task.description}}"), BarColumn(), MofNCompleteColumn(),
        _ImagesPerSecondColumn(), TimeRemainingColumn(), console=error_console, transient=False,
    )
    bar = progress.add_task(description, total=None)

    def on_start(to_process: int, skipped: int) -> None:
        progress.update(bar, total=to_process)
        if skipped:
            progress.console.print(f"{label}skipping {skipped} inputs whose outputs are complete (--overwrite redoes them)")

    def on_row(row: dict) -> None:
        if row["status"] == "failed":
            progress.console.print(f"[red]failed:[/red] {escape(row['reason'])}", highlight=False)
        progress.advance(bar)

    with progress:
        job = run_job(
            task, items, out_dir, shard=shard_spec, batch_size=folder.batch_size, num_workers=folder.num_workers,
            overwrite=folder.overwrite, on_row=on_row, on_start=on_start, extra_summary=extra_summary,
            gallery=folder.gallery,
        )
    result = job.result
    counts = result.counts
    error_console.print(
        f"{label}processed {counts['ok']}, skipped {counts['skipped']}, failed {counts['failed']}"
        + (f", not reached {counts['pending']}" if counts["pending"] else "")
        + f" in {result.elapsed_s:.1f} s ({result.images_per_s:.2f} images/s)",
        highlight=False,
    )
    if job.summary_path is not None:
        error_console.print(f"summary: {escape(str(job.summary_path))}", highlight=False)
    elif result.summary_path is not None:
        error_console.print(
            f"shard summary: {escape(str(result.summary_path))} (summary.json follows when every shard has run)",
            highlight=False,
        )
    if job.gallery_path is not None:
        error_console.print(f"gallery: {escape(str(job.gallery_path))}", highlight=False)
    if result.interrupted:
        terminated = result.stopped_by == signal.SIGTERM
        error_console.print(f"{'terminated' if terminated else 'interrupted'}; rerun the same command to finish the rest")
        return (EXIT_TERMINATED if terminated else EXIT_INTERRUPTED), job
    return (EXIT_FAILURES if counts["failed"] else 0), job
