"""What is done per image, as a protocol: the batch runner and the CLI drive every task the same way.

A task predicts (a group of same-size images; each result independent of the others), renders one image's pictures and summary, names and writes its
output files, and says what to print and what to put in a folder's summary. Nothing here imports a model: the
runners that speak this protocol stay independent of what the tasks compute.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

__all__ = ["DecodeLimitsFromOptions", "ImageTask", "ProgressCallback", "Report", "process_image", "write_each"]

#: Called as ``progress(done, total)`` while one image is computed in parts (tiles).
ProgressCallback = Callable[[int, int], None]


@dataclass
class Report:
    """What a command prints for one image: a titled table (the files written are listed after it).
    Columns named in ``numeric`` are right-aligned."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    numeric: tuple[str, ...] = ()


class ImageTask(Protocol):
    """What is computed and written per image."""

    max_side: int | None
    max_pixels: int

    def check(self) -> None:
        """Fail fast on options that would fail for every image (e.g. an unknown class name)."""

    def predict(self, images: list[np.ndarray], progress: ProgressCallback | None = None) -> list[Any]:
        """Model outputs for a group of same-size RGB images, one per image, each as if it came alone."""

    def render(self, image: np.ndarray, prediction: Any, source: str | None) -> Any:
        """Pictures and summary (attribute ``summary``, the ``--json`` payload) of one image; nothing is written."""

    def output_paths(self, stem: str | os.PathLike) -> dict[str, Path]:
        """The files this task writes for an image whose outputs are named ``<stem>.*``."""

    def write(self, rendered: Any, paths: dict[str, Path]) -> dict[str, Path]:
        """Write ``rendered`` atomically to ``paths``; returns what was written."""

    def row_fields(self, rendered: Any) -> dict:
        """Small per-image facts for the batch summary (e.g. the top classes)."""

    def report(self, rendered: Any) -> Report:
        """The table a command prints for one image."""


class DecodeLimitsFromOptions:
    """Mixin for tasks: the decode limits (``max_side``, ``max_pixels``) are those of ``self.options``."""

    options: Any

    @property
    def max_side(self) -> int | None:
        return self.options.max_side

    @property
    def max_pixels(self) -> int:
        return self.options.max_pixels


def write_each(writers: dict[str, Callable[[Path], object]], paths: dict[str, Path]) -> dict[str, Path]:
    """Call the writer of each kind in ``paths`` (``writers[kind](path)``, each atomic); returns ``paths``."""
    for kind, path in paths.items():
        writers[kind](path)
    return dict(paths)


def process_image(
    task: ImageTask, image: np.ndarray, stem: str | os.PathLike, source: str | None = None,
    progress: ProgressCallback | None = None,
):
    """Predict, render and write one decoded image; returns ``(rendered, written_paths)``."""
    rendered = task.render(image, task.predict([image], progress)[0], source)
    return rendered, task.write(rendered, task.output_paths(stem))
