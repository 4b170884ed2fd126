"""The ``fcn-heatmap`` command line.

Commands are thin: they parse options, call library functions and turn :class:`~fcn_app.errors.FcnError` into
one line on stderr plus an exit code. ``fcn-heatmap IMAGE`` runs the ``heatmap`` command without naming it.
"""

from __future__ import annotations

import atexit
import functools
import os
import sys
import threading

import typer
from typer.exceptions import TyperException

from .app import _print_error, app
from . import heatmap  # noqa: F401  (registers the command)
from . import train  # noqa: F401  (registers train and evaluate)
from . import detect  # noqa: F401  (registers detect and evaluate-detections)
from . import export  # noqa: F401  (registers the command)
from . import models  # noqa: F401  (registers the command)
from . import weights  # noqa: F401  (registers import-weights)
from . import serve  # noqa: F401  (registers the command)
from . import compare  # noqa: F401  (registers the command)

__all__ = ["app", "main"]


@functools.lru_cache(maxsize=1)
def _click_group():
    """The click group typer builds from :data:`app` (once: building it reads every option of every command)."""
    import typer.main

    return typer.main.get_command(app)


def _commands() -> set[str]:
    return set(getattr(_click_group(), "commands", {}))


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; inserts the default ``heatmap`` command when none is named."""
    args = list(sys.argv[1:] if argv is None else argv)
    passthrough = {"--help", "-h", "--version", "--install-completion", "--show-completion"}
    commands = _commands()
    if args and args[0] not in passthrough and args[0] not in commands:
        args.insert(0, "heatmap")
    try:
        code = _click_group().main(args=args, prog_name="fcn-heatmap", standalone_mode=False)
    except TyperException as error:  # a mistyped option or value: one line, like every other error
        context = getattr(error, "ctx", None)
        command = f" {context.info_name}" if context is not None and context.parent is not None else ""
        message = " ".join(error.format_message().split())
        if message:  # empty when the help was shown because no arguments were given
            _print_error(f"{message} (see fcn-heatmap{command} --help)")
        sys.exit(getattr(error, "exit_code", 2))
    except typer.Abort:
        sys.exit(130)
    code = code if isinstance(code, int) else 0
    if argv is None:  # the process's own entry point (console script, python -m fcn_app): nothing runs after us
        _exit_without_teardown(code)
    sys.exit(code)


def _exit_without_teardown(code: int) -> None:
    """End the process with ``code`` once the command is done, skipping the interpreter's teardown.

    After ``import torch`` the interpreter spends ~0.4 CPU s (0.5–0.9 s wall on 2 shared cores) finalising modules
    and freeing objects at exit — a tenth of a whole ``fcn-heatmap photo.jpg`` run, for nothing the user sees.
    Everything registered to run at exit still runs (``atexit``: logging's flush, multiprocessing's cleanup,
    ``weakref.finalize`` of temporary folders) and both streams are flushed; outputs were already written
    atomically and closed. With another thread still alive, the normal exit waits for it as usual.
    """
    if threading.active_count() > 1:
        sys.exit(code)
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said on it
            pass
    os._exit(code)
