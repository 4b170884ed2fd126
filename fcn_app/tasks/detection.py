"""Boxes from heatmaps (:func:`fcn_app.detect.detect_objects`) as an image task.

Writes ``<stem>.detections.png`` (boxes and labels) and ``<stem>.detections.json`` per image; a folder's COCO
results file is assembled from those by :func:`fcn_app.coco.coco_results_from_summary`. Each JSON also names the
image's highest class peak, boxed or not, so a run without boxes can say how close it came
(:func:`highest_peak_of_job`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from torch import nn

from ..coco import job_detection_results
from ..detect import (ClassPeak, Detection, Detections, DetectOptions, check_method_scales, detect_objects,
                      detection_on_original)
from ..errors import OptionError
from ..heatmaps import resolve_classes
from ..io import DEFAULT_MAX_PIXELS, DecodeRequest, InputImage, atomic_write_image, atomic_write_json
from ..method_registry import get_method
from ..methods import FCN, method_network
from ..pyramid import FUSE_MODES
from ..render import draw_detections
from ..scoring import ScoringOptions
from ..text import format_probability
from .base import ProgressCallback, Report, picture_of, write_each
from .heatmap import check_image_format, check_work_size, native_unless_given, native_unless_given_rule

__all__ = ["DetectionTask", "DetectionsImage", "JobPeak", "highest_peak_of_job"]


@dataclass
class DetectionsImage:
    """One image's detections and the picture of them."""

    overlay: np.ndarray
    detections: list[Detection]
    summary: dict
    icc_profile: bytes | None = None  # the input's colour profile, embedded in the picture


@dataclass
class DetectionTask:
    """Detections of ``network`` (a classifier FCN, possibly densified, or a segmentation model) per image.

    The network sees each image as decoded (``work_size`` ``None`` or ``"native"``: small objects in big images
    stay big enough for the window), or resized so its longer side is ``work_size`` pixels; boxes, peaks and
    masks are then mapped onto the original pixels. ``scales``/``fuse`` make an image pyramid of the working
    size; ``classes`` (or the ``topk`` best classes of each image) are looked
    for; ``description`` (e.g. model and stride) is copied into every JSON; ``font`` draws the labels.
    """

    network: nn.Module
    options: DetectOptions = field(default_factory=DetectOptions)
    scales: tuple[float, ...] = (1.0,)
    classes: list[str] | None = None
    fuse: str = "max"
    topk: int = 5
    max_side: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    description: dict = field(default_factory=dict)
    font: str | None = None  # TrueType/OpenType file for labels (None: the bundled DejaVu Sans)
    scoring: ScoringOptions = field(default_factory=ScoringOptions)
    method: str = FCN  # see fcn_app.methods: fcn, cam or a pytorch-grad-cam method (region boxes of its map)
    target_layer: str | None = None
    work_size: int | str | None = None
    image_format: str = "png"  # of the boxes' picture: png, jpg or webp (the input's ICC profile is kept)

    def __post_init__(self) -> None:
        self.work_size = check_work_size(self.work_size)
        self.image_format = check_image_format(self.image_format)
        method = get_method(self.method)
        self.method = method.name
        if self.target_layer is not None and not method.saliency:
            raise OptionError("target_layer", f"applies to pytorch-grad-cam methods; {self.method} reads no layer")
        check_method_scales(self.method, self.scales)
        self.network = method_network(self.network, self.method)  # cam: one feature cell per window
        if self.fuse not in FUSE_MODES:
            raise OptionError("fuse", f"unknown fuse mode {self.fuse!r}; choose one of {', '.join(FUSE_MODES)}")
        if self.topk < 1:
            raise OptionError("topk", f"must be at least 1, got {self.topk}")

    @property
    def decode_request(self) -> DecodeRequest:
        return native_unless_given(self.work_size, self.max_side, self.max_pixels)

    def check(self) -> None:
        if self.classes:
            resolve_classes(self.classes, self.network.categories)

    def predict(self, images: list[np.ndarray], progress: ProgressCallback | None = None) -> list[Detections]:
        return [
            detect_objects(self.network, image, scales=self.scales, classes=self.classes, fuse=self.fuse,
                           topk=self.topk, options=self.options, scoring=self.scoring, method=self.method,
                           target_layer=self.target_layer)
            for image in images
        ]

    def render(self, image: np.ndarray | InputImage, prediction: list[Detection], source: str | None) -> DetectionsImage:
        peak = getattr(prediction, "highest_peak", None)  # a plain list of detections has none
        work_height, work_width = (image.network_pixels if isinstance(image, InputImage) else image).shape[:2]
        image, icc_profile = picture_of(image)
        if (work_height, work_width) != image.shape[:2]:
            prediction = [detection_on_original(detection, (work_height, work_width), image.shape[:2])
                          for detection in prediction]
        summary = {
            "image": source,
            "image_size": {"width": int(image.shape[1]), "height": int(image.shape[0])},
            "work_size": {"width": int(work_width), "height": int(work_height),
                          "rule": native_unless_given_rule(self.work_size)},
            **self.description,
            "method": self.method,
            "scales": list(self.scales),
            "fuse": self.fuse,
            "detections": [detection.to_dict() for detection in prediction],
            **({"highest_peak": peak.to_dict()} if peak is not None else {}),
            "runtime": self.scoring.summary(self.network),
        }
        return DetectionsImage(draw_detections(image, prediction, font=self.font), prediction, summary, icc_profile)

    def output_paths(self, stem: str | os.PathLike) -> dict[str, Path]:
        return {"overlay": Path(f"{stem}.detections.{self.image_format}"), "json": Path(f"{stem}.detections.json")}

    def write(self, rendered: DetectionsImage, paths: dict[str, Path]) -> dict[str, Path]:
        def picture(path: Path) -> Path:
            icc_profile = None if self.image_format == "png" else rendered.icc_profile  # PNGs as before
            return atomic_write_image(path, rendered.overlay, format=self.image_format, icc_profile=icc_profile)

        return write_each({"overlay": picture,
                           "json": lambda path: atomic_write_json(path, rendered.summary)}, paths)

    def row_fields(self, rendered: DetectionsImage) -> dict:
        return {"top_classes": [
            {"name": detection.class_name, "score": round(float(detection.score), 6)}
            for detection in rendered.detections[:5]
        ]}

    def report(self, rendered: DetectionsImage) -> Report:
        rows = [[detection.class_name, format_probability(detection.score),
                 ", ".join(f"{v:.0f}" for v in detection.box)] for detection in rendered.detections]
        work = rendered.summary["work_size"]
        return Report(f"{rendered.summary['image']} · {len(rendered.detections)} detections · network sees "
                      f"{work['width']}×{work['height']} ({work['rule']})",
                      ["class", "score", "box x, y, w, h"], rows)


@dataclass(frozen=True)
class JobPeak:
    """The highest class peak over the images of a detection job, and where it is."""

    peak: ClassPeak
    image: str  # the input's file name
    images: int  # how many images' results were read


def highest_peak_of_job(summary_path: str | os.PathLike) -> JobPeak | None:
    """The highest peak over the images of a finished job (:func:`~fcn_app.coco.job_detection_results`), or
    ``None`` when no image has one."""
    best, images = None, 0
    for images, (_, name, result) in enumerate(job_detection_results(summary_path), start=1):
        entry = result.get("highest_peak")
        if entry is not None and (best is None or entry["score"] > best[0].score):
            best = (ClassPeak(entry["class_name"], entry["class_index"], entry["score"]), name)
    return None if best is None else JobPeak(best[0], best[1], images)
