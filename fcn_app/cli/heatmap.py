"""``fcn-heatmap IMAGE``: class heatmaps of one image."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from ..errors import InputImageError
from ..io import DEFAULT_MAX_PIXELS, ensure_output_dir, load_image
from ..models import DEFAULT_ARCH
from ..pipeline import HeatmapOptions, output_paths, render_score_map, write_outputs
from ..render import COLORMAPS, DEFAULT_COLORMAP
from ..scoring import PRECISIONS, compute_score_map, load_scoring_network
from .app import DeviceOption, ModelOption, VerboseOption, WeightsOption, app, cli_errors, console, setup_logging

__all__ = ["heatmap"]


def _print_table(rendered, written: dict[str, Path]) -> None:
    table = Table(title=f"{rendered.summary['image']} · {rendered.summary['image_size']['width']}×"
                  f"{rendered.summary['image_size']['height']} px · map "
                  f"{rendered.summary['map_size']['rows']}×{rendered.summary['map_size']['cols']}")
    table.add_column("#", justify="right")
    table.add_column("class")
    table.add_column("peak prob", justify="right")
    table.add_column("peak pixel (x, y)", justify="right")
    for rank, heat in enumerate(rendered.heatmaps, start=1):
        table.add_row(str(rank), heat.selection.name, f"{heat.peak_probability:.3f}",
                      f"({heat.peak_pixel[0]}, {heat.peak_pixel[1]})")
    console.print(table)
    for kind, path in written.items():
        console.print(f"wrote {kind}: {path}", highlight=False)


@app.command(epilog="Example: fcn-heatmap examples/chelsea.jpg --class cat --grid --out results/")
def heatmap(
    image: Annotated[Path, typer.Argument(help="Image file (jpg, png, bmp, webp, tif, gif).")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output folder (default: next to the image).")] = None,
    classes: Annotated[
        list[str] | None,
        typer.Option("--class", "-c", help="Class name, word (sums matching classes, e.g. 'cat') or index. Repeatable."),
    ] = None,
    topk: Annotated[int, typer.Option(help="How many top classes (by peak probability) when no --class.", min=1)] = 3,
    colormap: Annotated[str, typer.Option(help=f"One of: {', '.join(COLORMAPS)}.")] = DEFAULT_COLORMAP,
    alpha: Annotated[float, typer.Option(help="Heatmap opacity over the photo.", min=0.0, max=1.0)] = 0.5,
    grid: Annotated[bool, typer.Option("--grid", help="Also write one panel per class (<name>.grid.png).")] = False,
    save_scores: Annotated[bool, typer.Option("--save-scores", help="Write raw score grid + geometry (.npz).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary and write <name>.json.")] = False,
    max_side: Annotated[int | None, typer.Option(help="Downscale so the longer side is at most this.", min=1)] = None,
    max_pixels: Annotated[int, typer.Option(help="Refuse images declaring more pixels than this.", min=1)] = DEFAULT_MAX_PIXELS,
    model: ModelOption = DEFAULT_ARCH,
    weights: WeightsOption = None,
    device: DeviceOption = "auto",
    precision: Annotated[str, typer.Option(help=f"{'|'.join(PRECISIONS)}; auto: fp32 on CPU, bf16/fp16 on GPU.")] = "auto",
    max_memory: Annotated[str | None, typer.Option(help="Activation budget, e.g. 2G; larger images run in exact tiles (default: 1/4 of free RAM, ≤ 1 GiB).")] = None,
    verbose: VerboseOption = False,
) -> None:
    """Write IMAGE with a heatmap of its top classes blended over it, and print where each class peaks."""
    setup_logging(verbose)
    with cli_errors(verbose):
        if colormap not in COLORMAPS:
            raise ValueError(f"unknown --colormap {colormap!r}; choose one of {', '.join(COLORMAPS)}")
        options = HeatmapOptions(
            classes=classes or None, topk=topk, colormap=colormap, alpha=alpha, grid=grid, save_scores=save_scores,
            write_json=as_json, max_side=max_side, max_pixels=max_pixels,
        )
        if image.is_dir():
            raise InputImageError(f"{image}: is a folder; pass an image file")
        pixels = load_image(image, max_side=options.max_side, max_pixels=options.max_pixels)
        out_dir = ensure_output_dir(out) if out is not None else image.parent
        network = load_scoring_network(model, weights_path=weights, device=device)
        score_map = compute_score_map(network, pixels, precision=precision, max_memory=max_memory)
        rendered = render_score_map(pixels, score_map, options, source=str(image))
        written = write_outputs(rendered, output_paths(out_dir / image.stem, options))
        if as_json:
            payload = dict(rendered.summary, outputs={kind: str(path) for kind, path in written.items()})
            typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
        else:
            _print_table(rendered, written)
