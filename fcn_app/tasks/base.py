"""What is done per image, as a protocol: the batch runner and the CLI drive every task the same way.

A task says how its inputs are decoded (``decode_request``: the network may see a smaller working-size copy
than the picture the outputs are drawn on), predicts (a group of same-size network inputs; each result independent of the others), renders one image's
pictures and summary, names and writes its output files, and says what to print and what to put in a folder's
summary. Nothing here imports a model: the runners that speak this protocol stay independent of what the tasks
compute. Runners decode every input with :func:`~fcn_app.io.decode_input` — the single-image commands through
:func:`process_input`, the batch runner in worker processes — so an image gives the same outputs either way.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..io import DecodeRequest, InputImage

__all__ = ["DecodeLimitsFromOptions", "ImageTask", "ModelTurn", "ProgressCallback", "Report", "picture_of",
           "predict_input", "preview_picture", "process_image", "process_input", "write_each"]

#: Called as ``progress(done, total)`` while one image is computed in parts (tiles).
ProgressCallback = Callable[[int, int], None]
#: Runs a network pass handed to it as ``network_pass(progress)`` and returns its result — e.g. on a server's one
#: model thread (:meth:`fcn_app.serve.service.ModelQueue.score`), which reports the progress itself.
ModelTurn = Callable[[Callable[[ProgressCallback | None], Any]], Any]


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

    @property
    def decode_request(self) -> DecodeRequest:
        """How runners decode each input: decode limits, and the working size of the network's copy."""

    def check(self) -> None:
        """Fail fast on options that would fail for every image (e.g. an unknown class name)."""

    def predict(self, images: list[np.ndarray], progress: ProgressCallback | None = None) -> list[Any]:
        """Model outputs for a group of same-size RGB images (network inputs), one per image, each as if it came alone."""

    def render(self, image: np.ndarray | InputImage, prediction: Any, source: str | None) -> Any:
        """Pictures and summary (attribute ``summary``, the ``--json`` payload) of one image; nothing is written.

        ``image`` is the decoded input (its picture is decoded only if the task draws, see :func:`picture_of`),
        or an RGB array that is both the network input and the picture. ``prediction`` is ``predict``'s output
        for the network input; the task places it on the picture's pixels.
        """

    def output_paths(self, stem: str | os.PathLike) -> dict[str, Path]:
        """The files this task writes for an image whose outputs are named ``<stem>.*``."""

    def write(self, rendered: Any, paths: dict[str, Path]) -> dict[str, Path]:
        """Write ``rendered`` atomically to ``paths``; returns what was written."""

    def row_fields(self, rendered: Any) -> dict:
        """Small per-image facts for the batch summary (e.g. the top classes)."""

    def report(self, rendered: Any) -> Report:
        """The table a command prints for one image."""


class DecodeLimitsFromOptions:
    """Mixin for tasks: the decode limits (``max_side``, ``max_pixels``) are those of ``self.options``; the
    network sees the picture itself unless the task overrides :attr:`decode_request`."""

    options: Any

    @property
    def max_side(self) -> int | None:
        return self.options.max_side

    @property
    def max_pixels(self) -> int:
        return self.options.max_pixels

    @property
    def decode_request(self) -> DecodeRequest:
        return DecodeRequest(max_side=self.max_side, max_pixels=self.max_pixels)


def picture_of(image: np.ndarray | InputImage) -> tuple[np.ndarray, bytes | None]:
    """The pixels to draw on and the colour profile to write with them, for either form ``render`` accepts."""
    if isinstance(image, InputImage):
        return image.picture(), image.icc_profile
    return image, None


def preview_picture(rendered: Any) -> np.ndarray | None:
    """The picture a person looks at first for one rendered image (a gallery's thumbnail is made of it): by
    convention every task's rendered result keeps it as ``overlay`` and writes it as its first output."""
    picture = getattr(rendered, "overlay", None)
    return picture if isinstance(picture, np.ndarray) else None


def write_each(writers: dict[str, Callable[[Path], object]], paths: dict[str, Path]) -> dict[str, Path]:
    """Call the writer of each kind in ``paths`` (``writers[kind](path)``, each atomic); returns ``paths``."""
    for kind, path in paths.items():
        writers[kind](path)
    return dict(paths)


def process_image(
    task: ImageTask, image: np.ndarray, stem: str | os.PathLike, source: str | None = None,
    progress: ProgressCallback | None = None,
):
    """Predict, render and write one image already in memory (network input and picture at once); returns
    ``(rendered, written_paths)``."""
    rendered = task.render(image, task.predict([image], progress)[0], source)
    return rendered, task.write(rendered, task.output_paths(stem))


def predict_input(task: ImageTask, image: InputImage, progress: ProgressCallback | None = None,
                  model_turn: ModelTurn | None = None):
    """The task's prediction for one input decoded with its ``decode_request``: here, reporting to ``progress``,
    or handed to ``model_turn`` as ``network_pass(progress)``."""
    def network_pass(report: ProgressCallback | None):
        return task.predict([image.network_pixels], report)[0]

    return network_pass(progress) if model_turn is None else model_turn(network_pass)


def process_input(
    task: ImageTask, image: InputImage, stem: str | os.PathLike, source: str | None = None,
    progress: ProgressCallback | None = None, model_turn: ModelTurn | None = None,
):
    """Predict (:func:`predict_input`), render and write one input decoded by :func:`~fcn_app.io.decode_input`
    with the task's ``decode_request`` — the batch runner's steps for one image; returns
    ``(rendered, written_paths)``."""
    rendered = task.render(image, predict_input(task, image, progress, model_turn), source)
    return rendered, task.write(rendered, task.output_paths(stem))
