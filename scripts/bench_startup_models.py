"""How fast ``fcn-heatmap models`` answers, in fresh processes, as a user runs it: the full table, the JSON, one
model, and (where asked) ``--verify`` of one model, which builds it.

    python scripts/bench_startup_models.py                       # this tree, 5 runs each
    python scripts/bench_startup_models.py --repo /tmp/old --runs 1 --timeout 3600   # an older checkout

Prints the CPU (model, flags, load average: :func:`bench_startup.cpu_description`), then per command the median
and the slowest wall time of ``--runs`` fresh processes and the exit code.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_startup import cpu_description  # noqa: E402

COMMANDS = (["models"], ["models", "--json"], ["models", "resnet50"])


def time_command(repo: Path, args: list[str], runs: int, timeout: float) -> tuple[list[float], int]:
    """Wall seconds of ``runs`` fresh ``python -m fcn_app ARGS`` processes in ``repo``, and the last exit code."""
    environment = dict(os.environ, PYTHONPATH=str(repo), COLUMNS="200")
    seconds, code = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        code = subprocess.run([sys.executable, "-m", "fcn_app", *args], cwd=repo, env=environment,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout).returncode
        seconds.append(time.perf_counter() - start)
    return seconds, code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repo", action="append", type=Path, help="checkout to time (repeatable; default: this one)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one process may take")
    parser.add_argument("--verify", action="store_true", help="also time `models resnet50 --verify` (builds it)")
    args = parser.parse_args(argv)
    repos = args.repo or [Path(__file__).resolve().parent.parent]
    commands = [*COMMANDS, *([["models", "resnet50", "--verify", "--source", "torchvision"]] if args.verify else [])]
    print(cpu_description())
    for repo in repos:
        for command in commands:
            seconds, code = time_command(repo.resolve(), command, args.runs, args.timeout)
            print(f"{repo}: fcn-heatmap {' '.join(command)}: median {statistics.median(seconds):.2f} s, slowest "
                  f"{max(seconds):.2f} s over {len(seconds)} fresh processes (exit {code})", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
