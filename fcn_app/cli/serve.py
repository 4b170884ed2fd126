"""``fcn-heatmap serve``: the web app and HTTP API (:mod:`fcn_app.serve`) on one model loaded once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..errors import OptionError
from ..choices import DEFAULT_ARCH, DEFAULT_MAX_PIXELS, FCN, check_method
from ..method_registry import get_method
from ..serve import LOCAL_HOSTS, require_extra, run_server  # the package imports no web stack nor torch
from .app import (BackendOption, CheckpointOption, ClassesOption, DeviceOption, ModelOption,
                  PrecisionOption, VerboseOption, WeightsOption, app, check_method_window,
                  cli_errors, error_console, load_command_network, refuse_classifier_options, setup_logging)

__all__ = ["serve"]


@app.command(epilog="Examples: fcn-heatmap serve · fcn-heatmap serve --root ~/Pictures · "
             "fcn-heatmap serve --checkpoint runs/voc/best.pt --port 8080")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but 127.0.0.1/localhost/::1 lets other "
                                           "machines use the model (a warning is printed).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    root: Annotated[Path | None, typer.Option(help="Also offer the images below this folder (read-only, confined "
                                                   "to it).", file_okay=False, exists=True)] = None,
    model: ModelOption = DEFAULT_ARCH,
    weights: WeightsOption = None,
    class_names_file: ClassesOption = None,
    checkpoint: CheckpointOption = None,
    stride: Annotated[int | None, typer.Option(help="Denser map in one pass: output stride 16 or 8.")] = None,
    window: Annotated[int | None, typer.Option("--window", min=1, help="Feature cells pooled per score cell "
                                               "(pooled-head classifiers; 1: each feature cell alone).")] = None,
    device: DeviceOption = "auto",
    precision: PrecisionOption = "auto",
    backend: BackendOption = "auto",
    method: Annotated[str, typer.Option("--method", help="The page's and API's default heatmap method (each request "
                                        "may name another); see fcn-heatmap --help.")] = FCN,
    max_memory: Annotated[str | None, typer.Option(help="Activation budget, e.g. 2G (larger images run in exact "
                                                        "tiles).")] = None,
    max_upload_mb: Annotated[float, typer.Option(help="Refuse request bodies (the whole multipart upload) larger "
                                                      "than this (MiB) with 413, declared or chunked.",
                                                 min=0.001)] = 32.0,
    max_pixels: Annotated[int, typer.Option(help="Refuse images declaring more pixels than this.", min=1)] = DEFAULT_MAX_PIXELS,
    queue: Annotated[int, typer.Option(help="Requests queued or running at once; more get 429 + Retry-After.",
                                       min=1)] = 8,
    timeout: Annotated[float, typer.Option(help="Per-request limit in seconds (then 503).", min=0.1)] = 120.0,
    job_threads: Annotated[int, typer.Option(help="Requests in progress at once: one image is scored at a time "
                                                  "while the others are decoded, drawn and encoded (1: one "
                                                  "request at a time, start to end).", min=1)] = 2,
    verbose: VerboseOption = False,
) -> None:
    """Open a web page (and HTTP API, docs at /docs) to drop an image, see its heatmaps, point at a pixel and
    read the classes there. One model in memory; the same numbers as the command line."""
    setup_logging(verbose)
    with cli_errors(verbose):
        require_extra()
        from ..methods import method_network, require_grad_cam
        from ..scoring import ScoringOptions
        from ..serve.app import ServeSettings

        method = check_method(method)
        if checkpoint is not None and method != FCN:
            raise OptionError("method", "applies to classifiers; a segmentation checkpoint's map is its own")
        check_method_window(method, window, backend)
        if get_method(method).saliency:
            require_grad_cam(method)  # the install line now, not on every request
        refuse_classifier_options(checkpoint, model=model, weights=weights, stride=stride, classes=class_names_file,
                                  window=window)
        scoring = ScoringOptions(precision, max_memory, backend)
        network = load_command_network(model=model, weights=weights, checkpoint=checkpoint, device=device,
                                       classes_path=class_names_file, stride=stride, window=window)
        if checkpoint is None:
            method_network(network, method)  # cam without a pooled head: refused at start
        settings = ServeSettings(network, segmentation=checkpoint is not None,
                                 model=str(checkpoint) if checkpoint is not None else model, stride=stride,
                                 scoring=scoring, root=root, max_upload_bytes=int(max_upload_mb * 2**20),
                                 max_pixels=max_pixels, queue_size=queue, timeout_s=timeout, method=method,
                                 job_threads=job_threads)
        if host not in LOCAL_HOSTS:
            error_console.print(f"warning: listening on {host}: other machines can use the model"
                                f"{' and read the images below --root' if root else ''}; there is no "
                                "authentication", highlight=False)
        shown = f"[{host}]" if ":" in host else host
        error_console.print(f"serving {settings.model} at http://{shown}:{port}/ (API docs at /docs); Ctrl-C stops",
                            highlight=False)
        run_server(settings, host, port)
