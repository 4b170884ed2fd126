"""``fcn-heatmap IMAGE``: class heatmaps of one image — or of a folder, a glob or a list of many.

One image file keeps the single-image behaviour (outputs next to it or in ``--out``, a table of peaks).
A folder, a glob, several files or ``--list FILE`` run a batch job (:mod:`fcn_app.batch`): outputs mirror the
input tree in ``--out``, a progress bar, ``OUT/summary.json``, resume, and sharding under torchrun or
``--shard i/n``. Both paths call the same pipeline functions, so an image's outputs are identical either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ..batch import collect_inputs, default_num_workers, is_glob_pattern, load_network, parse_shard, run_job
from ..batch.distributed import shard_from_environment
from ..errors import InputImageError
from ..io import DEFAULT_MAX_PIXELS, ensure_output_dir, load_image
from ..models import DEFAULT_ARCH
from ..pipeline import HeatmapOptions, HeatmapTask, ImageTask, process_image
from ..render import COLORMAPS, DEFAULT_COLORMAP
from ..scoring import resolve_device
from .app import (
    EXIT_FAILURES,
    EXIT_INTERRUPTED,
    DeviceOption,
    ModelOption,
    VerboseOption,
    WeightsOption,
    app,
    cli_errors,
    console,
    error_console,
    setup_logging,
)

__all__ = ["heatmap"]


def _print_table(rendered, written: dict[str, Path]) -> None:
    table = Table(title=f"{rendered.summary['image']} · {rendered.summary['image_size']['width']}×"
                  f"{rendered.summary['image_size']['height']} px · map "
                  f"{rendered.summary['map_size']['rows']}×{rendered.summary['map_size']['cols']}")
    table.add_column("#", justify="right")
    table.add_column("class")
    table.add_column("peak prob", justify="right")
    table.add_column("peak pixel (x, y)", justify="right")
    for rank, heat in enumerate(rendered.heatmaps, start=1):
        table.add_row(str(rank), heat.selection.name, f"{heat.peak_probability:.3f}",
                      f"({heat.peak_pixel[0]}, {heat.peak_pixel[1]})")
    console.print(table)
    for kind, path in written.items():
        console.print(f"wrote {kind}: {path}", highlight=False)


class _ImagesPerSecondColumn(ProgressColumn):
    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:.1f} img/s" if speed else "– img/s")


def _is_batch(inputs: list[Path], list_file: Path | None) -> bool:
    if list_file is not None or len(inputs) != 1:
        return True
    single = inputs[0]
    return single.is_dir() or (not single.exists() and is_glob_pattern(single))


def _device_for_rank(device: str) -> str:
    """Under torchrun with several GPUs, ``auto`` means this rank's own GPU (``LOCAL_RANK``)."""
    import os

    import torch

    if device == "auto" and torch.cuda.is_available() and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK']) % torch.cuda.device_count()}"
    return device


def _run_batch_command(
    inputs: list[Path], list_file: Path | None, out: Path | None, options: HeatmapOptions, *, recursive: bool,
    include: list[str], exclude: list[str], batch_size: int, num_workers: int | None, overwrite: bool,
    shard: str | None, model: str, weights: Path | None, checkpoint: Path | None, device: str, verbose: bool,
) -> int:
    if out is None:
        raise ValueError("--out OUT is required for folders, globs and lists (outputs mirror the input tree there)")
    shard_spec = parse_shard(shard) if shard is not None else None
    rank, world_size = shard_spec if shard_spec is not None else shard_from_environment()
    items, passed_over = collect_inputs(
        inputs, list_file=list_file, recursive=recursive, include=include, exclude=exclude, out_dir=out
    )
    if verbose:
        for path in passed_over:
            error_console.print(f"ignored (not an image extension): {escape(str(path))}")
    if not items:
        raise InputImageError(
            f"no image files found in {', '.join(map(str, inputs)) or list_file}"
            + ("" if recursive else " (add --recursive to look in sub-folders)")
        )
    out_dir = ensure_output_dir(out)
    image_task = _build_task(options, model=model, weights=weights, checkpoint=checkpoint, device=device)
    label = f"rank {rank}/{world_size} " if world_size > 1 else ""
    progress = Progress(
        TextColumn(f"{label}[progress.description]{{task.description}}"), BarColumn(), MofNCompleteColumn(),
        _ImagesPerSecondColumn(), TimeRemainingColumn(), console=error_console, transient=False,
    )
    bar = progress.add_task("heatmaps", total=None)

    def on_start(to_process: int, skipped: int) -> None:
        progress.update(bar, total=to_process)
        if skipped:
            progress.console.print(f"{label}skipping {skipped} inputs whose outputs are complete (--overwrite redoes them)")

    def on_row(row: dict) -> None:
        if row["status"] == "failed":
            progress.console.print(f"[red]failed:[/red] {escape(row['reason'])}", highlight=False)
        progress.advance(bar)

    extra = {"model": str(checkpoint) if checkpoint is not None else model, "options": {
        "classes": options.classes, "topk": options.topk, "colormap": options.colormap, "grid": options.grid,
        "save_scores": options.save_scores, "json": options.write_json, "max_side": options.max_side,
    }}
    with progress:
        job = run_job(
            image_task, items, out_dir, shard=shard_spec, batch_size=batch_size,
            num_workers=num_workers, overwrite=overwrite, on_row=on_row, on_start=on_start, extra_summary=extra,
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
    if result.interrupted:
        error_console.print("interrupted; rerun the same command to finish the rest")
        return EXIT_INTERRUPTED
    return EXIT_FAILURES if counts["failed"] else 0


def _build_task(options: HeatmapOptions, *, model: str, weights: Path | None, checkpoint: Path | None,
                device: str) -> ImageTask:
    """Classifier heatmaps, or with ``--checkpoint`` the segmentation of a trained FCN (same outputs machinery)."""
    target = resolve_device(_device_for_rank(device))
    if checkpoint is None:
        return HeatmapTask(load_network(model, weights).to(target), options)
    from ..segmentation.checkpoint import load_segmentation_model
    from ..segmentation.predict import SegmentationOptions, SegmentationTask

    segmentation_model, class_names, _ = load_segmentation_model(checkpoint, target)
    return SegmentationTask(segmentation_model, class_names, SegmentationOptions(
        classes=options.classes, topk=options.topk if options.classes is None else len(options.classes),
        colormap=options.colormap, alpha=options.alpha, write_json=options.write_json,
        max_side=options.max_side, max_pixels=options.max_pixels,
    ))


@app.command(epilog="Examples: fcn-heatmap examples/chelsea.jpg --class cat --grid --out results/ · "
             "fcn-heatmap photos/ --recursive --out results/ · fcn-heatmap --list files.txt --out results/")
def heatmap(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Image file (jpg, png, bmp, webp, tif, gif), or a folder, a quoted glob ('photos/**/*.jpg') or "
            "several files: then every image is processed into --out.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default for one image: next to it).")] = None,
    classes: Annotated[
        list[str] | None,
        typer.Option("--class", "-c", help="Class name, word (sums matching classes, e.g. 'cat') or index. Repeatable."),
    ] = None,
    topk: Annotated[int, typer.Option(help="How many top classes (by peak probability) when no --class.", min=1)] = 3,
    colormap: Annotated[str, typer.Option(help=f"One of: {', '.join(COLORMAPS)}.")] = DEFAULT_COLORMAP,
    alpha: Annotated[float, typer.Option(help="Heatmap opacity over the photo.", min=0.0, max=1.0)] = 0.5,
    grid: Annotated[bool, typer.Option("--grid", help="Also write one panel per class (<name>.grid.png).")] = False,
    save_scores: Annotated[bool, typer.Option("--save-scores", help="Write raw score grid + geometry (.npz).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary and write <name>.json.")] = False,
    max_side: Annotated[int | None, typer.Option(help="Downscale so the longer side is at most this.", min=1)] = None,
    max_pixels: Annotated[int, typer.Option(help="Refuse images declaring more pixels than this.", min=1)] = DEFAULT_MAX_PIXELS,
    list_file: Annotated[
        Path | None,
        typer.Option("--list", help="Text file of image paths, one per line (relative to the file's folder).", dir_okay=False),
    ] = None,
    recursive: Annotated[bool, typer.Option("--recursive", "-r", help="Look in sub-folders of a folder too.")] = False,
    include: Annotated[
        list[str] | None, typer.Option(help="Only inputs matching this glob ('*.jpg', or 'sub/*' for paths). Repeatable.")
    ] = None,
    exclude: Annotated[list[str] | None, typer.Option(help="Leave out inputs matching this glob. Repeatable.")] = None,
    batch_size: Annotated[int, typer.Option(help="Score up to this many same-size images at once.", min=1)] = 1,
    num_workers: Annotated[
        int | None, typer.Option(help=f"Decoding processes (default min(2, CPUs) = {default_num_workers()}).", min=0)
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Redo inputs whose outputs are already complete.")] = False,
    shard: Annotated[
        str | None, typer.Option(help="Process only shard I of N (I/N, from 0) of the sorted inputs, e.g. for job arrays.")
    ] = None,
    model: ModelOption = DEFAULT_ARCH,
    weights: WeightsOption = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="Trained segmentation checkpoint (fcn-heatmap train): palette overlay "
                     "<name>.segmentation.png, per-class heatmaps <name>.classes.png, labels <name>.labels.png.",
                     dir_okay=False),
    ] = None,
    device: DeviceOption = "auto",
    verbose: VerboseOption = False,
) -> None:
    """Write IMAGE with a heatmap of its top classes blended over it, and print where each class peaks.

    Given a folder, glob, several files or --list, process all of them into --out (mirroring the input tree),
    skipping inputs whose outputs are already complete; exit code 1 if any input failed.
    """
    setup_logging(verbose)
    inputs = list(inputs or [])
    code = 0
    with cli_errors(verbose):
        if colormap not in COLORMAPS:
            raise ValueError(f"unknown --colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}")
        options = HeatmapOptions(
            classes=classes or None, topk=topk, colormap=colormap, alpha=alpha, grid=grid, save_scores=save_scores,
            write_json=as_json, max_side=max_side, max_pixels=max_pixels,
        )
        if not inputs and list_file is None:
            raise ValueError("give an IMAGE, a folder, a glob or --list FILE")
        if _is_batch(inputs, list_file):
            code = _run_batch_command(
                inputs, list_file, out, options, recursive=recursive, include=include or [], exclude=exclude or [],
                batch_size=batch_size, num_workers=num_workers, overwrite=overwrite, shard=shard, model=model,
                weights=weights, checkpoint=checkpoint, device=device, verbose=verbose,
            )
        else:
            image = inputs[0]
            pixels = load_image(image, max_side=options.max_side, max_pixels=options.max_pixels)
            out_dir = ensure_output_dir(out) if out is not None else image.parent
            task = _build_task(options, model=model, weights=weights, checkpoint=checkpoint, device=device)
            task.check()
            rendered, written = process_image(task, pixels, out_dir / image.stem, source=str(image))
            if as_json:
                payload = dict(rendered.summary, outputs={kind: str(path) for kind, path in written.items()})
                typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
            elif isinstance(task, HeatmapTask):
                _print_table(rendered, written)
            else:
                for kind, path in written.items():
                    console.print(f"wrote {kind}: {path}", highlight=False)
    if code:
        raise typer.Exit(code=code)
