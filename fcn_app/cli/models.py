"""``fcn-heatmap models``: the classifiers ``--model`` accepts, with the window and stride of each."""

from __future__ import annotations

from .app import VerboseOption, app, cli_errors, console, setup_logging

__all__ = ["models"]


@app.command(epilog="Example: fcn-heatmap models")
def models(verbose: VerboseOption = False) -> None:
    """List every torchvision classifier that converts exactly: input size, window (feature cells) and stride.

    A score cell looks at a window of (window − 1) · stride + receptive field pixels; neighbouring cells are
    stride pixels apart. "global SE" marks squeeze-and-excitation networks, whose channel gates average the whole
    image.
    """
    from rich.table import Table

    from ..catalog import describe_models

    setup_logging(verbose)
    with cli_errors(verbose):
        table = Table(title="supported models (--model NAME)")
        for column in ("model", "default weights", "input", "window", "stride", "note"):
            table.add_column(column, justify="right" if column in ("input", "window", "stride") else "left")
        for info in describe_models():
            table.add_row(info.name, info.weights, str(info.input_size), "×".join(map(str, info.window)),
                          str(info.stride), "global SE" if info.global_context else "")
        console.print(table)
