"""How fast ``fcn-heatmap`` answers what needs no model: ``--help`` of the root and of every command, usage errors
(unknown option, missing argument, a value out of range, a bad choice) and mistakes found before the network loads
(a missing input, a mistyped ``--class``), each in fresh processes, as a user runs the console script.

    python scripts/bench_startup.py                      # this tree
    python scripts/bench_startup.py --repo /tmp/old      # another checkout (e.g. ``git worktree add /tmp/old HEAD``)
    python scripts/bench_startup.py --repo . --repo /tmp/old --runs 5   # side by side

Prints the CPU (model and flags from /proc/cpuinfo, the load average), then per command the median wall time of
``--runs`` fresh processes and their median CPU time (user + system: what the command costs, less sensitive than
the wall time to other work on a shared machine), the exit code, and whether ``torch`` was imported (read from
``sys.modules`` at exit).
The mistyped class is run with ``--weights`` the test suite's seeded VGG16 file when one is kept
(``FCN_TEST_WEIGHTS_CACHE`` or the temporary folder), so the old code reaches its class check without a download.
"""

from __future__ import annotations

import argparse
import glob
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: Runs the console script's entry point and reports at exit whether torch was imported. ``fcn_app.__main__.main``
#: ends the process with ``os._exit`` after running the ``atexit`` functions, so the report is one of them.
_WRAPPER = """\
import atexit, os, sys
def _report():
    with open(os.environ["BENCH_STARTUP_REPORT"], "w") as handle:
        handle.write("1" if "torch" in sys.modules else "0")
atexit.register(_report)
sys.argv[0] = "fcn-heatmap"
from fcn_app.__main__ import main
main()
"""


def cpu_description() -> str:
    """CPU model, core count, SIMD flags that matter for torch, and the load average (:mod:`fcn_app.device` reads
    ``/proc/cpuinfo``; this process imports torch with it, the timed ones are fresh)."""
    from fcn_app.device import cpu_flags, cpu_model

    wanted = [flag for flag in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if flag in cpu_flags()]
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return f"{cpu_model()}, {os.cpu_count()} CPUs, flags: {' '.join(wanted) or 'none of avx2/avx512'}; load average {load}"


def seeded_vgg16() -> str | None:
    """The test suite's seeded VGG16 weights file, if one is kept on this machine."""
    folder = os.environ.get("FCN_TEST_WEIGHTS_CACHE") or os.path.join(tempfile.gettempdir(),
                                                                        f"fcn-heatmap-test-weights-{os.getuid()}")
    found = sorted(glob.glob(os.path.join(folder, "vgg16-seed0-*.pth")))
    return found[0] if found else None


def commands(repo: Path, image: Path, weights: str | None) -> list[tuple[str, list[str]]]:
    """(label, arguments) of every command timed; the subcommands are read from the checkout's own app."""
    listed = subprocess.run([sys.executable, "-c", "from fcn_app.cli import _commands; print(*sorted(_commands()))"],
                            capture_output=True, text=True, cwd=repo, env=_environment(repo), check=True)
    rows = [("--help", ["--help"])]
    rows += [(f"{name} --help", [name, "--help"]) for name in listed.stdout.split()]
    rows += [
        ("unknown option", [str(image), "--no-such-option"]),
        ("missing argument", ["evaluate"]),
        ("missing option", ["import-weights", "x.pth"]),
        ("bad number (--alpha 2)", [str(image), "--alpha", "2"]),
        ("bad choice (--format bmp)", [str(image), "--format", "bmp"]),
        ("bad choice (--method foo)", [str(image), "--method", "foo"]),
        ("missing input", ["no-such-photo.jpg"]),
        ("missing folder", ["no-such-folder/", "--out", "results"]),
    ]
    if weights is not None:
        rows.append(("mistyped --class", [str(image), "--class", "dgo", "--weights", weights, "--out",
                                          str(image.parent)]))
    return rows


def _environment(repo: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(repo), COLUMNS="120")


def time_command(repo: Path, arguments: list[str], runs: int) -> tuple[float, float, int, bool]:
    """Median wall and CPU seconds of ``runs`` fresh processes, the exit code, and whether torch was imported."""
    seconds, cpu_seconds, code, imported = [], [], 0, False
    with tempfile.TemporaryDirectory() as scratch:
        report = os.path.join(scratch, "report")
        environment = dict(_environment(repo), BENCH_STARTUP_REPORT=report)
        for _ in range(runs):
            before, start = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
            result = subprocess.run([sys.executable, "-c", _WRAPPER, *arguments], capture_output=True,
                                    cwd=scratch, env=environment)
            seconds.append(time.perf_counter() - start)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu_seconds.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
            code = result.returncode
            imported = Path(report).read_text() == "1" if os.path.exists(report) else False
    return statistics.median(seconds), statistics.median(cpu_seconds), code, imported


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", action="append", type=Path, help="Checkout to time (repeatable; default: this one).")
    parser.add_argument("--runs", type=int, default=5, help="Fresh processes per command (the median is shown).")
    options = parser.parse_args()
    repos = [path.resolve() for path in options.repo or [Path(__file__).resolve().parent.parent]]
    print(f"CPU: {cpu_description()}")
    print(f"python {sys.version.split()[0]}; median of {options.runs} fresh processes per command")
    weights = seeded_vgg16()
    with tempfile.TemporaryDirectory() as scratch:
        image = Path(scratch) / "photo.jpg"
        from PIL import Image

        Image.new("RGB", (64, 48), (120, 80, 40)).save(image)
        table = {repo: dict(commands(repo, image, weights)) for repo in repos}
        labels = list(dict.fromkeys(label for rows in table.values() for label in rows))
        header = "".join(f" | {str(repo)[-38:]:>38}" for repo in repos)
        print(f"{'command':<28}{header}")
        for label in labels:
            cells = []
            for repo in repos:
                if label not in table[repo]:
                    cells.append(f" | {'—':>38}")
                    continue
                median, cpu, code, imported = time_command(repo, table[repo][label], options.runs)
                cells.append(f" | {median:5.2f} s (cpu {cpu:5.2f} s)  exit {code:<3} torch {'yes' if imported else 'no '}")
            print(f"{label:<28}{''.join(cells)}", flush=True)
    if weights is None:
        print("(no seeded VGG16 file kept: the mistyped --class row is left out; run the test suite once)")


if __name__ == "__main__":
    main()
