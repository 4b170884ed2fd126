"""The typer application object and what every command shares: error handling, logging, model options.

Nothing imported here (or at the top of any ``fcn_app.cli`` module) imports torch, numpy or OpenCV: ``--help`` and
usage errors answer before any of it loads (``tests/test_cli_startup.py``, ``scripts/bench_startup.py``); the
commands import what they run inside their bodies.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path
from typing import Annotated, Iterator

import typer
from rich.console import Console
from rich.markup import escape
from typer.exceptions import TyperException

from ..choices import (BACKEND_INSTALL_HINTS, BACKENDS, DEFAULT_ARCH, INSTALL_HINT, METHODS, PRECISIONS,
                       check_backend, check_colormap, check_image_format, check_method, check_normalize,
                       check_precision, check_work_size)
from ..classes import categories_before_loading, resolve_classes
from ..errors import FcnError, OptionError
from ..method_registry import get_method
from ..processes import Terminated

__all__ = [
    "ClassesOption",
    "EXIT_FAILURES",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "LIST_TARGET_LAYERS",
    "BackendOption",
    "CheckpointOption",
    "MethodOption",
    "TargetLayerOption",
    "check_choices",
    "check_class_names",
    "answered_before_loading",
    "check_method_window",
    "DeviceOption",
    "ModelOption",
    "PrecisionOption",
    "VerboseOption",
    "WeightsOption",
    "app",
    "cli_errors",
    "console",
    "error_console",
    "print_metrics",
    "load_command_network",
    "print_report",
    "print_target_layers",
    "refuse_classifier_options",
    "setup_logging",
]

EXIT_FAILURES = 1  # some inputs of a batch failed (the others were processed)
EXIT_INTERNAL = 1  # a bug: an error the program did not expect
EXIT_INTERRUPTED = 130  # Ctrl-C (SIGINT): 128 + 2, as a shell reports it
EXIT_TERMINATED = 143  # SIGTERM: 128 + 15

#: Library option names whose flag is not simply ``--`` + the name with dashes (``threshold_mode`` →
#: ``--threshold-mode``); ``None``: the option is not a flag (the message stands alone).
_FLAG_NAMES = {"classes": "--class", "write_json": "--json", "image_format": "--format", "environment": None,
               "inputs": None}

EPILOG = """\
[bold]Examples[/bold]

  fcn-heatmap examples/chelsea.jpg  [dim]# heatmap of the top-3 classes → examples/chelsea.heatmap.png[/dim]

  fcn-heatmap photo.jpg --class cat --grid --json  [dim]# where is any cat class? one panel per class[/dim]

  fcn-heatmap photos/ --recursive --out results/  [dim]# a whole folder, resumable, summary.json[/dim]

  fcn-heatmap detect photo.jpg --stride 16 --scales 0.5,1,2  [dim]# boxes from heatmaps[/dim]

  fcn-heatmap train configs/example_folder.yaml  [dim]# FCN-8s segmentation training[/dim]

[bold]Exit codes[/bold]  0 ok · 1 some inputs failed (or an internal error) · 2 bad input or usage · 3 cannot write output · 130 interrupted (Ctrl-C) · 143 terminated (SIGTERM)
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
                                            "vgg16, resnet50, convnext_tiny, efficientnet_b0, …), timm:NAME for a timm "
                                            "CNN (optional extra) or module:callable.")
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
BackendOption = Annotated[str, typer.Option(
    "--backend", help=f"Runtime: {'|'.join(BACKENDS)}. auto: torch for images and folders (an image gives the same "
    "bytes alone and in a folder); serve: OpenVINO on a CPU where it is installed "
    f"({escape(BACKEND_INSTALL_HINTS['openvino'])}), else torch.")]
PrecisionOption = Annotated[str, typer.Option(
    "--precision", help=f"{'|'.join(PRECISIONS)}. auto: bf16 on a CPU with AMX-bf16 or on a GPU, else fp32 "
    "(fp32: bit-stable results).")]
WindowOption = Annotated[int | None, typer.Option(
    "--window", min=1, help="Feature cells pooled per score cell, for classifiers ending in global pooling "
    "(default: the training window, e.g. 7 for 224/32). 1: each feature cell's probability alone, finer maps for "
    "localisation (--method cam draws CAM itself).")]
CheckpointOption = Annotated[
    Path | None,
    typer.Option("--checkpoint", help="A segmentation checkpoint (fcn-heatmap train or import-weights), or "
                                      "torchvision:NAME (fcn_resnet50, deeplabv3_resnet101, lraspp_mobilenet_v3_large, "
                                      "…), instead of a classifier.", dir_okay=False),
]

MethodOption = Annotated[str, typer.Option(
    "--method", help=f"How the map is made: {', '.join(METHODS)}. fcn: the classifier's exact window scores; cam: "
    "class activation mapping (pooled heads: the class's fc weights over the last feature map, scaled to 0–1); the "
    f"others are pytorch-grad-cam's saliency maps, run on torch ({escape(INSTALL_HINT)}).")]
#: ``--target-layer list``: print the layer names of the model instead of running.
LIST_TARGET_LAYERS = "list"
TargetLayerOption = Annotated[str | None, typer.Option(
    "--target-layer", help="Layer a pytorch-grad-cam method reads, by module name (default: features, the last "
    f"convolutional stage before the pool; e.g. features.layer4.0). {LIST_TARGET_LAYERS}: print the model's layer "
    "names and exit.", show_default=False)]

#: The checks of choice options whose values need no model (:mod:`fcn_app.choices`), by parameter name.
_CHOICE_CHECKS = {"method": check_method, "backend": check_backend, "precision": check_precision,
                  "image_format": check_image_format, "colormap": check_colormap, "work_size": check_work_size,
                  "normalize": check_normalize}


def check_method_window(method: str, window: int | None, backend: str | None = None) -> None:
    """``--method cam`` reads one feature cell per window: another window with it would be silently overridden. A
    pytorch-grad-cam method asked for with another backend runs on torch: said once, on stderr."""
    from ..methods import backend_note

    entry = get_method(method)
    if entry.window is not None and window not in (None, entry.window):
        raise OptionError("window", f"--method {entry.name} scores one feature cell (window {entry.window}), not "
                                    f"{window}; drop --window or use --method fcn")
    note = backend_note(method, backend)
    if note:
        error_console.print(f"note: {note}", highlight=False)


def load_command_network(*, model: str, weights: Path | None, checkpoint: Path | None, device: str,
                         classes_path: Path | None = None, stride: int | None = None, window: int | None = None):
    """The network a command runs: a checkpoint's segmentation model, or the classifier named by ``model`` (with
    its window and output stride changed when asked; :func:`refuse_classifier_options` keeps those apart)."""
    from ..dense import densify
    from ..launcher import local_device
    from ..models.graph import with_window
    from ..scoring import load_scoring_network
    from ..segmentation.checkpoint import load_segmentation_model

    target = local_device(device)
    if checkpoint is not None:
        return load_segmentation_model(checkpoint, target)[0]
    network = load_scoring_network(model, weights_path=weights, device=target, classes_path=classes_path)
    if window is not None:
        network = with_window(network, window)
    return densify(network, stride) if stride is not None else network


def check_choices(**values) -> None:
    """Refuse a misspelt choice (``method="gradcan"``, ``image_format="bmp"``, …) before anything heavy is
    imported: a usage mistake answers at once. The library checks the same values again where it uses them."""
    for name, value in values.items():
        _CHOICE_CHECKS[name](value)


def print_target_layers(**network_options) -> None:
    """``--target-layer list``: the network's layers a pytorch-grad-cam method can read, one per line with its
    type, the default first; ``network_options`` are :func:`load_command_network`'s."""
    from ..methods import DEFAULT_TARGET_LAYER, target_layer_names

    for name, kind in target_layer_names(load_command_network(**network_options)):
        console.print(f"{name}  {kind}{'  (default)' if name == DEFAULT_TARGET_LAYER else ''}", highlight=False,
                      markup=False)


def check_class_names(classes: list[str] | None, *, model: str, classes_path: Path | None,
                      checkpoint: Path | None = None) -> None:
    """A mistyped ``--class`` is refused before the network loads, in the words the loaded network would use,
    wherever its class names are known without it (:func:`~fcn_app.classes.categories_before_loading`)."""
    if not classes:
        return
    categories = categories_before_loading(model, classes_path, checkpoint)
    if categories is not None:
        resolve_classes(classes, categories)


def answered_before_loading(*, target_layer: str | None, classes: list[str] | None, model: str,
                            weights: Path | None, checkpoint: Path | None, device: str, classes_path: Path | None,
                            stride: int | None, window: int | None, **choices) -> bool:
    """What an image command settles before its network loads: ``--target-layer list`` is answered (``True``: the
    command is done), and option combinations, misspelt ``choices`` and mistyped class names are refused."""
    if target_layer == LIST_TARGET_LAYERS:
        print_target_layers(model=model, weights=weights, checkpoint=checkpoint, device=device,
                            classes_path=classes_path, stride=stride, window=window)
        return True
    refuse_classifier_options(checkpoint, model=model, weights=weights, stride=stride, classes=classes_path,
                              window=window)
    check_choices(**choices)  # before torch even loads
    check_class_names(classes, model=model, classes_path=classes_path, checkpoint=checkpoint)
    return False


def refuse_classifier_options(checkpoint: Path | None, *, model: str, weights: Path | None,
                              stride: int | None = None, classes: Path | None = None, window: int | None = None) -> None:
    """With ``--checkpoint``, the classifier options would be silently ignored: refuse them in one line."""
    if checkpoint is None:
        return
    for flag, given in (("--stride", stride is not None), ("--weights", weights is not None),
                        ("--model", model != DEFAULT_ARCH), ("--classes", classes is not None),
                        ("--window", window is not None)):
        if given:
            raise OptionError("checkpoint", f"{flag} applies to classifiers; a checkpoint's segmentation model is "
                                            "used as it is")


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


def flag_for(option: str) -> str | None:
    """The command-line flag of a library option name (``"nms_iou"`` → ``"--nms-iou"``)."""
    return _FLAG_NAMES.get(option, "--" + option.replace("_", "-"))


def _print_error(message: str) -> None:
    error_console.print(f"[red]error:[/red] {escape(message)}", markup=True, highlight=False)


@contextlib.contextmanager
def cli_errors(verbose: bool = False) -> Iterator[None]:
    """Turn the program's own errors into one line on stderr and the error's exit code (an invalid option's line
    names the flag the user typed); Ctrl-C into exit code 130 and SIGTERM's :class:`~fcn_app.processes.Terminated`
    into 143; anything unexpected into one line saying it is an internal error, exit code 1 (``--verbose`` shows
    the traceback)."""
    try:
        yield
    except (typer.Exit, typer.Abort, TyperException):
        raise  # typer's own exits and usage errors
    except FcnError as error:
        if verbose:
            error_console.print_exception()
        flag = flag_for(error.option) if error.option else None
        if flag and isinstance(error, OptionError):
            _print_error(f"{flag}: {error}")  # the flag's value is wrong
        else:
            _print_error(f"{error} ({flag})" if flag else str(error))  # the flag is the fix
        raise typer.Exit(code=error.exit_code) from None
    except Terminated:
        error_console.print("terminated")
        raise typer.Exit(code=EXIT_TERMINATED) from None
    except KeyboardInterrupt:
        error_console.print("interrupted")
        raise typer.Exit(code=EXIT_INTERRUPTED) from None
    except Exception as error:  # noqa: BLE001 — the last line of defence: no traceback unless asked for
        if verbose:
            error_console.print_exception()
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
        _print_error(f"internal error ({type(error).__name__}{': ' + detail if detail else ''}); this is a bug — "
                     "rerun with --verbose for the traceback")
        raise typer.Exit(code=EXIT_INTERNAL) from None


def print_report(report, written: dict[str, Path]) -> None:
    """A task's :class:`~fcn_app.tasks.base.Report` as a table, then the files written."""
    from rich.table import Table

    table = Table(title=report.title)
    for column in report.columns:
        table.add_column(column, justify="right" if column in report.numeric else "left")
    for row in report.rows:
        table.add_row(*row)
    console.print(table)
    for kind, path in written.items():
        console.print(f"wrote {kind}: {path}", highlight=False)


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
