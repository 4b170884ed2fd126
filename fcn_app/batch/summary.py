"""The machine-readable record of a batch job: one row per input, written atomically as ``OUT/summary.json``.

A sharded job (torchrun ranks or ``--shard i/n`` job-array tasks) writes one ``summary.rank<i>.json`` per shard;
:func:`merge_summaries` joins them into ``summary.json`` once every shard of the same job size has reported.
Row statuses: ``ok`` (outputs written by this run), ``skipped`` (outputs already complete and newer than the
input), ``failed`` (with a one-line ``reason``) and ``pending`` (not reached because the run was interrupted).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from array import array
from collections.abc import Iterable
from pathlib import Path

from ..io import atomic_write_stream
from ..io.atomic import TEMP_SUFFIX

__all__ = [
    "RowSpool",
    "STATUSES",
    "SUMMARY_NAME",
    "count_statuses",
    "merge_summaries",
    "rank_summary_path",
    "read_summary_rows",
    "summary_header",
    "write_summary",
]

logger = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
STATUSES = ("ok", "skipped", "failed", "pending")
SUMMARY_FORMAT = "fcn-heatmap batch summary"
SUMMARY_VERSION = 1


def rank_summary_path(out_dir: str | os.PathLike, rank: int) -> Path:
    return Path(out_dir) / f"summary.rank{rank}.json"


def count_statuses(rows: list[dict]) -> dict[str, int]:
    counts = dict.fromkeys(STATUSES, 0)
    for row in rows:
        counts[row["status"]] += 1
    return counts


def summary_header(
    counts: dict[str, int],
    *,
    elapsed_s: float,
    world_size: int = 1,
    ranks: list[int] | None = None,
    interrupted: bool = False,
    extra: dict | None = None,
) -> dict:
    """Everything in the summary document but its ``inputs``: counts, speed, job shape; ``extra`` (the command's
    model and options) may not replace any of these (``ValueError``)."""
    attempted = counts["ok"] + counts["failed"]
    header = {
        "format": SUMMARY_FORMAT,
        "version": SUMMARY_VERSION,
        "counts": counts,
        "total": sum(counts.values()),
        "elapsed_s": round(elapsed_s, 3),
        "images_per_s": round(attempted / elapsed_s, 3) if elapsed_s > 0 else None,
        "world_size": world_size,
        "ranks": ranks if ranks is not None else [0],
        "interrupted": interrupted,
    }
    clashes = sorted(set(extra or {}) & {*header, "inputs"})
    if clashes:  # "format" is the document's schema: a command's own "format" made every reader ignore it
        raise ValueError(f"summary fields {clashes} are the summary's own; name the command's fields otherwise")
    return {**header, **(extra or {})}


def write_summary(path: str | os.PathLike, header: dict, rows: Iterable[dict]) -> Path:
    """Write the summary atomically, streaming ``rows`` (sorted by path) so they are never all in memory."""
    def write(stream) -> None:
        stream.write(json.dumps(header, indent=2, ensure_ascii=False)[:-2].encode("utf-8"))
        stream.write(b',\n  "inputs": [')
        for number, row in enumerate(rows):
            stream.write((b",\n    " if number else b"\n    ") + json.dumps(row, ensure_ascii=False).encode("utf-8"))
        stream.write(b"\n  ]\n}\n")

    return atomic_write_stream(path, write)


class RowSpool:
    """Summary rows of a running job, spilled to a temporary JSON-lines file beside the summary as they come.

    Memory stays flat however many inputs a job has: what is kept per input is the row's file offset (8 bytes).
    The file is named like a temporary of the summary (``.summary.json.<random>.tmp``), so one left by a killed
    run is cleaned up with the other temporaries.
    """

    def __init__(self, summary_path: Path, count: int) -> None:
        handle, name = tempfile.mkstemp(prefix=f".{summary_path.name}.", suffix=TEMP_SUFFIX, dir=summary_path.parent)
        self.path = Path(name)
        self.stream = os.fdopen(handle, "w+b")
        self.offsets = array("q", [-1]) * count
        self.counts = dict.fromkeys(STATUSES, 0)

    def __contains__(self, position: int) -> bool:
        return self.offsets[position] >= 0

    def put(self, position: int, row: dict) -> None:
        self.stream.seek(0, os.SEEK_END)
        self.offsets[position] = self.stream.tell()
        self.stream.write(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n")
        self.counts[row["status"]] += 1

    def get(self, position: int) -> dict:
        self.stream.seek(self.offsets[position])
        return json.loads(self.stream.readline())

    def close(self) -> None:
        self.stream.close()
        try:
            self.path.unlink()
        except OSError:
            pass


def _read_json(path: Path) -> dict | None:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return payload if isinstance(payload, dict) and payload.get("format") == SUMMARY_FORMAT else None


def read_summary_rows(path: str | os.PathLike) -> dict[str, dict]:
    """Rows of an earlier summary by input path ({} when there is none or it is unreadable)."""
    payload = _read_json(Path(path))
    if payload is None:
        return {}
    return {row["path"]: row for row in payload.get("inputs", []) if isinstance(row, dict) and "path" in row}


def merge_summaries(out_dir: str | os.PathLike, world_size: int) -> Path | None:
    """Join ``summary.rank0..N-1.json`` into ``summary.json``; ``None`` while some shard has not reported yet.

    Shards are disjoint by construction; an input reported by two shards means the shard files come from
    different jobs, which is refused (``ValueError``) rather than silently double-counted.
    """
    out_dir = Path(out_dir)
    parts = []
    for rank in range(world_size):
        payload = _read_json(rank_summary_path(out_dir, rank))
        if payload is None or payload.get("world_size") != world_size:
            logger.debug("shard %d of %d has not written its summary yet", rank, world_size)
            return None
        parts.append(payload)
    rows: list[dict] = []
    seen: set[str] = set()
    for payload in parts:
        for row in payload["inputs"]:
            if row["path"] in seen:
                raise ValueError(
                    f"{row['path']} appears in two shard summaries in {out_dir}; they come from different jobs — "
                    "delete the summary.rank*.json files and rerun"
                )
            seen.add(row["path"])
            rows.append(row)
    header = summary_header(
        count_statuses(rows),
        elapsed_s=max(float(payload.get("elapsed_s") or 0.0) for payload in parts),
        world_size=world_size,
        ranks=list(range(world_size)),
        interrupted=any(payload.get("interrupted") for payload in parts),
        extra={key: value for key, value in parts[0].items() if key in ("model", "options")},
    )
    return write_summary(out_dir / SUMMARY_NAME, header, sorted(rows, key=lambda row: row["path"]))
