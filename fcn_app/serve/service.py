"""What the server computes, without HTTP: the CLI's tasks run on one model, one image scored at a time.

Each job takes the steps the command line takes for one image (``fcn-heatmap IMAGE`` →
:func:`~fcn_app.tasks.process_input` with the task's decode request, for ``fcn-heatmap detect IMAGE`` too: the
task's predict, render and write),
writes the task's files into a private request folder, and returns the command's ``--json`` summary plus the
pictures as data URLs. No second scoring path: the numbers are the CLI's.

:class:`ModelQueue` runs the jobs on ``job_threads`` threads (2 by default) and bounds how many may wait: a full
queue is refused at once (:class:`QueueFull`, the caller answers 429) rather than letting latency and memory grow
without limit. One model is in memory and one image is scored at a time: a job hands only the network's pass to
the queue's one model thread (:meth:`ModelQueue.score`), so one request's decode, drawing and encoding overlap the
next one's pass (on a second core where there is one). On Linux the job threads run at a lower CPU priority than
the model thread (nice + 5): where the cores are busy, the pass that limits throughput goes first.
"""

from __future__ import annotations

import asyncio
import base64
import math
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import cv2
import numpy as np
import torch

from ..detect import DetectOptions
from ..geometry import interpolation_matrix
from ..heatmaps import ClassHeatmap
from ..io import decode_input
from ..method_plan import method_refusal
from ..method_registry import METHODS, get_method
from ..models.graph import has_free_window
from ..render import COLORMAPS, colorize
from ..scoring import ScoreMap, ScoringOptions
from ..segmentation.datasets import voc_palette
from ..tasks import (DetectionTask, HeatmapOptions, HeatmapTask, ModelTurn, ProgressCallback, SegmentationTask,
                     predict_input, process_input)
from ..tasks.heatmap import reported_probabilities
from ..text import format_probability

__all__ = ["ModelQueue", "QueueFull", "RequestTimeout", "available_methods", "colormap_tables", "detect_job",
           "heatmap_job", "pixel_probabilities", "saliency_pixels", "segment_job"]

_MIME = {".png": "image/png", ".jpg": "image/jpeg", ".webp": "image/webp"}
_PICTURES = ("overlay", "grid", "segmentation", "classes")
#: The longer side of the saliency maps sent to the page (pytorch-grad-cam upsamples a coarse feature grid, so a
#: photo's map loses nothing visible at this size, and a 12 MP photo's five maps stay a few hundred kB).
SALIENCY_SIDE = 256


class QueueFull(Exception):
    """Every slot of the queue is taken; ``retry_after`` (seconds) is when one is likely free."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the server is busy ({retry_after} s until a slot is likely free); retry later")
        self.retry_after = retry_after


class RequestTimeout(Exception):
    """A job took longer than the per-request timeout (its result is dropped)."""


#: How much lower the job threads' CPU priority is than the model thread's (Linux nice levels).
JOB_NICENESS = 5
Result = TypeVar("Result")


def _lower_thread_priority() -> None:
    """Raise the calling thread's nice level by :data:`JOB_NICENESS` (Linux: a thread is a task of its own; other
    systems would take the id for a process, so there nothing changes)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + JOB_NICENESS))
    except OSError:  # not permitted here: the same priority as the model's thread, still correct
        pass


class ModelQueue:
    """``job_threads`` threads run the jobs in order; at most ``capacity`` jobs are queued or running; each job's
    network pass runs on the one model thread (:meth:`score`), one image at a time."""

    def __init__(self, capacity: int = 8, timeout_s: float = 120.0, job_threads: int = 2) -> None:
        if capacity < 1 or job_threads < 1:
            raise ValueError("capacity and job_threads must be at least 1")
        self.capacity, self.timeout_s = capacity, timeout_s
        self._executor = ThreadPoolExecutor(max_workers=job_threads, thread_name_prefix="fcn-serve-job",
                                            initializer=_lower_thread_priority)
        self._model = ThreadPoolExecutor(max_workers=1, thread_name_prefix="fcn-serve-model")
        # started here, not by the first job: a Linux thread inherits the nice level of the thread creating it
        self._model.submit(lambda: None).result()
        self._lock = threading.Lock()
        self._pending = 0
        self._durations: deque[float] = deque(maxlen=32)
        self.progress: tuple[int, int] | None = None  # (done, total) tiles of the image being scored

    def report_progress(self, done: int, total: int) -> None:
        """A :data:`~fcn_app.tasks.base.ProgressCallback` for the running job (shown by ``/healthz``)."""
        self.progress = (done, total)

    def score(self, network_pass: Callable[[ProgressCallback], Result]) -> Result:
        """``network_pass(progress)`` on the model thread, after the passes handed over before it; called from a
        job, it waits for the result. ``progress`` reports the pass's tiles to ``/healthz``."""
        def run():
            self.progress = None
            try:
                return network_pass(self.report_progress)
            finally:
                self.progress = None
        return self._model.submit(run).result()

    @property
    def pending(self) -> int:
        return self._pending

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the recent mean job time × the jobs ahead (at least 1)."""
        mean = sum(self._durations) / len(self._durations) if self._durations else 1.0
        return max(1, math.ceil(mean * max(1, self._pending)))

    def _timed(self, job: Callable[[], Any]) -> Callable[[], Any]:
        def run():
            start = time.perf_counter()
            try:
                return job()
            finally:
                self._durations.append(time.perf_counter() - start)
        return run

    async def run(self, job: Callable[[], Any], cleanup: Callable[[], None] | None = None) -> Any:
        """``job()`` on the worker thread; ``cleanup()`` once it has finished or was dropped before starting.

        Raises :class:`QueueFull` at once when ``capacity`` jobs are already queued or running, and
        :class:`RequestTimeout` after ``timeout_s`` (a running job cannot be interrupted: it keeps its slot until
        it ends, so the bound stays true, and its result is thrown away)."""
        with self._lock:
            if self._pending >= self.capacity:
                raise QueueFull(self.retry_after())
            self._pending += 1
        loop = asyncio.get_running_loop()
        try:
            future: Future = self._executor.submit(self._timed(job))
        except BaseException:
            self._release(cleanup)
            raise
        future.add_done_callback(lambda _: self._release(cleanup, loop))
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), self.timeout_s)
        except asyncio.TimeoutError:
            future.cancel()  # succeeds only if it has not started
            raise RequestTimeout(f"the image took longer than the server's limit of {self.timeout_s:g} s; "
                                 "send a smaller image (max_side) or restart the server with a longer timeout") from None

    def _release(self, cleanup: Callable[[], None] | None, loop: asyncio.AbstractEventLoop | None = None) -> None:
        with self._lock:
            self._pending -= 1
        if cleanup is None:
            return
        try:  # on the event loop's thread: the model's thread goes straight to the next job
            (loop or asyncio.get_running_loop()).call_soon_threadsafe(cleanup)
        except RuntimeError:  # no loop, or it has closed (shutting down): here and now
            cleanup()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._model.shutdown(wait=False, cancel_futures=True)


def _data_url(path: Path) -> str:
    return f"data:{_MIME[path.suffix]};base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _pictures(written: dict[str, Path]) -> dict[str, str]:
    return {kind: _data_url(path) for kind, path in written.items() if kind in _PICTURES}


def _float32_base64(values: torch.Tensor | np.ndarray) -> str:
    array = np.ascontiguousarray(np.asarray(values, dtype="<f4"))
    return base64.b64encode(array.tobytes()).decode("ascii")


def pixel_probabilities(score_map: ScoreMap) -> dict:
    """What the page needs to read any class's probability at any pixel without asking again: the per-cell
    probabilities (``K×rows×cols``) and the two interpolation matrices (``H×rows``, ``W×cols``) that
    :func:`~fcn_app.geometry.upsample_to_pixels` uses, so that ``p(y, x) = Y[y] · P[k] · X[x]ᵀ`` is the CLI's
    per-pixel map; and each cell's window ``(x, y, w, h)`` to outline. Arrays are little-endian float32 base64."""
    geometry, (height, width) = score_map.geometry, score_map.image_size
    rows, cols = geometry.grid
    along_y = interpolation_matrix(height, rows, geometry.first_center[0], geometry.stride[0])
    along_x = interpolation_matrix(width, cols, geometry.first_center[1], geometry.stride[1])
    windows = [[round(value, 3) for value in geometry.window_box(row, col)]
               for row in range(rows) for col in range(cols)]
    return {"kind": "probabilities", "classes": len(score_map.categories), "rows": rows, "cols": cols,
            "height": height, "width": width,
            "cells": _float32_base64(score_map.probabilities()), "along_y": _float32_base64(along_y),
            "along_x": _float32_base64(along_x), "windows": windows}


def saliency_pixels(heatmaps: list[ClassHeatmap], max_side: int = SALIENCY_SIDE) -> dict:
    """What the page blends for a saliency method: each returned class's map (``K×rows×cols``, the picture's map
    shrunk by area averaging so the longer side is at most ``max_side``, never enlarged). The page puts it back on
    the picture's pixels bilinearly, pixel centres aligned as OpenCV's resize does: row ``y`` reads map position
    ``(y + 0.5)·rows/height − 0.5`` (clamped), which is :func:`~fcn_app.geometry.interpolation_matrix` with
    ``first_center = (height/rows − 1)/2`` and ``stride = height/rows``. There are no window scores to hover."""
    height, width = heatmaps[0].heatmap.shape
    scale = min(1.0, max_side / max(height, width))
    rows, cols = max(1, round(height * scale)), max(1, round(width * scale))
    maps = [heat.heatmap if (rows, cols) == (height, width) else
            cv2.resize(heat.heatmap.astype(np.float32), (cols, rows), interpolation=cv2.INTER_AREA)
            for heat in heatmaps]
    return {"kind": "saliency", "classes": len(heatmaps), "rows": rows, "cols": cols, "height": int(height),
            "width": int(width), "cells": _float32_base64(np.stack(maps))}


def available_methods(network: torch.nn.Module) -> list[str]:
    """The ``method`` values this server can run on ``network``: ``fcn``; ``cam`` where the network has a free
    window (a pooled head); pytorch-grad-cam's methods where that extra is installed."""
    pooled_head = has_free_window(network)
    return [name for name in METHODS if method_refusal(name, model="", pooled_head=pooled_head) is None]


def colormap_tables() -> dict[str, list[list[int]]]:
    """Each colormap's 256 colours, as :func:`~fcn_app.render.colorize` maps heat levels 0…255."""
    levels = (np.arange(256, dtype=np.float32) / np.float32(255.0)).reshape(1, 256)
    return {name: colorize(levels, name)[0].tolist() for name in COLORMAPS}


@dataclass
class Source:
    """One input of a request: the file to read and the name to report (``"image"`` in the JSON)."""

    path: Path
    name: str


def heatmap_job(network: torch.nn.Module, options: HeatmapOptions, scoring: ScoringOptions, source: Source,
                out_dir: Path, with_pixels: bool = False, model_turn: ModelTurn | None = None,
                with_pictures: bool = True) -> dict:
    """``fcn-heatmap IMAGE --json`` for one image: its summary, the pictures (unless ``with_pictures`` is false:
    then nothing is drawn, encoded or written — ``pictures`` is empty), ``labels`` (``{"classes": […]}``: each
    class's probability as the CLI's table writes it, :func:`~fcn_app.text.format_probability`), and optionally
    the page's data (:func:`pixel_probabilities` for a score map, :func:`saliency_pixels` for a map scaled per
    class: cam's or a pytorch-grad-cam method's).

    :func:`~fcn_app.tasks.process_input`'s steps (decode, predict, render, write), the network's pass through
    ``model_turn`` (:meth:`ModelQueue.score`; by default here)."""
    task = HeatmapTask(network, options, scoring)
    task.check()
    image = decode_input(source.path, task.decode_request)
    prediction = predict_input(task, image, model_turn=model_turn)
    rendered = task.render(image, prediction, source.name, draw=with_pictures)
    written = task.write(rendered, task.output_paths(out_dir / "image")) if with_pictures else {}
    payload = dict(rendered.summary, pictures=_pictures(written),
                   labels={"classes": [format_probability(value) for value in reported_probabilities(rendered)]})
    if with_pixels and get_method(options.method).min_max_scaled:  # cam too: its map is not the cells' probabilities
        payload["pixels"] = saliency_pixels(rendered.heatmaps)
    elif with_pixels and rendered.score_map is not None:
        payload["pixels"] = pixel_probabilities(rendered.score_map)
    return payload


def segment_job(network: torch.nn.Module, options: HeatmapOptions, scoring: ScoringOptions, source: Source,
                out_dir: Path, model_turn: ModelTurn | None = None) -> dict:
    """``fcn-heatmap IMAGE --checkpoint … --json``: the summary, the pictures, and the palette's legend
    (:func:`~fcn_app.tasks.process_input`, the network's pass through ``model_turn``)."""
    task = SegmentationTask(network, options, scoring)
    task.check()
    rendered, written = process_input(task, decode_input(source.path, task.decode_request), out_dir / "image",
                                      source=source.name, model_turn=model_turn)
    names = rendered.score_map.categories
    counts = np.bincount(rendered.labels.reshape(-1).astype(np.int64), minlength=len(names))
    palette = voc_palette(max(256, len(names)))
    legend = [{"index": int(index), "name": names[index], "color": palette[index].tolist(),
               "pixel_fraction": round(float(counts[index] / rendered.labels.size), 6)}
              for index in np.argsort(-counts, kind="stable") if counts[index] > 0]
    return dict(rendered.summary, pictures=_pictures(written), legend=legend)


def detect_job(network: torch.nn.Module, options: DetectOptions, settings: dict, source: Source,
               out_dir: Path, model_turn: ModelTurn | None = None) -> dict:
    """``fcn-heatmap detect IMAGE`` for one image: its ``.detections.json``, the boxes' picture, and ``labels``
    (``{"detections": […]}``: each box's score as the CLI's box labels write it,
    :func:`~fcn_app.text.format_probability`).
    ``settings`` are :class:`~fcn_app.tasks.DetectionTask`'s other fields (scales, classes, …).
    :func:`~fcn_app.tasks.process_input`, the network's pass through ``model_turn``."""
    task = DetectionTask(network, options, **settings)
    task.check()
    rendered, written = process_input(task, decode_input(source.path, task.decode_request), out_dir / "image",
                                      source=source.name, model_turn=model_turn)
    return dict(rendered.summary, pictures={"detections": _data_url(written["overlay"])},
                labels={"detections": [format_probability(detection.score) for detection in rendered.detections]})

