"""Using a trained segmentation model: per-pixel class probabilities for an image, and pictures of them.

Outputs for an image ``<stem>``: ``<stem>.segmentation.png`` (palette colours of the predicted classes blended
over the photo, with a legend), ``<stem>.classes.png`` (one heatmap panel per shown class, rendered with
:mod:`fcn_app.render` like the classifier heatmaps), ``<stem>.labels.png`` (the predicted label of every
pixel, greyscale — readable as a mask by the folder dataset) and optionally ``<stem>.json``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..heatmaps import resolve_classes
from ..pipeline import DecodeLimitsFromOptions
from ..io import DEFAULT_MAX_PIXELS, atomic_write_json, atomic_write_png
from ..render import DEFAULT_COLORMAP, draw_legend, overlay, tile_panels
from .datasets import voc_palette
from .models import SegmentationFCN
from .transforms import normalize_image

__all__ = [
    "SegmentationOptions",
    "SegmentationResult",
    "SegmentationTask",
    "predict_probabilities",
    "render_segmentation",
    "segment_image",
    "segmentation_output_paths",
    "write_segmentation_outputs",
]


@dataclass
class SegmentationOptions:
    """What to draw: ``classes`` (names/indices, as ``--class``) or the ``topk`` largest predicted classes."""

    classes: list[str] | None = None
    topk: int = 6
    colormap: str = DEFAULT_COLORMAP
    alpha: float = 0.5
    write_json: bool = False
    max_side: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    font: str | None = None  # TrueType/OpenType file for legends (None: the bundled DejaVu Sans)


@dataclass
class SegmentationResult:
    labels: np.ndarray  # H×W uint8/int predicted class per pixel
    overlay: np.ndarray  # H×W×3 RGB
    panels: np.ndarray  # per-class heatmaps, tiled
    summary: dict = field(default_factory=dict)


@torch.inference_mode()
def predict_probabilities(model: SegmentationFCN, image: np.ndarray) -> torch.Tensor:
    """Softmax class probabilities ``C×H×W`` (float32, CPU) for an ``H×W×3`` uint8 RGB image of any size."""
    parameter = next(model.parameters())
    batch = normalize_image(image, model.mean, model.std)[None].to(parameter.device)
    return torch.softmax(model(batch).float(), dim=1)[0].cpu()


def render_segmentation(
    image: np.ndarray, probabilities: torch.Tensor, class_names: list[str], options: SegmentationOptions,
    source: str | None = None,
) -> SegmentationResult:
    """Palette overlay of the per-pixel argmax, and one heatmap panel per chosen class (nothing is written)."""
    labels = probabilities.argmax(dim=0).numpy()
    palette = voc_palette(max(256, len(class_names)))
    blended = np.clip(np.rint((1.0 - options.alpha) * image + options.alpha * palette[labels].astype(np.float32)),
                      0, 255).astype(np.uint8)
    counts = np.bincount(labels.reshape(-1), minlength=len(class_names))
    present = [index for index in np.argsort(-counts, kind="stable") if counts[index] > 0]
    legend = [f"{class_names[index]}  {100.0 * counts[index] / labels.size:.1f}%" for index in present[:8]]
    overlay_image = draw_legend(blended, legend, colormap=None, font=options.font)
    if options.classes:
        selections = resolve_classes(options.classes, class_names)
    else:
        selections = resolve_classes([str(index) for index in present[: options.topk]], class_names)
    panels, summary_classes = [], []
    for selection in selections:
        heat = probabilities[list(selection.indices)].sum(dim=0).clamp(0, 1).numpy()
        panels.append(draw_legend(overlay(image, heat, colormap=options.colormap, alpha=options.alpha),
                                  [f"{selection.name}  max {heat.max():.2f}"], colormap=options.colormap,
                                  font=options.font))
        summary_classes.append({
            "name": selection.name, "indices": list(selection.indices),
            "pixel_fraction": float(sum(counts[i] for i in selection.indices) / labels.size),
            "peak_probability": float(heat.max()),
        })
    summary = {
        "image": source,
        "image_size": {"width": int(image.shape[1]), "height": int(image.shape[0])},
        "classes": summary_classes,
    }
    dtype = np.uint8 if len(class_names) <= 256 else np.uint16
    return SegmentationResult(labels.astype(dtype), overlay_image, tile_panels(panels), summary)


def segment_image(
    model: SegmentationFCN, image: np.ndarray, class_names: list[str], options: SegmentationOptions,
    source: str | None = None,
) -> SegmentationResult:
    """Predict and render one image (the single-image command and batch runs call this)."""
    return render_segmentation(image, predict_probabilities(model, image), class_names, options, source)


def segmentation_output_paths(stem: str | os.PathLike, options: SegmentationOptions) -> dict[str, Path]:
    stem = str(stem)
    paths = {
        "segmentation": Path(stem + ".segmentation.png"),
        "classes": Path(stem + ".classes.png"),
        "labels": Path(stem + ".labels.png"),
    }
    if options.write_json:
        paths["json"] = Path(stem + ".json")
    return paths


def write_segmentation_outputs(result: SegmentationResult, paths: dict[str, Path]) -> dict[str, Path]:
    """Write each output atomically; returns the paths written."""
    writers = {
        "segmentation": lambda path: atomic_write_png(path, result.overlay),
        "classes": lambda path: atomic_write_png(path, result.panels),
        "labels": lambda path: atomic_write_png(path, result.labels.astype(np.uint8)),
        "json": lambda path: atomic_write_json(path, result.summary),
    }
    written = {}
    for kind, path in paths.items():
        writers[kind](path)
        written[kind] = path
    return written


@dataclass
class SegmentationTask(DecodeLimitsFromOptions):
    """A trained segmentation model as an :class:`~fcn_app.pipeline.ImageTask`: single images and batch runs."""

    model: SegmentationFCN
    class_names: list[str]
    options: SegmentationOptions = field(default_factory=SegmentationOptions)

    def check(self) -> None:
        if self.options.classes:
            resolve_classes(self.options.classes, self.class_names)

    def predict(self, images: list[np.ndarray]) -> list[torch.Tensor]:
        return [predict_probabilities(self.model, image) for image in images]

    def render(self, image: np.ndarray, prediction: torch.Tensor, source: str | None) -> SegmentationResult:
        return render_segmentation(image, prediction, self.class_names, self.options, source)

    def output_paths(self, stem: str | os.PathLike) -> dict[str, Path]:
        return segmentation_output_paths(stem, self.options)

    def write(self, rendered: SegmentationResult, paths: dict[str, Path]) -> dict[str, Path]:
        return write_segmentation_outputs(rendered, paths)

    def row_fields(self, rendered: SegmentationResult) -> dict:
        return {"top_classes": [
            {"name": entry["name"], "pixel_fraction": round(entry["pixel_fraction"], 6)}
            for entry in rendered.summary["classes"]
        ]}
