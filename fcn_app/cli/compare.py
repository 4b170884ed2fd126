"""``fcn-heatmap compare IMAGE``: one picture, a panel per method, and a table of how faithful each map is
(:mod:`fcn_app.tasks.compare`).

Every method is checked against the model and the installed extras before anything is read or loaded
(:mod:`fcn_app.method_plan`; the model's head from the recorded catalog), so a run that cannot finish says so at
once; a progress bar over the methods and their deletion/insertion steps shows on stderr (``--json``'s stdout
holds only the JSON).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Iterator

import typer

from ..choices import DEFAULT_ARCH, DEFAULT_METHODS
from .app import (ClassesOption, DeviceOption, ModelOption, TargetLayerOption, VerboseOption, WeightsOption, app,
                  check_class_names, cli_errors, error_console, load_command_network, print_report,
                  setup_logging)

__all__ = ["compare"]


@contextlib.contextmanager
def _compare_progress(methods: list[str]) -> Iterator:
    """A transient progress bar on stderr fed by :class:`~fcn_app.tasks.compare.CompareStep` s: the method
    (k of n) and its stage, the share of the work done, elapsed and remaining time."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn, \
        TimeRemainingColumn

    progress = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                        TimeRemainingColumn(), console=error_console, transient=True)
    bar = progress.add_task(f"{methods[0]} (1/{len(methods)})", total=None)

    def update(step) -> None:
        position = methods.index(step.method) + 1
        progress.update(bar, completed=step.done, total=step.total,
                        description=f"{step.method} ({position}/{len(methods)}): {step.stage}")

    with progress:
        yield update


@app.command(epilog="Example: fcn-heatmap compare photo.jpg --methods fcn,cam,gradcam,scorecam --model resnet50 "
             "--class cat --out compare.png")
def compare(
    image: Annotated[Path, typer.Argument(help="An image file.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The picture (.png, .jpg or .webp); the table is written "
                                      "beside it as <out>.json.", dir_okay=False)],
    methods: Annotated[str | None, typer.Option(
        help=f"Comma-separated methods (see fcn-heatmap --help for --method). Default: {','.join(DEFAULT_METHODS)} "
             "less what the model or the installation cannot run: cam only for classifiers ending in global pooling "
             "(not vgg16), pytorch-grad-cam's methods only with that extra. scorecam runs the network once per "
             "channel of the target layer: minutes on a CPU.", show_default=False)] = None,
    classes: Annotated[
        list[str] | None, typer.Option("--class", "-c", help="The class to explain (default: the fcn map's top class).")
    ] = None,
    steps: Annotated[int, typer.Option(help="Steps of the deletion and insertion curves.", min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
    target_layer: TargetLayerOption = None,
    model: ModelOption = DEFAULT_ARCH,
    weights: WeightsOption = None,
    class_names_file: ClassesOption = None,
    device: DeviceOption = "auto",
    verbose: VerboseOption = False,
) -> None:
    """Heatmaps of one class by several methods side by side, with deletion/insertion AUC, Average Drop and
    Increase in Confidence per method, and the seconds each took."""
    setup_logging(verbose)
    with cli_errors(verbose):
        from ..catalog import recorded_model
        from ..method_plan import check_methods_usable, default_methods, parse_methods

        recorded = recorded_model(model)  # whether it ends in global pooling, known without loading it
        method_names = None if methods is None else check_methods_usable(
            parse_methods(methods), model=model,
            pooled_head=recorded.free_window if recorded is not None and recorded.exact else None)
        check_class_names(classes, model=model, classes_path=class_names_file)
        from ..io import check_image_path, decode_input
        from ..models.graph import has_free_window
        from ..tasks import HeatmapTask
        from ..tasks.compare import compare_methods, picture_format, write_comparison

        picture_format(out)
        path = check_image_path(image)
        network = load_command_network(model=model, weights=weights, checkpoint=None, device=device,
                                       classes_path=class_names_file)
        if method_names is None:
            method_names, note = default_methods(model=model, pooled_head=has_free_window(network))
            if note:
                error_console.print(f"note: {note}", highlight=False)
        decoded = decode_input(path, HeatmapTask(network).decode_request)
        with _compare_progress(method_names) as progress:
            comparison = compare_methods(network, decoded.network_pixels, method_names, classes=classes or None,
                                         target_layer=target_layer, steps=steps, progress=progress)
        written = write_comparison(out, comparison, decoded, source=str(path))
        if as_json:
            typer.echo(json.dumps(dict(comparison.to_dict(str(path)),
                                       outputs={kind: str(value) for kind, value in written.items()}), indent=2))
        else:
            print_report(comparison.report(str(path)), written)
