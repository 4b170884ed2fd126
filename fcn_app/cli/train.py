"""``fcn-heatmap train CONFIG [overrides]`` and ``fcn-heatmap evaluate CHECKPOINT DATASET``."""

from __future__ import annotations

import json
import os
import logging
from pathlib import Path
from typing import Annotated

import typer

from .app import DeviceOption, VerboseOption, app, cli_errors, console, print_metrics, setup_logging

__all__ = ["evaluate", "train"]


def _show_training_logs() -> None:
    logging.getLogger("fcn_app.train").setLevel(logging.INFO)


@app.command(epilog="Example: fcn-heatmap train configs/voc_fcn8s.yaml train.lr=1e-14 run.output_dir=runs/fcn8s\n\n"
             "Several GPUs: torchrun --nproc-per-node 4 -m fcn_app train configs/voc_fcn8s.yaml")
def train(
    config: Annotated[Path, typer.Argument(help="YAML config (see configs/).", dir_okay=False)],
    overrides: Annotated[list[str] | None, typer.Argument(help="section.key=value overrides, e.g. train.lr=0.001")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue exactly from <run.output_dir>/last.pt.")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Train an FCN-32s/16s/8s segmentation model; checkpoints, config, history and curve go to run.output_dir."""
    setup_logging(verbose)
    _show_training_logs()
    with cli_errors(verbose):
        from ..train.config import load_config
        from ..train.loop import train as run_training

        settings = load_config(config, overrides or [])
        result = run_training(settings, resume=resume)
        if int(os.environ.get("RANK", "0")) == 0:
            console.print(f"done: {result.iterations} iterations, best mean IU {result.best_mean_iu:.4f}; "
                          f"checkpoints in {result.run_dir}", highlight=False)


@app.command(epilog="Example: fcn-heatmap evaluate runs/fcn8s/best.pt data/VOCdevkit/VOC2012 --split val")
def evaluate(
    checkpoint: Annotated[Path, typer.Argument(help="Checkpoint written by `fcn-heatmap train` or import-weights, "
                                                    "or torchvision:NAME.", dir_okay=False)],
    dataset: Annotated[Path, typer.Argument(help="VOC2012 folder or folder dataset (images/, masks/).", file_okay=False,
                                            exists=True)],
    split: Annotated[str | None, typer.Option(help="VOC split name, or list file of a folder dataset.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass (padded with ignore).")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print the scores as JSON.")] = False,
    device: DeviceOption = "auto",
    verbose: VerboseOption = False,
) -> None:
    """Pixel accuracy, mean class accuracy, mean IU, frequency-weighted IU and per-class IU of a checkpoint."""
    setup_logging(verbose)
    with cli_errors(verbose):
        from ..train.loop import evaluate_checkpoint

        scores = evaluate_checkpoint(checkpoint, dataset, split=split, device=device, batch_size=batch_size,
                                     progress=not as_json)
        if int(os.environ.get("RANK", "0")) != 0:
            return
        if as_json:
            typer.echo(json.dumps(scores, indent=2))
            return
        rows = [(key, f"{scores[key]:.4f}") for key in ("pixel_accuracy", "mean_class_accuracy", "mean_iu", "fw_iu")]
        published = scores.get("published")
        if published:  # the authors' figure, next to the measured one (published, not reproduced here)
            rows += [(f"{key}, published on {published['on']}", f"{value:.4f}") for key, value in published.items()
                     if key != "on"]
        rows += [(f"IU {name}", "—" if value is None else f"{value:.4f}") for name, value in scores["per_class_iu"].items()]
        print_metrics(f"{checkpoint} on {dataset} ({scores['pixels']} pixels)", rows)
