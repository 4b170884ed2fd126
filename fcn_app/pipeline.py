"""One image, start to finish: decode → score map → class heatmaps → pictures/JSON → atomic writes.

The single-image command and the folder/batch machinery both call these functions, so an image processed
alone and the same image inside a folder give byte-identical outputs.

What is done per image is an :class:`ImageTask`: :class:`HeatmapTask` (classifier heatmaps, here) or the
segmentation task of a trained FCN (:class:`fcn_app.segmentation.predict.SegmentationTask`). The batch runner
and the CLI only speak this protocol, so every task gets folders, resume, sharding and summaries for free.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .detect import Detection, DetectOptions, detect_objects, draw_detections, to_coco_results
from .heatmaps import ClassHeatmap, class_heatmaps, resolve_classes
from .io import DEFAULT_MAX_PIXELS, atomic_write_json, atomic_write_npz, atomic_write_png
from .render import DEFAULT_COLORMAP, draw_legend, draw_marker, overlay, tile_panels
from .models.convert import FullyConvolutionalNet
from .scoring import ScoreMap, compute_score_maps

__all__ = [
    "DecodeLimitsFromOptions",
    "DetectionTask",
    "DetectionsImage",
    "coco_results_from_summary",
    "HeatmapOptions",
    "HeatmapTask",
    "ImageTask",
    "RenderedImage",
    "output_paths",
    "process_image",
    "render_score_map",
    "summarize",
    "write_outputs",
]

OVERLAY_SUFFIX = ".heatmap.png"
GRID_SUFFIX = ".grid.png"
SCORES_SUFFIX = ".scores.npz"
JSON_SUFFIX = ".json"


@dataclass
class HeatmapOptions:
    """What to compute and write for each image (the CLI options of the heatmap command)."""

    classes: list[str] | None = None
    topk: int = 3
    colormap: str = DEFAULT_COLORMAP
    alpha: float = 0.5
    grid: bool = False
    save_scores: bool = False
    write_json: bool = False
    normalize: bool = False
    max_side: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    font: str | None = None  # TrueType/OpenType file for legends (None: the bundled DejaVu Sans)


@dataclass
class RenderedImage:
    """Everything computed for one image, ready to be written."""

    overlay: np.ndarray
    heatmaps: list[ClassHeatmap]
    score_map: ScoreMap
    grid: np.ndarray | None = None
    summary: dict = field(default_factory=dict)


def output_paths(stem: str | os.PathLike, options: HeatmapOptions) -> dict[str, Path]:
    """Output files for an image whose outputs are named ``<stem>.heatmap.png`` etc. (only the enabled ones)."""
    stem = str(stem)
    paths = {"overlay": Path(stem + OVERLAY_SUFFIX)}
    if options.grid:
        paths["grid"] = Path(stem + GRID_SUFFIX)
    if options.save_scores:
        paths["scores"] = Path(stem + SCORES_SUFFIX)
    if options.write_json:
        paths["json"] = Path(stem + JSON_SUFFIX)
    return paths


def _legend_line(rank: int, heatmap: ClassHeatmap) -> str:
    return f"{rank}. {heatmap.selection.name}  {heatmap.peak_probability:.2f}"


def _class_panel(image: np.ndarray, heatmap: ClassHeatmap, options: HeatmapOptions, lines: list[str]) -> np.ndarray:
    heat = heatmap.heatmap
    if options.normalize and heatmap.peak_probability > 0:
        heat = heat / heatmap.peak_probability  # colours span 0 → this class's peak (legend keeps the true peak)
    blended = overlay(image, heat, colormap=options.colormap, alpha=options.alpha)
    return draw_legend(draw_marker(blended, heatmap.peak_pixel), lines, colormap=options.colormap, font=options.font)


def summarize(score_map: ScoreMap, heatmaps: list[ClassHeatmap], source: str | None = None) -> dict:
    """Machine-readable summary of one image's result (the ``--json`` payload)."""
    height, width = score_map.image_size
    summary = {
        "image": source,
        "image_size": {"width": int(width), "height": int(height)},
        "map_size": {"rows": score_map.geometry.grid[0], "cols": score_map.geometry.grid[1]},
        "stride": list(score_map.geometry.stride),
        "geometry": score_map.geometry.to_dict(),
        "classes": [heatmap.to_dict() for heatmap in heatmaps],
    }
    return summary


def render_score_map(
    image: np.ndarray, score_map: ScoreMap, options: HeatmapOptions, source: str | None = None
) -> RenderedImage:
    """Heatmaps for the chosen classes and the pictures showing them (nothing is written)."""
    heatmaps = class_heatmaps(score_map, options.classes, options.topk)
    lines = [_legend_line(rank, heatmap) for rank, heatmap in enumerate(heatmaps, start=1)]
    main = _class_panel(image, heatmaps[0], options, lines)
    grid = None
    if options.grid:
        panels = [_class_panel(image, heatmap, options, [line]) for heatmap, line in zip(heatmaps, lines)]
        grid = tile_panels(panels)
    return RenderedImage(main, heatmaps, score_map, grid, summarize(score_map, heatmaps, source))


def write_outputs(rendered: RenderedImage, paths: dict[str, Path]) -> dict[str, Path]:
    """Write each enabled output atomically; returns the paths written."""
    written = {}
    for kind, path in paths.items():
        if kind == "overlay":
            atomic_write_png(path, rendered.overlay)
        elif kind == "grid":
            atomic_write_png(path, rendered.grid)
        elif kind == "json":
            atomic_write_json(path, rendered.summary)
        elif kind == "scores":
            score_map = rendered.score_map
            atomic_write_npz(
                path,
                logits=score_map.logits.numpy(),
                image_size=np.asarray(score_map.image_size),
                grid=np.asarray(score_map.geometry.grid),
                stride=np.asarray(score_map.geometry.stride),
                first_center=np.asarray(score_map.geometry.first_center),
                window=np.asarray(score_map.geometry.window),
                receptive_field=np.asarray(score_map.geometry.receptive_field),
                categories=np.asarray(score_map.categories),
            )
        else:
            continue
        written[kind] = path
    return written


class ImageTask(Protocol):
    """What is computed and written per image; the batch runner and the CLI drive any task the same way."""

    max_side: int | None
    max_pixels: int

    def check(self) -> None:
        """Fail fast on options that would fail for every image (e.g. an unknown class name)."""

    def predict(self, images: list[np.ndarray]) -> list[Any]:
        """Model outputs for a batch of same-size RGB images, one per image."""

    def render(self, image: np.ndarray, prediction: Any, source: str | None) -> Any:
        """Pictures and summary (attribute ``summary``) of one image; nothing is written."""

    def output_paths(self, stem: str | os.PathLike) -> dict[str, Path]:
        """The files this task writes for an image whose outputs are named ``<stem>.*``."""

    def write(self, rendered: Any, paths: dict[str, Path]) -> dict[str, Path]:
        """Write ``rendered`` atomically to ``paths``; returns what was written."""

    def row_fields(self, rendered: Any) -> dict:
        """Small per-image facts for the batch summary (e.g. the top classes)."""


class DecodeLimitsFromOptions:
    """Mixin for tasks: the decode limits (``max_side``, ``max_pixels``) are those of ``self.options``."""

    options: Any

    @property
    def max_side(self) -> int | None:
        return self.options.max_side

    @property
    def max_pixels(self) -> int:
        return self.options.max_pixels


@dataclass
class HeatmapTask(DecodeLimitsFromOptions):
    """Classifier heatmaps: score maps of ``network``, rendered as :func:`render_score_map` describes.

    ``score_options`` are passed to :func:`~fcn_app.scoring.compute_score_maps` (precision, memory budget, ...).
    """

    network: FullyConvolutionalNet
    options: HeatmapOptions = field(default_factory=HeatmapOptions)
    score_options: dict = field(default_factory=dict)

    def check(self) -> None:
        if self.options.classes:
            resolve_classes(self.options.classes, self.network.categories)

    def predict(self, images: list[np.ndarray]) -> list[ScoreMap]:
        return compute_score_maps(self.network, images, **self.score_options)

    def render(self, image: np.ndarray, prediction: ScoreMap, source: str | None) -> RenderedImage:
        return render_score_map(image, prediction, self.options, source=source)

    def output_paths(self, stem: str | os.PathLike) -> dict[str, Path]:
        return output_paths(stem, self.options)

    def write(self, rendered: RenderedImage, paths: dict[str, Path]) -> dict[str, Path]:
        return write_outputs(rendered, paths)

    def row_fields(self, rendered: RenderedImage) -> dict:
        return {"top_classes": [
            {"name": heat.selection.name, "peak_probability": round(heat.peak_probability, 6)}
            for heat in rendered.heatmaps
        ]}


def process_image(task: ImageTask, image: np.ndarray, stem: str | os.PathLike, source: str | None = None):
    """Predict, render and write one decoded image; returns ``(rendered, written_paths)``."""
    rendered = task.render(image, task.predict([image])[0], source)
    return rendered, task.write(rendered, task.output_paths(stem))


@dataclass
class DetectionsImage:
    """One image's detections and the picture of them."""

    overlay: np.ndarray
    detections: list[Detection]
    summary: dict


@dataclass
class DetectionTask:
    """Boxes from heatmaps (:func:`fcn_app.detect.detect_objects`) as an :class:`ImageTask`.

    Writes ``<stem>.detections.png`` (boxes and labels) and ``<stem>.detections.json`` per image; a folder's
    COCO results file is assembled from those by :func:`coco_results_from_summary`.
    """

    network: FullyConvolutionalNet
    options: DetectOptions = field(default_factory=DetectOptions)
    scales: tuple[float, ...] = (1.0,)
    classes: list[str] | None = None
    fuse: str = "max"
    topk: int = 5
    max_side: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    description: dict = field(default_factory=dict)  # e.g. model and stride, copied into every JSON
    font: str | None = None  # TrueType/OpenType file for labels (None: the bundled DejaVu Sans)

    def check(self) -> None:
        if self.classes:
            resolve_classes(self.classes, self.network.categories)

    def predict(self, images: list[np.ndarray]) -> list[list[Detection]]:
        return [
            detect_objects(self.network, image, scales=self.scales, classes=self.classes, fuse=self.fuse,
                           topk=self.topk, options=self.options)
            for image in images
        ]

    def render(self, image: np.ndarray, prediction: list[Detection], source: str | None) -> DetectionsImage:
        summary = {
            "image": source,
            "image_size": {"width": int(image.shape[1]), "height": int(image.shape[0])},
            **self.description,
            "scales": list(self.scales),
            "fuse": self.fuse,
            "detections": [detection.to_dict() for detection in prediction],
        }
        return DetectionsImage(draw_detections(image, prediction, font=self.font), prediction, summary)

    def output_paths(self, stem: str | os.PathLike) -> dict[str, Path]:
        return {"overlay": Path(f"{stem}.detections.png"), "json": Path(f"{stem}.detections.json")}

    def write(self, rendered: DetectionsImage, paths: dict[str, Path]) -> dict[str, Path]:
        atomic_write_png(paths["overlay"], rendered.overlay)
        atomic_write_json(paths["json"], rendered.summary)
        return dict(paths)

    def row_fields(self, rendered: DetectionsImage) -> dict:
        return {"top_classes": [
            {"name": detection.class_name, "score": round(float(detection.score), 6)}
            for detection in rendered.detections[:5]
        ]}


def coco_results_from_summary(summary_path: str | os.PathLike) -> list[dict]:
    """COCO results of a finished detection job: image ids follow the summary's (sorted) input order."""
    rows = json.loads(Path(summary_path).read_text(encoding="utf-8"))["inputs"]
    per_image = []
    for image_id, row in enumerate(rows, start=1):
        json_path = row.get("outputs", {}).get("json")
        if row["status"] not in ("ok", "skipped") or not json_path:
            continue
        detections = json.loads(Path(json_path).read_text(encoding="utf-8"))["detections"]
        per_image.append((image_id, Path(row["input"]).name, detections))
    return to_coco_results(per_image)
