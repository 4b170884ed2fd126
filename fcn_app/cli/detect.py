"""``fcn-heatmap detect IMAGE|DIR`` (boxes from heatmaps) and ``fcn-heatmap evaluate-detections`` (COCO AP)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..dense import densify
from ..detect import BOX_MODES, CENTER_MODES, THRESHOLD_MODES, DetectOptions, detect_objects, draw_detections, \
    evaluate_detections, to_coco_results
from ..errors import InputImageError
from ..io import DEFAULT_MAX_PIXELS, atomic_write_json, atomic_write_png, ensure_output_dir, is_image_path, load_image
from ..models import DEFAULT_ARCH, load_fcn
from ..pyramid import FUSE_MODES, parse_scales
from ..scoring import resolve_device
from .app import EXIT_FAILURES, DeviceOption, ModelOption, VerboseOption, WeightsOption, app, cli_errors, console, \
    error_console, setup_logging

__all__ = ["detect", "evaluate_detections_command", "list_images"]

RESULTS_NAME = "detections.coco.json"


def list_images(source: Path) -> list[Path]:
    """``source`` itself if it is a file, else the images directly inside the folder ``source``, sorted by name."""
    if not source.exists():
        raise InputImageError(f"{source}: no such file or folder")
    if source.is_file():
        return [source]
    images = sorted(path for path in source.iterdir() if path.is_file() and is_image_path(path))
    if not images:
        raise InputImageError(f"{source}: the folder holds no images (jpg, png, bmp, webp, tif, gif)")
    return images


def _check_choice(value: str, choices, option: str) -> str:
    if value not in choices:
        raise ValueError(f"unknown {option} {value!r}; choose one of {', '.join(choices)}")
    return value


@app.command(epilog="Example: fcn-heatmap detect photos/ --stride 16 --scales 0.5,1,2 --out boxes/")
def detect(
    source: Annotated[Path, typer.Argument(help="An image file, or a folder of images.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: next to the images).")] = None,
    classes: Annotated[
        list[str] | None,
        typer.Option("--class", "-c", help="Look only for this class (name, word or index). Repeatable."),
    ] = None,
    topk: Annotated[int, typer.Option(help="Without --class: look for the top-k classes of each image.", min=1)] = 5,
    stride: Annotated[int | None, typer.Option(help="Output stride of the map: 32 (native VGG), 16 or 8.")] = None,
    scales: Annotated[str, typer.Option(help="Image pyramid scales, e.g. 0.5,1,2.")] = "1",
    fuse: Annotated[str, typer.Option(help="Fuse pyramid levels per pixel: max or mean.")] = "max",
    threshold_mode: Annotated[str, typer.Option(help="absolute, relative (× class peak) or otsu.")] = "relative",
    threshold: Annotated[float, typer.Option(help="Threshold for absolute/relative modes.", min=0.0, max=1.0)] = 0.5,
    min_score: Annotated[float, typer.Option(help="Drop detections whose peak is below.", min=0.0, max=1.0)] = 0.3,
    box_mode: Annotated[str, typer.Option(help="auto, window (classifier window at peak) or region (heat extent).")] = "auto",
    window_fill: Annotated[float, typer.Option(help="Window boxes are this fraction of the window.")] = 1.0,
    center: Annotated[str, typer.Option(help="Centre window boxes on the heat's peak or centroid.")] = "peak",
    nms_iou: Annotated[float, typer.Option(help="NMS IoU threshold.", min=0.0, max=1.0)] = 0.3,
    classwise_nms: Annotated[bool, typer.Option("--classwise-nms", help="Suppress overlaps only within a class.")] = False,
    masks: Annotated[bool, typer.Option("--masks", help="Add each detection's heat mask (COCO RLE).")] = False,
    max_side: Annotated[int | None, typer.Option(help="Downscale so the longer side is at most this.", min=1)] = None,
    max_pixels: Annotated[int, typer.Option(help="Refuse images declaring more pixels than this.", min=1)] = DEFAULT_MAX_PIXELS,
    model: ModelOption = DEFAULT_ARCH,
    weights: WeightsOption = None,
    device: DeviceOption = "auto",
    verbose: VerboseOption = False,
) -> None:
    """Find objects: per image <name>.detections.png (boxes + labels) and <name>.detections.json; all results in
    COCO format in detections.coco.json."""
    setup_logging(verbose)
    with cli_errors(verbose):
        _check_choice(fuse, FUSE_MODES, "--fuse")
        _check_choice(threshold_mode, THRESHOLD_MODES, "--threshold-mode")
        _check_choice(box_mode, BOX_MODES, "--box-mode")
        _check_choice(center, CENTER_MODES, "--center")
        pyramid_scales = parse_scales(scales)
        options = DetectOptions(threshold_mode=threshold_mode, threshold=threshold, min_score=min_score,
                                box_mode=box_mode, window_fill=window_fill, center=center, nms_iou=nms_iou,
                                classwise_nms=classwise_nms, masks=masks)
        images = list_images(source)
        out_dir = ensure_output_dir(out) if out is not None else (source if source.is_dir() else source.parent)
        network = load_fcn(model, weights_path=weights)
        if stride is not None:
            network = densify(network, stride)
        network = network.to(resolve_device(device))

        per_image, failures = [], 0
        table = Table(title=f"detections · stride {stride or 'native'} · scales {scales} · fuse {fuse}")
        for column in ("image", "class", "score", "box x, y, w, h"):
            table.add_column(column)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=error_console, transient=True, disable=len(images) < 2) as progress:
            task = progress.add_task("detecting", total=len(images))
            for image_id, path in enumerate(images, start=1):
                try:
                    pixels = load_image(path, max_side=max_side, max_pixels=max_pixels)
                    detections = detect_objects(network, pixels, scales=pyramid_scales, classes=classes, fuse=fuse,
                                                topk=topk, options=options)
                    stem = out_dir / path.stem
                    atomic_write_png(Path(f"{stem}.detections.png"), draw_detections(pixels, detections))
                    atomic_write_json(Path(f"{stem}.detections.json"), {
                        "image": str(path), "image_size": {"height": pixels.shape[0], "width": pixels.shape[1]},
                        "model": model, "stride": stride, "scales": list(pyramid_scales), "fuse": fuse,
                        "detections": [detection.to_dict() for detection in detections],
                    })
                except InputImageError as error:  # one bad file in a folder does not stop the others
                    if len(images) == 1:
                        raise
                    failures += 1
                    error_console.print(f"[red]error:[/red] {error}", markup=True, highlight=False)
                    detections = []
                per_image.append((image_id, path.name, detections))
                for detection in detections:
                    table.add_row(path.name, detection.class_name, f"{detection.score:.3f}",
                                  ", ".join(f"{value:.0f}" for value in detection.box))
                progress.advance(task)
        results_path = atomic_write_json(out_dir / RESULTS_NAME, to_coco_results(per_image))
        console.print(table)
        console.print(f"wrote {len(images) - failures} overlay(s) and {results_path}", highlight=False)
        if failures:
            raise typer.Exit(code=EXIT_FAILURES)


@app.command("evaluate-detections", epilog="Example: fcn-heatmap evaluate-detections boxes/detections.coco.json gt.json")
def evaluate_detections_command(
    results: Annotated[Path, typer.Argument(help="COCO results JSON (e.g. detections.coco.json from detect).")],
    ground_truth: Annotated[Path, typer.Argument(help="COCO ground-truth JSON (images, annotations, categories).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    verbose: VerboseOption = False,
) -> None:
    """COCO AP, AP50, AP75 … of detections against ground truth (pycocotools). Images and classes are matched by
    file name and class name when the results carry them."""
    setup_logging(verbose)
    with cli_errors(verbose):
        metrics = evaluate_detections(results, ground_truth)
        if as_json:
            typer.echo(json.dumps(metrics, indent=2))
            return
        table = Table(title=f"{results.name} vs {ground_truth.name}  (-1: no ground truth in that range)")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for name, value in metrics.items():
            table.add_row(name, f"{value:.3f}")
        console.print(table)



