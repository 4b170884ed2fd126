"""The ``fcn-heatmap`` command line.

Commands are thin: they parse options, call library functions and turn :class:`~fcn_app.errors.FcnError` into
one line on stderr plus an exit code. ``fcn-heatmap IMAGE`` runs the ``heatmap`` command without naming it.
"""

from __future__ import annotations

import sys

try:  # typer vendors click since 0.2x; older versions use the click package
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover
    from click.exceptions import ClickException

from .app import app
from . import heatmap  # noqa: F401  (registers the command)
from . import train  # noqa: F401  (registers train and evaluate)
from . import detect  # noqa: F401  (registers detect and evaluate-detections)
from . import export  # noqa: F401  (registers the command)

__all__ = ["app", "main"]


def _commands() -> set[str]:
    import typer.main

    group = typer.main.get_command(app)
    return set(getattr(group, "commands", {}))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; inserts the default ``heatmap`` command when none is named."""
    args = list(sys.argv[1:] if argv is None else argv)
    passthrough = {"--help", "-h", "--version", "--install-completion", "--show-completion"}
    commands = _commands()
    if args and args[0] not in passthrough and args[0] not in commands:
        args.insert(0, "heatmap")
    try:
        code = app(args=args, prog_name="fcn-heatmap", standalone_mode=False)
    except ClickException as error:  # a usage mistake is one line like every other error, not click's framed box
        command = f"{args[0]} " if args and args[0] in commands else ""
        message = " ".join(error.format_message().split())
        if message:  # (no arguments at all: the help was printed instead)
            sys.stderr.write(f"error: {message} (see: fcn-heatmap {command}--help)\n")
        sys.exit(error.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
