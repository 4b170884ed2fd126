"""``fcn-heatmap import-weights SRC --variant … --out FILE``: the FCN paper's VOC models as a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .app import VerboseOption, app, cli_errors, console, setup_logging

__all__ = ["import_weights"]


@app.command("import-weights", epilog="Example: fcn-heatmap import-weights fcn8s_from_caffe.pth --variant fcn8s "
             "--out fcn8s-voc.pt · then: fcn-heatmap photo.jpg --checkpoint fcn8s-voc.pt")
def import_weights(
    source: Annotated[Path, typer.Argument(help="The reference model's state dict (.pth: conv1_1.weight … fc7, "
                                                "score_fr, …).", dir_okay=False)],
    variant: Annotated[str, typer.Option(help="fcn32s, fcn16s, fcn8s or fcn8s-atonce: which reference network the "
                                              "file holds.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Checkpoint to write, e.g. fcn8s-voc.pt.", dir_okay=False)],
    verbose: VerboseOption = False,
) -> None:
    """Turn the published FCN-32s/16s/8s VOC weights into a segmentation checkpoint (21 VOC classes) that
    --checkpoint, evaluate, export and training's model.init_from accept; it computes what the reference computes."""
    setup_logging(verbose)
    with cli_errors(verbose):
        from ..segmentation.checkpoint import save_checkpoint
        from ..segmentation.reference import import_reference_fcn

        payload = import_reference_fcn(source, variant)
        written = save_checkpoint(out, payload)
        console.print(f"wrote {written}: reference {variant}, {len(payload['class_names'])} VOC classes",
                      highlight=False)
