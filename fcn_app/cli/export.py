"""``fcn-heatmap export``: write the fully convolutional network for other runtimes (ONNX, dynamic H/W)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import OptionError
from ..choices import DEFAULT_ARCH, DEFAULT_OPSET, EXPORT_FORMATS
from .app import (CheckpointOption, ClassesOption, ModelOption, VerboseOption, WeightsOption, app, cli_errors,
                  console, load_command_network, refuse_classifier_options, setup_logging)

__all__ = ["export"]


@app.command(epilog="Examples: fcn-heatmap export --format onnx --out vgg16_fcn.onnx · "
             "fcn-heatmap export --checkpoint runs/voc/best.pt --input-size 512 512 --out fcn8s.onnx")
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file, e.g. vgg16_fcn.onnx.", dir_okay=False)],
    export_format: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(EXPORT_FORMATS)}.")] = "onnx",
    opset: Annotated[int, typer.Option(help="ONNX opset version.", min=9)] = DEFAULT_OPSET,
    model: ModelOption = DEFAULT_ARCH,
    weights: WeightsOption = None,
    checkpoint: CheckpointOption = None,
    input_size: Annotated[
        tuple[int, int] | None,
        typer.Option("--input-size", help="With --checkpoint: the image height and width the graph is made for.",
                     min=1),
    ] = None,
    class_names_file: ClassesOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Export the converted network: normalised N×3×H×W images in, N×K×rows×cols class scores out, any H and W.

    With --checkpoint, a segmentation model: N×3×H×W in, N×C×H×W per-pixel scores out, for the one --input-size.
    Normalisation, score geometry and class names are stored in the file's metadata.
    """
    setup_logging(verbose)
    with cli_errors(verbose):
        if export_format not in EXPORT_FORMATS:
            raise OptionError("format", f"unknown format {export_format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
        refuse_classifier_options(checkpoint, model=model, weights=weights, classes=class_names_file)
        from ..export import export_onnx

        network = load_command_network(model=model, weights=weights, checkpoint=checkpoint, device="cpu",
                                       classes_path=class_names_file)
        written = export_onnx(network, out, opset=opset, input_size=input_size)
        console.print(f"wrote {export_format}: {written} (inputs: images N×3×H×W normalised; outputs: scores)",
                      highlight=False)
