"""A segmentation model as an image task: per-pixel class probabilities → palette overlay, class panels, labels.

Outputs for an image ``<stem>``: ``<stem>.segmentation.png`` (palette colours of the predicted classes blended
over the photo, with a legend), ``<stem>.classes.png`` (one heatmap panel per shown class, drawn like the
classifier heatmaps), ``<stem>.labels.png`` (the predicted label of every pixel, greyscale — readable as a
mask by the folder dataset) and optionally ``<stem>.json`` and ``<stem>.scores.npz``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from ..errors import OptionError
from ..heatmaps import heatmap_for_class, resolve_classes
from ..io import InputImage, atomic_write_png
from ..render import blend, draw_legend, tile_panels
from ..scoring import ScoreMap, ScoringOptions
from ..segmentation.datasets import voc_palette
from .base import Report, picture_of, write_each
from .heatmap import NATIVE, HeatmapOptions, ScoreMapTask, heat_panel

__all__ = ["SegmentationResult", "SegmentationTask"]

#: How many classes the overlay's legend lists (largest area first).
LEGEND_CLASSES = 8


@dataclass
class SegmentationResult:
    labels: np.ndarray  # H×W uint8/uint16 predicted class per pixel
    overlay: np.ndarray  # H×W×3 RGB
    panels: np.ndarray  # per-class heatmaps, tiled
    score_map: ScoreMap
    summary: dict = field(default_factory=dict)


@dataclass
class SegmentationTask(ScoreMapTask):
    """A segmentation ``network`` (e.g. a trained FCN) scored by :func:`~fcn_app.scoring.compute_score_maps`.

    ``options.classes`` (or the ``options.topk`` largest predicted classes) get a heatmap panel each; a grid
    option is refused, since the panels are always written. The model labels the pixels of the image as decoded
    (working size ``native``: it was trained on the user's own images at their own scale, and the labels are
    per pixel), so a working size, a pyramid or a lossy picture format are refused.
    """

    network: nn.Module
    options: HeatmapOptions = field(default_factory=HeatmapOptions)
    scoring: ScoringOptions = field(default_factory=ScoringOptions)

    def check(self) -> None:
        if self.options.grid:
            raise OptionError("grid", "a segmentation model always writes one panel per class (<name>.classes.png); "
                                      "a grid is for classifier heatmaps")
        if self.options.work_size not in (None, NATIVE):
            raise OptionError("work_size", "a segmentation model labels the image at its own size (native); "
                                           "a working size is for classifier heatmaps")
        if self.options.is_pyramid:
            raise OptionError("scales", "a segmentation model labels the image at one scale; pyramids are for "
                                        "classifier heatmaps")
        if self.options.image_format != "png":
            raise OptionError("image_format", "a segmentation model writes PNG pictures (its labels must be "
                                              "lossless)")
        super().check()

    def render(self, image: np.ndarray | InputImage, prediction: ScoreMap, source: str | None) -> SegmentationResult:
        image, _ = picture_of(image)  # native: the network's own pixels, no second decode
        options, class_names = self.options, prediction.categories
        probabilities = prediction.probabilities()
        labels = probabilities.argmax(dim=0).numpy()
        palette = voc_palette(max(256, len(class_names)))
        counts = np.bincount(labels.reshape(-1), minlength=len(class_names))
        present = [index for index in np.argsort(-counts, kind="stable") if counts[index] > 0]
        legend = [f"{class_names[index]}  {100.0 * counts[index] / labels.size:.1f}%"
                  for index in present[:LEGEND_CLASSES]]
        overlay_image = draw_legend(blend(image, palette[labels], options.alpha), legend, colormap=None,
                                    font=options.font)
        specs = options.classes or [str(index) for index in present[: options.topk]]
        panels, summary_classes = [], []
        for selection in resolve_classes(specs, class_names):
            heat = heatmap_for_class(prediction, selection, probabilities)
            panels.append(heat_panel(image, heat, options, [f"{selection.name}  max {heat.peak_probability:.2f}"],
                                     marker=False))
            summary_classes.append({
                "name": selection.name, "indices": list(selection.indices),
                "pixel_fraction": float(sum(counts[i] for i in selection.indices) / labels.size),
                "peak_probability": heat.peak_probability,
            })
        summary = {
            "image": source,
            "image_size": {"width": int(image.shape[1]), "height": int(image.shape[0])},
            "classes": summary_classes,
            "runtime": self.scoring.summary(self.network),
        }
        dtype = np.uint8 if len(class_names) <= 256 else np.uint16
        return SegmentationResult(labels.astype(dtype), overlay_image, tile_panels(panels), prediction, summary)

    def output_paths(self, stem: str | os.PathLike) -> dict[str, Path]:
        stem = str(stem)
        paths = {
            "segmentation": Path(stem + ".segmentation.png"),
            "classes": Path(stem + ".classes.png"),
            "labels": Path(stem + ".labels.png"),
        }
        return {**paths, **self.optional_paths(stem)}

    def write(self, rendered: SegmentationResult, paths: dict[str, Path]) -> dict[str, Path]:
        return write_each({"segmentation": lambda path: atomic_write_png(path, rendered.overlay),
                           "classes": lambda path: atomic_write_png(path, rendered.panels),
                           "labels": lambda path: atomic_write_png(path, rendered.labels.astype(np.uint8)),
                           **self.optional_writers(rendered)}, paths)

    def row_fields(self, rendered: SegmentationResult) -> dict:
        return {"top_classes": [
            {"name": entry["name"], "pixel_fraction": round(entry["pixel_fraction"], 6),
             "peak_probability": round(entry["peak_probability"], 6)}
            for entry in rendered.summary["classes"]
        ]}

    def report(self, rendered: SegmentationResult) -> Report:
        summary = rendered.summary
        title = f"{summary['image']} · {summary['image_size']['width']}×{summary['image_size']['height']} px"
        rows = [[entry["name"], f"{100.0 * entry['pixel_fraction']:.1f}%", f"{entry['peak_probability']:.3f}"]
                for entry in summary["classes"]]
        return Report(title, ["class", "pixels", "peak prob"], rows, numeric=("pixels", "peak prob"))
