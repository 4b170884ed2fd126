"""``fcn-heatmap detect IMAGE|DIR`` (boxes from heatmaps) and ``fcn-heatmap evaluate-detections`` (COCO AP)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..choices import DEFAULT_ARCH, DEFAULT_MAX_PIXELS, FCN, IMAGE_FORMATS, check_image_format, check_work_size
from ..errors import OptionError
from .app import (BackendOption, CheckpointOption, ClassesOption, DeviceOption, MethodOption, ModelOption,
                  PrecisionOption, TargetLayerOption, VerboseOption, WeightsOption, WindowOption, answered_before_loading,
                  app, check_method_window, cli_errors, console, load_command_network, print_metrics, print_report,
                  setup_logging)
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

__all__ = ["detect", "evaluate_detections_command"]

RESULTS_NAME = "detections.coco.json"


@app.command(epilog="Examples: fcn-heatmap detect photo.jpg --stride 16 --scales 0.5,1,2 · "
             "fcn-heatmap detect photos/ --recursive --out boxes/")
def detect(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(help="An image file, or a folder, a quoted glob or several files (then --out is needed).",
                       show_default=False),
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default for one image: next to it).")] = None,
    classes: Annotated[
        list[str] | None,
        typer.Option("--class", "-c", help="Look only for this class (name, word or index). Repeatable."),
    ] = None,
    topk: Annotated[int, typer.Option(help="Without --class: look for the top-k classes of each image.", min=1)] = 5,
    stride: Annotated[int | None, typer.Option(help="Output stride of the map: 32 (native VGG), 16 or 8.")] = None,
    work_size: Annotated[
        str | None,
        typer.Option("--work-size", help="Longer side (px) of the image the network sees, or 'native' (default: the "
                     "image as decoded, so small objects stay big enough for the window). Boxes, masks and COCO "
                     "results refer to the image's own pixels.", show_default=False),
    ] = None,
    scales: Annotated[str, typer.Option(help="Image pyramid scales (multiples of the working size), e.g. 0.5,1,2.")
                      ] = "1",
    image_format: Annotated[
        str, typer.Option("--format", help=f"Format of <name>.detections.*: {', '.join(IMAGE_FORMATS)} (jpg/webp keep "
                          "the photo's ICC profile).")
    ] = "png",
    fuse: Annotated[str, typer.Option(help="Fuse pyramid levels per pixel: max or mean.")] = "max",
    threshold_mode: Annotated[str, typer.Option(help="absolute, relative (× class peak) or otsu.")] = "relative",
    threshold: Annotated[float, typer.Option(help="Threshold for absolute/relative modes.", min=0.0, max=1.0)] = 0.5,
    min_score: Annotated[float, typer.Option(
        help="Drop detections whose peak is below. When no box passes, a line on stderr gives the highest peak and "
             "a value that lets it through (exit code still 0: no boxes is a result).", min=0.0, max=1.0)] = 0.3,
    box_mode: Annotated[str, typer.Option(help="auto, window (classifier window at peak) or region (heat extent).")] = "auto",
    window_fill: Annotated[float, typer.Option(help="Window boxes are this fraction of the window.")] = 1.0,
    center: Annotated[str, typer.Option(help="Centre window boxes on the heat's peak or centroid.")] = "peak",
    nms_iou: Annotated[float, typer.Option(help="NMS IoU threshold.", min=0.0, max=1.0)] = 0.3,
    classwise_nms: Annotated[bool, typer.Option("--classwise-nms", help="Suppress overlaps only within a class.")] = False,
    masks: Annotated[bool, typer.Option("--masks", help="Add each detection's heat mask (COCO RLE).")] = False,
    max_side: Annotated[int | None, typer.Option(help="Downscale so the longer side is at most this.", min=1)] = None,
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
    checkpoint: CheckpointOption = None,
    class_names_file: ClassesOption = None,
    window: WindowOption = None,
    font: Annotated[
        Path | None,
        typer.Option("--font", help="TrueType/OpenType font for labels, e.g. one covering CJK (default: bundled "
                     "DejaVu Sans: Latin, Greek, Cyrillic)."),
    ] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "auto",
    backend: BackendOption = "auto",
    method: MethodOption = FCN,
    target_layer: TargetLayerOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Find objects: per image <name>.detections.png (boxes + labels; --format jpg|webp) and <name>.detections.json; all results in
    COCO format in detections.coco.json. Folders run as batch jobs (resume, shards, summary.json)."""
    setup_logging(verbose)
    inputs = list(inputs or [])
    code = 0
    with cli_errors(verbose):
        if answered_before_loading(target_layer=target_layer, classes=classes, model=model, weights=weights,
                                   checkpoint=checkpoint, device=device, classes_path=class_names_file,
                                   stride=stride, window=window, method=method, backend=backend,
                                   precision=precision):
            return
        work_size = check_work_size(work_size)
        image_format = check_image_format(image_format)
        if not inputs and list_file is None:
            raise OptionError("inputs", "give an IMAGE, a folder, a glob or --list FILE")
        from ..io import atomic_write_json, check_image_path, decode_input, ensure_output_dir  # no torch

        batch = is_batch_input(inputs, list_file)
        image = None if batch else check_image_path(inputs[0])  # a typo fails before the model loads

        from ..coco import coco_results_from_summary, to_coco_results
        from ..detect import DetectOptions
        from ..pyramid import parse_scales
        from ..runtimes import command_backend
        from ..scoring import ScoringOptions
        from ..tasks import DetectionTask, process_input
        from ..text import check_font

        pyramid_scales = parse_scales(scales)
        options = DetectOptions(threshold_mode=threshold_mode, threshold=threshold, min_score=min_score,
                                box_mode=box_mode, window_fill=window_fill, center=center, nms_iou=nms_iou,
                                classwise_nms=classwise_nms, masks=masks)
        check_font(font)
        check_method_window(method, window, backend)
        # one image and a folder score on the same runtime: the same bytes alone and in a folder
        scoring = ScoringOptions(precision=precision, backend=command_backend(backend))

        def make_task() -> DetectionTask:
            # with a checkpoint: region boxes from the segmentation (box mode auto → region)
            network = load_command_network(model=model, weights=weights, checkpoint=checkpoint, device=device,
                                           classes_path=class_names_file, stride=stride, window=window)
            return DetectionTask(
                network, options, scales=pyramid_scales,
                classes=classes or None, fuse=fuse, topk=topk, max_side=max_side, max_pixels=max_pixels,
                description={"model": str(checkpoint) if checkpoint is not None else model, "stride": stride,
                             **({"window": window} if window is not None else {})},
                font=str(font) if font is not None else None,
                scoring=scoring,
                method=method, target_layer=target_layer, work_size=work_size, image_format=image_format,
            )

        if batch:
            folder = FolderOptions(list_file, recursive, include, exclude, batch_size, num_workers, overwrite, shard,
                                   gallery)
            code, job = run_folder_job(make_task, inputs, out, folder, description="detecting", verbose=verbose,
                                       extra_summary={"model": model, "stride": stride, "scales": list(pyramid_scales),
                                                      "work_size": work_size, "image_format": image_format})
            if job.summary_path is not None:
                results = coco_results_from_summary(job.summary_path)
                results_path = atomic_write_json(Path(out) / RESULTS_NAME, results)
                console.print(f"wrote {results_path}", highlight=False)
                if not results:
                    _say_how_close_the_job_came(options, job.summary_path)
        else:
            task = make_task()
            task.check()  # options that fail for every image fail before any output folder exists
            decoded = decode_input(image, task.decode_request)
            out_dir = ensure_output_dir(out) if out is not None else image.parent
            rendered, written = process_input(task, decoded, out_dir / image.stem, source=str(image))
            written["coco"] = atomic_write_json(out_dir / RESULTS_NAME,
                                                to_coco_results([(1, image.name, rendered.detections)]))
            print_report(task.report(rendered), written)
            peak = rendered.summary.get("highest_peak")
            if not rendered.detections and peak is not None:
                _say_how_close(options, peak["score"], peak["class_name"], image.name)
    if code:
        raise typer.Exit(code=code)


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
        from ..coco import evaluate_detections

        metrics = evaluate_detections(results, ground_truth)
        if as_json:
            typer.echo(json.dumps(metrics, indent=2))
            return
        print_metrics(f"{results.name} vs {ground_truth.name}  (-1: no ground truth in that range)",
                      [(name, f"{value:.3f}") for name, value in metrics.items()])


def _round_down(score: float) -> float:
    """``score`` cut to its first significant digit (0.213 → 0.2, 0.0047 → 0.004): a ``--min-score`` it passes."""
    import math

    if score <= 0:
        return 0.0
    step = 10.0 ** math.floor(math.log10(score))
    return round(math.floor(score / step + 1e-9) * step, 12)


def _say_how_close(options, score: float, what: str, where: str) -> None:
    """On stderr, when no box passed (not an error: exit code 0): how high the best peak came (``what``: its class,
    and image for a folder) against the option that kept it out, and the value that would let it through."""
    from ..text import format_probability
    from .app import error_console

    peak = format_probability(score)
    if score < options.min_score:
        line = (f"no box reached --min-score {options.min_score:g} in {where}; the highest peak was {peak} ({what}); "
                f"try --min-score {_round_down(score):g}")
    else:  # the peak passed min_score, but no heat around it passed the threshold
        rule = f"--threshold-mode {options.threshold_mode}" + (
            "" if options.threshold_mode == "otsu" else f" --threshold {options.threshold:g}")
        line = (f"no box found in {where} although the highest peak, {peak} ({what}), reached --min-score "
                f"{options.min_score:g}: no heat around it passed {rule}")
    error_console.print(line, highlight=False, markup=False)


def _say_how_close_the_job_came(options, summary_path: Path) -> None:
    """:func:`_say_how_close` for a folder job without boxes: its highest peak, in which image, over how many."""
    from ..tasks.detection import highest_peak_of_job

    best = highest_peak_of_job(summary_path)
    if best is not None:
        where = f"{best.images} image" + ("" if best.images == 1 else "s")
        _say_how_close(options, best.peak.score, f"{best.peak.class_name}, {best.image}", where)



