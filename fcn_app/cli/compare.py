"""``fcn-heatmap compare IMAGE --methods fcn,cam,gradcam,scorecam``: one picture, a panel per method, and a table of
how faithful each map is (:mod:`fcn_app.tasks.compare`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..choices import DEFAULT_ARCH, DEFAULT_METHODS
from .app import (ClassesOption, DeviceOption, ModelOption, TargetLayerOption, VerboseOption, WeightsOption, app,
                  cli_errors, load_command_network, print_report, setup_logging)

__all__ = ["compare"]


@app.command(epilog="Example: fcn-heatmap compare photo.jpg --methods fcn,cam,gradcam,scorecam --model resnet50 "
             "--class cat --out compare.png")
def compare(
    image: Annotated[Path, typer.Argument(help="An image file.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="The picture (.png, .jpg or .webp); the table is written "
                                      "beside it as <out>.json.", dir_okay=False)],
    methods: Annotated[str, typer.Option(help="Comma-separated methods (see fcn-heatmap --help for --method).")
                       ] = ",".join(DEFAULT_METHODS),
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
        from ..io import check_image_path, decode_input
        from ..tasks import HeatmapTask
        from ..tasks.compare import compare_methods, parse_methods, write_comparison

        method_names = parse_methods(methods)
        path = check_image_path(image)
        network = load_command_network(model=model, weights=weights, checkpoint=None, device=device,
                                       classes_path=class_names_file)
        decoded = decode_input(path, HeatmapTask(network).decode_request)
        comparison = compare_methods(network, decoded.network_pixels, method_names, classes=classes or None,
                                     target_layer=target_layer, steps=steps)
        written = write_comparison(out, comparison, decoded, source=str(path))
        if as_json:
            typer.echo(json.dumps(dict(comparison.to_dict(str(path)),
                                       outputs={kind: str(value) for kind, value in written.items()}), indent=2))
        else:
            print_report(comparison.report(str(path)), written)
