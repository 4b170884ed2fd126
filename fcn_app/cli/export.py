"""``fcn-heatmap export``: write the fully convolutional network for other runtimes (ONNX, dynamic H/W)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..export import DEFAULT_OPSET, EXPORT_FORMATS, export_onnx
from ..models import DEFAULT_ARCH
from ..scoring import load_scoring_network
from .app import ClassesOption, ModelOption, VerboseOption, WeightsOption, app, cli_errors, console, setup_logging

__all__ = ["export"]


@app.command(epilog="Example: fcn-heatmap export --format onnx --out vgg16_fcn.onnx")
def export(
    out: Annotated[Path, typer.Option("--out", "-o", help="Output file, e.g. vgg16_fcn.onnx.", dir_okay=False)],
    export_format: Annotated[str, typer.Option("--format", help=f"One of: {', '.join(EXPORT_FORMATS)}.")] = "onnx",
    opset: Annotated[int, typer.Option(help="ONNX opset version.", min=9)] = DEFAULT_OPSET,
    model: ModelOption = DEFAULT_ARCH,
    weights: WeightsOption = None,
    class_names_file: ClassesOption = None,
    verbose: VerboseOption = False,
) -> None:
    """Export the converted network: normalised N×3×H×W images in, N×K×rows×cols class scores out, any H and W.

    Normalisation, score geometry and class names are stored in the file's metadata.
    """
    setup_logging(verbose)
    with cli_errors(verbose):
        if export_format not in EXPORT_FORMATS:
            raise ValueError(f"unknown --format {export_format!r}; choose one of {', '.join(EXPORT_FORMATS)}")
        network = load_scoring_network(model, weights_path=weights, device="cpu", classes_path=class_names_file)
        written = export_onnx(network, out, opset=opset)
        console.print(f"wrote {export_format}: {written} (inputs: images N×3×H×W normalised; outputs: scores)",
                      highlight=False)
