"""Which files a batch job processes, where each one's outputs go, and which shard of them this process takes.

The work list is built the same way on every rank: every input is found, filtered, sorted by its path relative
to the input root, and only then sharded. Output names mirror the input tree: ``photos/sub/cat.jpg`` processed
with ``--out results`` becomes ``results/sub/cat.heatmap.png`` (the same ``<stem>.heatmap.png`` naming as a
single image). Two inputs that would share a stem (``cat.jpg`` and ``cat.png`` in one folder) keep their
extension in the output name instead (``cat.jpg.heatmap.png``, ``cat.png.heatmap.png``), so nothing is
overwritten by a neighbour.
"""

from __future__ import annotations

import fnmatch
import glob
import logging
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from ..errors import InputImageError, OptionError
from ..io import GLOB_CHARACTERS, is_glob_pattern, is_image_path

__all__ = [
    "GLOB_CHARACTERS",
    "WorkItem",
    "collect_inputs",
    "is_glob_pattern",
    "parse_shard",
    "read_list_file",
    "shard_items",
]

logger = logging.getLogger(__name__)



@dataclass(frozen=True)
class WorkItem:
    """One input file of a batch job.

    ``relative`` is its path below the input root (POSIX form, the key used in summaries and for sorting);
    ``output_stem`` is the relative stem its outputs are named after (``sub/cat`` → ``OUT/sub/cat.heatmap.png``).
    """

    source: Path
    relative: str
    output_stem: str

    def stem_in(self, out_dir: Path) -> Path:
        return Path(out_dir) / self.output_stem


def read_list_file(list_file: str | os.PathLike) -> list[Path]:
    """Paths listed in a text file, one per line; blank lines and ``#`` comments are ignored.

    Relative paths are taken relative to the list file's folder, so a list can travel with its images.
    """
    list_file = Path(list_file)
    try:
        text = list_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputImageError(f"{list_file}: list file not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise InputImageError(f"{list_file}: cannot read list file ({getattr(error, 'strerror', None) or error})") from None
    paths = []
    for line in text.splitlines():
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        path = Path(entry).expanduser()
        paths.append(path if path.is_absolute() else list_file.parent / path)
    return paths


def _matches(relative: str, patterns: Sequence[str]) -> bool:
    """A pattern with a ``/`` matches the relative path, one without matches the file name (``*.jpg``)."""
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatchcase(relative if "/" in pattern else name, pattern) for pattern in patterns)


def _walk_folder(folder: Path, recursive: bool) -> Iterable[Path]:
    if not recursive:
        with os.scandir(folder) as entries:
            for entry in entries:
                if entry.is_file():
                    yield Path(entry.path)
        return
    for directory, subdirectories, files in os.walk(folder, followlinks=False):
        subdirectories.sort()
        for name in files:
            yield Path(directory) / name


def _is_inside(path: str, folder: str | None) -> bool:
    return folder is not None and (path == folder or path.startswith(folder + os.sep))


def collect_inputs(
    sources: Sequence[str | os.PathLike] = (),
    *,
    list_file: str | os.PathLike | None = None,
    recursive: bool = False,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    out_dir: str | os.PathLike | None = None,
) -> tuple[list[WorkItem], list[Path]]:
    """The sorted work list of a batch job, and the files that were passed over (not image files).

    ``sources`` are folders (their image files; sub-folders with ``recursive``), glob patterns (``**`` recurses)
    and files. Folder and glob contents are kept only if their extension is an image extension
    (case-insensitive); files named explicitly (as a source or in ``list_file``) are always kept, so a bad one is
    reported rather than silently dropped. ``include``/``exclude`` patterns filter everything; files inside
    ``out_dir`` are never inputs (re-running into a folder below the inputs does not eat its own outputs).
    """
    out_abs = os.path.abspath(out_dir) if out_dir is not None else None
    roots: list[str] = []
    found: dict[str, Path] = {}  # absolute path → path as given
    passed_over: list[Path] = []

    def add(path: Path, explicit: bool) -> None:
        absolute = os.path.abspath(path)
        if _is_inside(absolute, out_abs):
            return
        if not explicit and not is_image_path(path):
            passed_over.append(path)
            return
        found.setdefault(absolute, path)

    for source in sources:
        source_path = Path(source)
        if source_path.is_dir():
            roots.append(os.path.abspath(source_path))
            for path in _walk_folder(source_path, recursive):
                add(path, explicit=False)
        elif not source_path.exists() and is_glob_pattern(source):
            matches = sorted(glob.glob(str(source), recursive=True))
            if not matches:
                raise InputImageError(f"{source}: no files match this pattern")
            for match in matches:
                if os.path.isfile(match):
                    roots.append(os.path.dirname(os.path.abspath(match)))
                    add(Path(match), explicit=False)
        else:  # a file, or a missing path that is reported as a failed input
            roots.append(os.path.dirname(os.path.abspath(source_path)))
            add(source_path, explicit=True)
    if list_file is not None:
        for path in read_list_file(list_file):
            roots.append(os.path.dirname(os.path.abspath(path)))
            add(path, explicit=True)

    if not found:
        return [], passed_over
    root = os.path.commonpath(roots) if roots else os.getcwd()
    relatives = {absolute: Path(os.path.relpath(absolute, root)).as_posix() for absolute in found}
    if include:
        relatives = {key: value for key, value in relatives.items() if _matches(value, include)}
    if exclude:
        relatives = {key: value for key, value in relatives.items() if not _matches(value, exclude)}

    def plain_stem(relative: str) -> str:
        parent, _, name = relative.rpartition("/")
        stem = Path(name).stem
        return f"{parent}/{stem}" if parent else stem

    stem_counts = Counter(plain_stem(relative) for relative in relatives.values())
    items = [
        WorkItem(
            source=found[absolute],
            relative=relative,
            output_stem=plain_stem(relative) if stem_counts[plain_stem(relative)] == 1 else relative,
        )
        for absolute, relative in relatives.items()
    ]
    items.sort(key=lambda item: item.relative)
    return items, passed_over


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with ``0 <= i < n`` (shards are numbered from 0, like ranks)."""
    index_text, slash, count_text = text.partition("/")
    try:
        if not slash:
            raise ValueError
        index, count = int(index_text), int(count_text)
    except ValueError:
        raise OptionError("shard", f"expects INDEX/COUNT such as 0/4, got {text!r}") from None
    if count < 1 or not 0 <= index < count:
        raise OptionError("shard", f"{text}: INDEX must be in 0..COUNT-1 and COUNT at least 1 (e.g. 0/4 … 3/4)")
    return index, count


def shard_items(items: Sequence[WorkItem], rank: int, world_size: int) -> list[WorkItem]:
    """Every ``world_size``-th item starting at ``rank``: disjoint, together complete, sizes within one."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"invalid shard {rank} of {world_size}")
    return list(items[rank::world_size])
