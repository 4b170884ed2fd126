"""The typer application object and what every command shares: error handling, logging, model options."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Annotated, Iterator

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import FcnError

__all__ = [
    "ClassesOption",
    "EXIT_FAILURES",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "DeviceOption",
    "ModelOption",
    "VerboseOption",
    "WeightsOption",
    "app",
    "cli_errors",
    "console",
    "error_console",
    "print_metrics",
    "setup_logging",
]

EXIT_OK = 0
EXIT_FAILURES = 1  # some inputs of a batch failed (the others were processed)
EXIT_INTERRUPTED = 130

EPILOG = """\
[bold]Examples[/bold]

  fcn-heatmap examples/chelsea.jpg  [dim]# heatmap of the top-3 classes → examples/chelsea.heatmap.png[/dim]

  fcn-heatmap photo.jpg --class cat --grid --json  [dim]# where is any cat class? one panel per class[/dim]

  fcn-heatmap photos/ --recursive --out results/  [dim]# a whole folder, resumable, summary.json[/dim]

  fcn-heatmap detect photo.jpg --stride 16 --scales 0.5,1,2  [dim]# boxes from heatmaps[/dim]

  fcn-heatmap train configs/example_folder.yaml  [dim]# FCN-8s segmentation training[/dim]

[bold]Exit codes[/bold]  0 ok · 1 some inputs failed · 2 bad input or usage · 3 cannot write output · 130 interrupted
"""

app = typer.Typer(
    name="fcn-heatmap",
    help="Turn an ImageNet classifier into a fully convolutional network and see where things are.",
    epilog=EPILOG,
    rich_markup_mode="rich",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

console = Console()
error_console = Console(stderr=True, highlight=False, soft_wrap=True)

VerboseOption = Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging; tracebacks on errors.")]
ModelOption = Annotated[
    str, typer.Option("--model", "-m", help="Any torchvision classifier (`fcn-heatmap models` lists them: "
                                            "vgg16, resnet50, convnext_tiny, efficientnet_b0, …) or module:callable.")
]
WeightsOption = Annotated[
    Path | None,
    typer.Option(
        "--weights",
        help="Local state dict of --model (else $FCN_HEATMAP_WEIGHTS, else the torch hub cache / download).",
        dir_okay=False,
    ),
]
ClassesOption = Annotated[
    Path | None,
    typer.Option("--classes", help="Class names of --weights, one per line (needed when it has another number of "
                                   "classes than ImageNet's 1000).", dir_okay=False),
]
DeviceOption = Annotated[str, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")]


def print_metrics(title: str, rows: list[tuple[str, str]]) -> None:
    """A two-column table of metric names and formatted values."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name, value in rows:
        table.add_row(name, value)
    console.print(table)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


@contextlib.contextmanager
def cli_errors(verbose: bool = False) -> Iterator[None]:
    """Turn domain errors into one line on stderr and the error's exit code; Ctrl-C into exit code 130."""
    try:
        yield
    except FcnError as error:
        if verbose:
            error_console.print_exception()
        error_console.print(f"[red]error:[/red] {escape(str(error))}", markup=True, highlight=False)
        raise typer.Exit(code=error.exit_code) from None
    except ValueError as error:  # bad option values detected by library functions
        if verbose:
            error_console.print_exception()
        error_console.print(f"[red]error:[/red] {escape(str(error))}", markup=True, highlight=False)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:
        error_console.print("interrupted")
        raise typer.Exit(code=EXIT_INTERRUPTED) from None


def _show_version(value: bool) -> None:
    if value:
        from .. import __version__

        console.print(f"fcn-heatmap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Turn an ImageNet classifier into a fully convolutional network and see where things are.

    Run [bold]fcn-heatmap IMAGE[/bold] (the heatmap command is the default) or one of the commands below.
    """
