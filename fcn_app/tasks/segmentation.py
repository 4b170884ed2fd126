"""A segmentation model as an image task: per-pixel class probabilities → palette overlay, class panels, labels.

Outputs for an image ``<stem>``: ``<stem>.segmentation.png`` (or ``.jpg``/``.webp``: palette colours of the
predicted classes blended over the photo, with a legend), ``<stem>.classes.png`` (one heatmap panel per shown
class, drawn like the classifier heatmaps), ``<stem>.labels.png`` (the predicted label of every pixel, greyscale —
readable as a mask by the folder dataset) and optionally ``<stem>.json`` and ``<stem>.scores.npz``.

The model labels the image as decoded (working size ``native``) unless a working size is asked for: then it
runs on a working-size copy (or a pyramid of scales of it, as torchvision's references resize to 520 px and
mmsegmentation tests at several scales), each scale's per-pixel logits are resized bilinearly onto the
picture's pixels (:func:`~fcn_app.resolution.pixel_scores_on_original`), their softmax probabilities fused
(mean by default), and the labels are their argmax at the picture's own size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ..errors import OptionError
from ..heatmaps import heatmap_for_class, resolve_classes
from ..io import DecodeRequest, InputImage, atomic_write_image, atomic_write_png
from ..pyramid import PyramidLevel, fuse_maps
from ..render import blend, draw_legend, tile_panels
from ..resolution import pixel_scores_on_original, score_map_on_original
from ..scoring import ScoreMap, ScoringOptions
from ..segmentation.datasets import voc_palette
from ..text import format_probability
from .base import Report, picture_of, write_each
from .heatmap import HeatmapOptions, ScoreMapTask, heat_panel, native_unless_given, native_unless_given_rule

__all__ = ["SegmentationResult", "SegmentationTask"]

#: How many classes the overlay's legend lists (largest area first).
LEGEND_CLASSES = 8
#: How pyramid scales are fused when ``fuse`` is not given: the mean of each pixel's class probabilities
#: (mmsegmentation's multi-scale test averages softmax outputs).
SEGMENTATION_FUSE = "mean"


@dataclass
class SegmentationResult:
    labels: np.ndarray  # H×W uint8/uint16 predicted class per pixel
    overlay: np.ndarray  # H×W×3 RGB
    panels: np.ndarray  # per-class heatmaps, tiled
    score_map: ScoreMap  # the network's scores, geometry on the picture's pixels (a pyramid: its first scale's)
    summary: dict = field(default_factory=dict)
    icc_profile: bytes | None = None  # the input's colour profile, written into a jpg/webp overlay


@dataclass
class SegmentationTask(ScoreMapTask):
    """A segmentation ``network`` (e.g. a trained FCN) scored by :func:`~fcn_app.scoring.compute_score_maps`.

    ``options.classes`` (or the ``options.topk`` largest predicted classes) get a heatmap panel each; a grid
    option is refused, since the panels are always written. The model labels the pixels of the image as decoded
    (``options.work_size`` ``None`` or ``native``: it was trained on the user's own images at their own scale)
    unless a working size in pixels is given; ``options.scales`` score a pyramid of the working size, each
    pixel's class probabilities fused by ``options.fuse`` (default ``mean``). ``options.image_format`` applies
    to the overlay; the class panels and the labels stay PNG (lossless).
    """

    network: nn.Module
    options: HeatmapOptions = field(default_factory=HeatmapOptions)
    scoring: ScoringOptions = field(default_factory=ScoringOptions)
    default_fuse: ClassVar[str] = SEGMENTATION_FUSE

    def check(self) -> None:
        if self.options.grid:
            raise OptionError("grid", "a segmentation model always writes one panel per class (<name>.classes.png); "
                                      "a grid is for classifier heatmaps")
        super().check()

    @property
    def decode_request(self) -> DecodeRequest:
        return native_unless_given(self.options.work_size, self.max_side, self.max_pixels)

    @property
    def work_size_rule(self) -> str:
        return native_unless_given_rule(self.options.work_size)

    def _on_picture(self, prediction: ScoreMap | list[PyramidLevel], size: tuple[int, int]
                    ) -> tuple[ScoreMap, ScoreMap, torch.Tensor]:
        """The network's scores placed on the picture, one score map per picture pixel (for the panels' heat)
        and the class probabilities of every picture pixel (fused over a pyramid's scales)."""
        if isinstance(prediction, ScoreMap):
            pixel_map = pixel_scores_on_original(prediction, size)
            return score_map_on_original(prediction, size), pixel_map, pixel_map.probabilities()
        pixel_maps = [pixel_scores_on_original(level.score_map, size) for level in prediction]
        probabilities = fuse_maps(torch.stack([pixel_map.probabilities() for pixel_map in pixel_maps]), self.fuse)
        return score_map_on_original(prediction[0].score_map, size), pixel_maps[0], probabilities

    def render(self, image: np.ndarray | InputImage, prediction: ScoreMap | list[PyramidLevel],
               source: str | None) -> SegmentationResult:
        image, icc_profile = picture_of(image)  # native: the network's own pixels, no second decode
        score_map, pixel_map, probabilities = self._on_picture(prediction, image.shape[:2])
        options, class_names = self.options, score_map.categories
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
            heat = heatmap_for_class(pixel_map, selection, probabilities)
            label = f"{selection.name}  max {format_probability(heat.peak_probability)}"
            panels.append(heat_panel(image, heat, options, [label], marker=False))
            summary_classes.append({
                "name": selection.name, "indices": list(selection.indices),
                "pixel_fraction": float(sum(counts[i] for i in selection.indices) / labels.size),
                "peak_probability": heat.peak_probability,
            })
        network_map = prediction if isinstance(prediction, ScoreMap) else prediction[0].score_map
        work_height, work_width = network_map.image_size
        summary = {
            "image": source,
            "image_size": {"width": int(image.shape[1]), "height": int(image.shape[0])},
            "work_size": {"width": int(work_width), "height": int(work_height), "rule": self.work_size_rule},
            **({"scales": list(options.scales), "fuse": self.fuse} if options.is_pyramid else {}),
            "classes": summary_classes,
            "runtime": self.scoring.summary(self.network),
        }
        dtype = np.uint8 if len(class_names) <= 256 else np.uint16
        return SegmentationResult(labels.astype(dtype), overlay_image, tile_panels(panels), score_map, summary,
                                  icc_profile)

    def output_paths(self, stem: str | os.PathLike) -> dict[str, Path]:
        stem = str(stem)
        paths = {
            "segmentation": Path(stem + ".segmentation." + self.options.image_format),
            "classes": Path(stem + ".classes.png"),
            "labels": Path(stem + ".labels.png"),
        }
        return {**paths, **self.optional_paths(stem)}

    def write(self, rendered: SegmentationResult, paths: dict[str, Path]) -> dict[str, Path]:
        # a PNG overlay is written as it always was; a lossy one keeps the photo's colour profile
        icc_profile = rendered.icc_profile if self.options.image_format != "png" else None
        return write_each({"segmentation": lambda path: atomic_write_image(path, rendered.overlay,
                                                                           format=self.options.image_format,
                                                                           icc_profile=icc_profile),
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
        work = summary["work_size"]
        scales = f" · scales {', '.join(f'{scale:g}' for scale in summary['scales'])} ({summary['fuse']})" \
            if "scales" in summary else ""
        title = (f"{summary['image']} · {summary['image_size']['width']}×{summary['image_size']['height']} px · "
                 f"network sees {work['width']}×{work['height']} ({work['rule']}){scales}")
        rows = [[entry["name"], f"{100.0 * entry['pixel_fraction']:.1f}%", format_probability(entry["peak_probability"])]
                for entry in summary["classes"]]
        return Report(title, ["class", "pixels", "peak prob"], rows, numeric=("pixels", "peak prob"))
