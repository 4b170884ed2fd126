"""The process tree, read from ``/proc`` (Linux): what a test records before it kills a run, and checks after."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

on_linux_proc = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="reads the process tree in /proc")


def process_stat(pid: int) -> tuple[str, int, int] | None:
    """``(state, parent pid, start time in clock ticks since boot)`` of ``pid``, or ``None`` if there is none."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (name) ": the name may hold spaces and brackets
    return fields[0], int(fields[1]), int(fields[19])


def descendants(pid: int) -> dict[int, int]:
    """Every process below ``pid`` (children, their children…): pid → start time."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := process_stat(int(entry))) is not None:
            stats[int(entry)] = stat
    found, frontier = {}, [pid]
    while frontier:
        parent = frontier.pop()
        for child, (_, ppid, started) in stats.items():
            if ppid == parent and child not in found:
                found[child] = started
                frontier.append(child)
    return found


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    return [child for child in descendants(pid) if (process_stat(child) or ("", 0, 0))[1] == pid]


def still_alive(processes: dict[int, int]) -> list[int]:
    """The recorded processes that still run: same pid *and* same start time (a pid may be reused), not a zombie
    (a zombie has ended; whether its new parent has reaped it yet is not the run's business)."""
    return [pid for pid, started in processes.items()
            if (stat := process_stat(pid)) is not None and stat[2] == started and stat[0] != "Z"]


def survivors_after(processes: dict[int, int], seconds: float = 10.0) -> list[int]:
    """The recorded processes still alive ``seconds`` from now (returns as soon as none is)."""
    deadline = time.monotonic() + seconds
    while (alive := still_alive(processes)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return alive
