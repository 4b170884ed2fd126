"""The real command as a user runs it: ``python -m fcn_app ARGS`` in a subprocess, so stdout and stderr are
separate and every line the user would see is counted."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent


def cli_environment(env: dict | None = None) -> dict[str, str]:
    """This tree first on the path (and ``tests/`` for ``--model helpers_batch:tiny_fcn``), one torch thread:
    several commands may run side by side."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]), OMP_NUM_THREADS="1", **(env or {}))


def run_fcn(*args, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``fcn-heatmap ARGS`` as a subprocess; text stdout and stderr kept apart."""
    return subprocess.run([sys.executable, "-m", "fcn_app", *map(str, args)], capture_output=True, text=True,
                          env=cli_environment(env), timeout=timeout)


def run_fcn_many(commands: Sequence[Sequence], parallel: int = 3, timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Several commands, ``parallel`` at a time (each spends most of its life importing torch); results in order."""
    results: list[subprocess.CompletedProcess | None] = [None] * len(commands)
    running: list[tuple[int, list[str], subprocess.Popen]] = []
    queue = list(enumerate(commands))
    while queue or running:
        while queue and len(running) < parallel:
            index, args = queue.pop(0)
            argv = [sys.executable, "-m", "fcn_app", *map(str, args)]
            running.append((index, argv, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                          text=True, env=cli_environment())))
        index, argv, process = running.pop(0)
        stdout, stderr = process.communicate(timeout=timeout)
        results[index] = subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)
    return results  # type: ignore[return-value]


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, message: str | None = None) -> str:
    """The user-mistake contract: exit ``code``, exactly one non-empty line on stderr (containing ``message``),
    nothing on stdout, no traceback anywhere. Returns the line."""
    shown = f"exit {result.returncode}; args {result.args[3:]}\n--- stdout\n{result.stdout}--- stderr\n{result.stderr}"
    assert result.returncode == code, shown
    assert result.stdout == "", shown
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].strip(), shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    if message is not None:
        assert message in lines[0], shown
    return lines[0]


def run_in_process(capsys, *args) -> tuple[int, str, str]:
    """``fcn-heatmap ARGS`` in this process (pytest's ``capsys``): ``(exit code, stdout, stderr)``."""
    from fcn_app.cli import main

    capsys.readouterr()
    try:
        main([str(arg) for arg in args])
        code = 0
    except SystemExit as stop:
        code = int(stop.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
