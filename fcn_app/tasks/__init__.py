"""Image tasks: what is computed and written per image (heatmaps, detections, segmentations).

Runners — the single-image commands, :mod:`fcn_app.batch` for folders — speak only the protocol of
:mod:`fcn_app.tasks.base`; this package's modules implement it.
"""

from .base import (DecodeLimitsFromOptions, ImageTask, ModelTurn, ProgressCallback, Report, picture_of,
                   predict_input, process_image, process_input)
from .detection import DetectionsImage, DetectionTask
from .heatmap import HeatmapOptions, HeatmapTask, RenderedImage, write_scores
from .segmentation import SegmentationResult, SegmentationTask

__all__ = [
    "DecodeLimitsFromOptions",
    "DetectionTask",
    "DetectionsImage",
    "HeatmapOptions",
    "HeatmapTask",
    "ImageTask",
    "ModelTurn",
    "ProgressCallback",
    "Report",
    "RenderedImage",
    "SegmentationResult",
    "SegmentationTask",
    "picture_of",
    "predict_input",
    "process_image",
    "process_input",
    "write_scores",
]
