"""``fcn-heatmap IMAGE``: class heatmaps of one image — or of a folder, a glob or a list of many.

One image file keeps the single-image behaviour (outputs next to it or in ``--out``, a table of peaks).
A folder, a glob, several files or ``--list FILE`` run a batch job (:mod:`fcn_app.batch`): outputs mirror the
input tree in ``--out``, a progress bar, ``OUT/summary.json``, resume, and sharding under torchrun or
``--shard i/n``. Both paths decode with the task's request and call the same task methods, so an image's outputs
are identical either way.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..choices import (COLORMAP_NAMES, DEFAULT_ARCH, DEFAULT_COLORMAP, DEFAULT_MAX_PIXELS, DEFAULT_WORK_WINDOWS, FCN,
                       FUSE_MODES, IMAGE_FORMATS, default_work_size)
from ..errors import OptionError
from .app import (BackendOption, ClassesOption, DeviceOption, MethodOption, ModelOption, PrecisionOption,
                  TargetLayerOption, VerboseOption, WeightsOption, WindowOption, answered_before_loading, app,
                  check_method_window, cli_errors, error_console, load_command_network, print_report, setup_logging)
from .jobs import (
    BatchSizeOption,
    ExcludeOption,
    FolderOptions,
    GalleryOption,
    IncludeOption,
    ListOption,
    NumWorkersOption,
    OverwriteOption,
    RecursiveOption,
    ShardOption,
    is_batch_input,
    run_folder_job,
)

if TYPE_CHECKING:
    from ..scoring import ScoringOptions
    from ..tasks import HeatmapOptions, ImageTask

__all__ = ["heatmap", "tile_progress"]


def tile_progress():
    """A progress bar for huge images scored in tiles (shown only when there is more than one tile)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(TextColumn("scoring tiles"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                        console=error_console, transient=True)
    bar = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if total <= 1:
            return
        if bar is None:
            progress.start()
            bar = progress.add_task("tiles", total=total)
        progress.update(bar, completed=done)
        if done >= total:
            progress.stop()

    return update


def _build_task(options: HeatmapOptions, scoring: ScoringOptions, *, model: str, weights: Path | None,
                checkpoint: Path | None, device: str, stride: int | None = None, classes_path: Path | None = None,
                window: int | None = None) -> ImageTask:
    """Classifier heatmaps, or with ``--checkpoint`` the segmentation of a trained FCN (same outputs machinery)."""
    from ..tasks import HeatmapTask, SegmentationTask

    network = load_command_network(model=model, weights=weights, checkpoint=checkpoint, device=device,
                                   classes_path=classes_path, stride=stride, window=window)
    return (HeatmapTask if checkpoint is None else SegmentationTask)(network, options, scoring)


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
    colormap: Annotated[str, typer.Option(help=f"One of: {', '.join(COLORMAP_NAMES)}.")] = DEFAULT_COLORMAP,
    alpha: Annotated[float, typer.Option(help="Heatmap opacity over the photo.", min=0.0, max=1.0)] = 0.5,
    grid: Annotated[bool, typer.Option("--grid", help="Also write one panel per class (<name>.grid.png).")] = False,
    work_size: Annotated[
        str | None,
        typer.Option("--work-size", help="Longer side (px) of the image the network sees, or 'native' for the "
                     f"image as decoded. Default: {DEFAULT_WORK_WINDOWS} model windows "
                     f"({default_work_size(224)} px for VGG), never enlarged; a checkpoint's segmentation: native "
                     "(with N, its logits are resized bilinearly to the image's pixels). Outputs keep the image's "
                     "size.",
                     show_default=False),
    ] = None,
    scales: Annotated[str, typer.Option(help="Pyramid: score at these multiples of the working size, e.g. 0.5,1,2.")] = "1",
    fuse: Annotated[str | None, typer.Option(
        help=f"Fuse pyramid levels per pixel: {' or '.join(FUSE_MODES)} of the class probabilities. Default: max; a "
        "checkpoint's segmentation: mean of the softmax probabilities, then argmax → labels.",
        show_default=False)] = None,
    image_format: Annotated[
        str, typer.Option("--format", help=f"Overlay and grid format: {', '.join(IMAGE_FORMATS)} (ICC profile kept). "
                          "A checkpoint's segmentation overlay only: class panels and labels stay PNG (lossless).")
    ] = "png",
    normalize: Annotated[
        str, typer.Option("--normalize", help="How each class's map becomes colours: none (probability 0 → 1, "
                          "comparable across classes and images), peak (0 → the map's own peak; what the former "
                          "flag did) or minmax (the map's minimum → 0 and maximum → 1, as grad-cam and torchcam "
                          "scale; a flat map is all 0). The legend keeps the true probabilities.")
    ] = "none",
    save_scores: Annotated[bool, typer.Option("--save-scores", help="Write raw score grid + geometry (.npz).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary and write <name>.json.")] = False,
    stride: Annotated[
        int | None, typer.Option(help="Denser map in one pass: output stride 16 or 8 instead of the native 32.")
    ] = None,
    max_side: Annotated[int | None, typer.Option(help="Downscale the image, and so the outputs, so the longer side is at most this.", min=1)] = None,
    max_pixels: Annotated[int, typer.Option(help="Refuse images declaring more pixels than this.", min=1)] = DEFAULT_MAX_PIXELS,
    list_file: ListOption = None,
    recursive: RecursiveOption = False,
    include: IncludeOption = None,
    exclude: ExcludeOption = None,
    batch_size: BatchSizeOption = 1,
    num_workers: NumWorkersOption = None,
    overwrite: OverwriteOption = False,
    shard: ShardOption = None,
    gallery: GalleryOption = True,
    model: ModelOption = DEFAULT_ARCH,
    weights: WeightsOption = None,
    class_names_file: ClassesOption = None,
    window: WindowOption = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", help="Trained segmentation checkpoint (fcn-heatmap train): palette overlay "
                     "<name>.segmentation.png, per-class heatmaps <name>.classes.png, labels <name>.labels.png.",
                     dir_okay=False),
    ] = None,
    font: Annotated[
        Path | None,
        typer.Option("--font", help="TrueType/OpenType font for labels, e.g. one covering CJK (default: bundled "
                     "DejaVu Sans: Latin, Greek, Cyrillic)."),
    ] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "auto",
    backend: BackendOption = "auto",
    max_memory: Annotated[str | None, typer.Option(help="Activation budget, e.g. 2G; larger images run in exact tiles (default: 1/4 of free RAM, ≤ 1 GiB).")] = None,
    method: MethodOption = FCN,
    target_layer: TargetLayerOption = None,
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
        if answered_before_loading(target_layer=target_layer, classes=classes, model=model, weights=weights,
                                   checkpoint=checkpoint, device=device, classes_path=class_names_file,
                                   stride=stride, window=window, method=method, backend=backend,
                                   precision=precision, image_format=image_format, colormap=colormap,
                                   work_size=work_size, normalize=normalize):
            return
        if not inputs and list_file is None:
            raise OptionError("inputs", "give an IMAGE, a folder, a glob or --list FILE")
        from ..io import check_image_path, decode_input, ensure_output_dir  # numpy and Pillow, no torch

        batch = is_batch_input(inputs, list_file)
        image = None if batch else check_image_path(inputs[0])  # a typo fails before the model loads

        from ..runtimes import command_backend
        from ..scoring import ScoringOptions
        from ..tasks import HeatmapOptions, HeatmapTask, SegmentationTask, process_input

        options = HeatmapOptions(
            classes=classes or None, topk=topk, colormap=colormap, alpha=alpha, grid=grid, save_scores=save_scores,
            write_json=as_json, normalize=normalize, max_side=max_side, max_pixels=max_pixels,
            font=str(font) if font is not None else None, work_size=work_size, scales=scales, fuse=fuse,
            image_format=image_format, method=method, target_layer=target_layer,
        )
        check_method_window(options.method, window, backend)
        # one image and a folder score on the same runtime, so an image's outputs have the same bytes in both
        scoring = ScoringOptions(precision, max_memory, command_backend(backend))
        if batch:
            folder = FolderOptions(list_file, recursive, include, exclude, batch_size, num_workers, overwrite, shard,
                                   gallery)
            extra = {"model": str(checkpoint) if checkpoint is not None else model, "options": {
                "classes": options.classes, "topk": options.topk, "colormap": options.colormap, "grid": options.grid,
                "save_scores": options.save_scores, "json": options.write_json, "max_side": options.max_side,
                "normalize": options.normalize, "work_size": options.work_size, "scales": list(options.scales),
                "fuse": options.fuse or (HeatmapTask if checkpoint is None else SegmentationTask).default_fuse,
                "format": options.image_format, "method": options.method, "target_layer": options.target_layer,
            }}
            code, _ = run_folder_job(
                lambda: _build_task(options, scoring, model=model, weights=weights, checkpoint=checkpoint,
                                    device=device, stride=stride, classes_path=class_names_file, window=window),
                inputs, out, folder, description="heatmaps", verbose=verbose, extra_summary=extra,
            )
        else:
            out_dir = ensure_output_dir(out) if out is not None else image.parent
            task = _build_task(options, scoring, model=model, weights=weights, checkpoint=checkpoint, device=device,
                               stride=stride, classes_path=class_names_file, window=window)
            task.check()
            rendered, written = process_input(task, decode_input(image, task.decode_request), out_dir / image.stem,
                                              source=str(image), progress=tile_progress())
            if as_json:
                payload = dict(rendered.summary, outputs={kind: str(path) for kind, path in written.items()})
                typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
            else:
                print_report(task.report(rendered), written)
    if code:
        raise typer.Exit(code=code)
