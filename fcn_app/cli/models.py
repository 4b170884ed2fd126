"""``fcn-heatmap models``: the classifiers ``--model`` accepts, what each converts to and which weights file it needs.

The table comes from the recorded catalog (:mod:`fcn_app.catalog`, ``fcn_app/models/catalog.json``): nothing is
built or imported beyond the standard library, so it answers at once. ``--verify`` recomputes the listed rows
(each model built on the meta device, with a progress bar) and says which differ from the record.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer

from .app import VerboseOption, app, cli_errors, console, error_console, setup_logging

__all__ = ["models"]

#: The catalog's sources, for ``--source``.
SOURCES = ("torchvision", "timm")


def _note(info, footnotes: dict[str, int]) -> str:
    """The row's note; why a model is refused is a numbered footnote (one per distinct reason)."""
    if not info.exact:
        return f"refused [{footnotes.setdefault(info.reason, len(footnotes) + 1)}]"
    notes = ["global SE"] if info.global_context else []
    if not info.free_window:
        notes.append("fc head")
    return "; ".join(notes)


def _print_table(rows, versions: dict[str, str]) -> None:
    from rich import box
    from rich.table import Table

    recorded = ", ".join(f"{package} {version}" for package, version in versions.items())
    table = Table(title=f"models --model accepts (recorded with {recorded})", box=box.SIMPLE_HEAD)
    footnotes: dict[str, int] = {}
    for column in ("model", "weights", "input", "window", "stride", "weights file", "MB", "note"):
        numeric = column in ("input", "window", "stride", "MB")
        # fold, never cut: a narrow terminal wraps a file name (what an offline user copies) rather than hide it
        table.add_column(column, justify="right" if numeric else "left", overflow="fold",
                         min_width=11 if column == "note" else None)
    for info in rows:
        table.add_row(info.name, info.weights.rsplit(".", 1)[-1], str(info.input_size or ""),
                      "×".join(map(str, info.window)) if info.window else "", str(info.stride or ""),
                      info.file or "", f"{info.size_mb:.1f}" if info.size_mb else "", _note(info, footnotes))
    console.print(table)
    for reason, number in footnotes.items():
        console.print(f"[{number}] {reason}", highlight=False, markup=False)
    console.print("Offline: fetch a file's URL (fcn-heatmap models NAME --urls) into $TORCH_HOME/hub/checkpoints/ "
                  "(default ~/.cache/torch/hub/checkpoints/) for torchvision, or give it with --weights; timm:NAME "
                  "files come from the Hugging Face cache ($HF_HOME/hub) or --weights.", highlight=False)


def _verify(rows) -> list[str]:
    """The names of ``rows`` whose facts, computed now, differ from the record (a progress bar on stderr)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..catalog import describe

    differing = []
    progress = Progress(TextColumn("verifying {task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeRemainingColumn(), console=error_console, transient=True)
    with progress:
        bar = progress.add_task("", total=len(rows))
        for info in rows:
            progress.update(bar, description=info.name)
            if describe(info.name) != info:
                differing.append(info.name)
            progress.advance(bar)
    return differing


@app.command(epilog="Examples: fcn-heatmap models · fcn-heatmap models resnet · fcn-heatmap models 'timm:*' --json · "
             "fcn-heatmap models vgg16 --urls")
def models(
    pattern: Annotated[str | None, typer.Argument(
        help="Only models whose name contains this, or matches it as a shell pattern (resnet*, timm:*).",
        show_default=False)] = None,
    source: Annotated[str | None, typer.Option(help=f"Only one source: {' or '.join(SOURCES)}.",
                                               show_default=False)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rows as JSON (every recorded field).")] = False,
    urls: Annotated[bool, typer.Option("--urls", help="Print only the weights URLs, one per line (for wget -i -).")
                    ] = False,
    verify: Annotated[bool, typer.Option("--verify", help="Rebuild the listed models (shapes only) and check the "
                                                          "record against them; exit 1 if any differ.")] = False,
    verbose: VerboseOption = False,
) -> None:
    """List every classifier --model accepts — torchvision's and timm's CNN families — from the recorded catalog:
    input size, window (feature cells) and stride of the converted network, default weights with file, size and
    URL, and whether it converts exactly.

    A score cell looks at a window of (window − 1) · stride + receptive field pixels; neighbouring cells are
    stride pixels apart. "global SE" marks squeeze-and-excitation networks, whose channel gates average the whole
    image; "fc head" marks classifiers ending in fully connected layers (VGG, AlexNet): their window is fixed and they
    have no CAM (--method cam, --window need a global pool); "refused" ones have no exact form, said why below.
    """
    setup_logging(verbose)
    with cli_errors(verbose):
        from ..catalog import find_models, recorded_models, recorded_versions
        from ..errors import FcnError, OptionError

        if source is not None and source not in SOURCES:
            raise OptionError("source", f"unknown source {source!r}; choose {' or '.join(SOURCES)}")
        rows = find_models(pattern, source=source)
        if not rows:
            import difflib

            names = [info.name for info in recorded_models()]
            nearest = difflib.get_close_matches(pattern or "", names, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(nearest)}?" if nearest else f"{len(names)} models are recorded"
            raise FcnError(f"no model matches {pattern!r}; {hint}")
        if verify:
            differing = _verify(rows)
            if differing:
                error_console.print(f"{len(differing)} of {len(rows)} models differ from the recorded catalog "
                                    f"({', '.join(differing)}); rerun scripts/make_model_catalog.py", highlight=False)
                raise typer.Exit(code=1)
            error_console.print(f"{len(rows)} models match the recorded catalog", highlight=False)
        if urls:
            for info in rows:
                if info.url:
                    typer.echo(info.url)
        elif as_json:
            typer.echo(json.dumps([info.to_dict() for info in rows], indent=1))
        else:
            _print_table(rows, recorded_versions())
