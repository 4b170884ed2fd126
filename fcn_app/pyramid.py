"""Image pyramids: score an image at several scales and fuse per-pixel class probabilities.

A classifier-turned-FCN recognises objects of roughly the size it was trained on, relative to its window
(224 px for ImageNet models). Scoring the image shrunk (scale < 1) makes objects larger than the window fit it;
scoring it enlarged (scale > 1) makes small objects big enough. Each level's score map is placed back on the
*original* image with :meth:`~fcn_app.geometry.ScoreGeometry.scaled`, upsampled to per-pixel probabilities with
:func:`~fcn_app.geometry.upsample_to_pixels`, and the levels are fused per pixel by ``max`` (an object counts
where any scale sees it) or ``mean`` (agreement across scales). Which level was best at a pixel is kept: a
detection uses it to size its box.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

import cv2
import numpy as np
import torch

from .choices import FUSE_MODES
from .errors import OptionError
from .geometry import upsample_to_pixels
from .models.convert import FullyConvolutionalNet
from .scoring import ScoreMap, compute_score_map

__all__ = [
    "FUSE_MODES",
    "FusedProbabilities",
    "PyramidLevel",
    "fuse_levels",
    "fuse_maps",
    "parse_scales",
    "resize_image",
    "score_pyramid",
]

logger = logging.getLogger(__name__)


def parse_scales(text: str | Sequence[float]) -> tuple[float, ...]:
    """``"0.5,1,2"`` (or a sequence) → ``(0.5, 1.0, 2.0)``; every scale must be a positive number."""
    items = text.split(",") if isinstance(text, str) else list(text)
    scales = []
    for item in items:
        try:
            value = float(item)
        except (TypeError, ValueError):
            raise OptionError("scales", f"{item!r} is not a number; write scales like 0.5,1,2") from None
        if not np.isfinite(value) or value <= 0:
            raise OptionError("scales", f"every scale must be a positive number, got {item!r}")
        scales.append(value)
    if not scales:
        raise OptionError("scales", "give at least one scale, e.g. 1 or 0.5,1,2")
    return tuple(dict.fromkeys(scales))  # drop repeats, keep order


def resize_image(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` resized by ``scale`` (area averaging when shrinking, bilinear when enlarging); sides ≥ 1 px."""
    height, width = image.shape[:2]
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    if size == (width, height):
        return image
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation)


@dataclass
class PyramidLevel:
    """One scale of the pyramid: its score map, with geometry already in *original* image pixels."""

    scale: float
    score_map: ScoreMap


def score_pyramid(
    network: FullyConvolutionalNet, image: np.ndarray, scales: Sequence[float] = (1.0,), **scoring
) -> list[PyramidLevel]:
    """Score ``image`` (``H×W×3`` uint8 RGB) at each scale; every level's geometry refers to the original image.

    ``scoring`` (precision, memory budget, progress) is passed to :func:`~fcn_app.scoring.compute_score_map`.
    """
    height, width = image.shape[:2]
    levels = []
    for scale in parse_scales(scales):
        resized = resize_image(image, scale)
        score_map = compute_score_map(network, resized, **scoring)
        # The per-axis factor actually applied (rounding to whole pixels makes it differ slightly from `scale`).
        factor = (resized.shape[0] / height, resized.shape[1] / width)
        geometry = score_map.geometry.scaled(factor)
        levels.append(PyramidLevel(scale, replace(score_map, geometry=geometry, image_size=(height, width))))
        logger.debug("scale %.3g: %s px → grid %s", scale, resized.shape[:2], score_map.geometry.grid)
    return levels


@dataclass
class FusedProbabilities:
    """Per-pixel probabilities of some classes, fused over pyramid levels.

    Attributes:
        probabilities: ``C × H × W`` float32 in [0, 1], one map per entry of ``class_indices``.
        best_level: ``C × H × W`` int index into ``levels`` of the level most confident of the class there
            (highest log-odds).
        class_indices: the network's class index of each map.
        levels: the pyramid levels fused.
    """

    probabilities: np.ndarray
    best_level: np.ndarray
    class_indices: list[int]
    levels: list[PyramidLevel]

    @property
    def categories(self) -> list[str]:
        return self.levels[0].score_map.categories


def _class_margins(logits: torch.Tensor, indices: Sequence[int]) -> torch.Tensor:
    """Log-odds ``log p − log(1 − p)`` of each class in ``indices`` per cell, computed stably from the logits."""
    logits = logits.float()
    margins = []
    for index in indices:
        others = torch.cat([logits[:index], logits[index + 1 :]])
        margins.append(logits[index] - torch.logsumexp(others, dim=0))
    return torch.stack(margins)


def fuse_maps(per_level: torch.Tensor, mode: str = "max") -> torch.Tensor:
    """Fuse per-pixel probabilities stacked over levels (first dimension) by ``max`` or ``mean``."""
    if mode not in FUSE_MODES:
        raise OptionError("fuse", f"unknown fuse mode {mode!r}; choose one of {', '.join(FUSE_MODES)}")
    return per_level.amax(dim=0) if mode == "max" else per_level.mean(dim=0)


def fuse_levels(
    levels: Sequence[PyramidLevel], class_indices: Sequence[int] | None = None, mode: str = "max"
) -> FusedProbabilities:
    """Per-pixel probabilities of ``class_indices`` (default: all classes) fused over ``levels`` by max or mean.

    Softmax is taken per cell over *all* classes at each level before upsampling, so probabilities of different
    levels are comparable.
    """
    if mode not in FUSE_MODES:
        raise OptionError("fuse", f"unknown fuse mode {mode!r}; choose one of {', '.join(FUSE_MODES)}")
    if not levels:
        raise ValueError("fuse_levels needs at least one pyramid level")
    num_classes = levels[0].score_map.logits.shape[0]
    indices = list(range(num_classes)) if class_indices is None else [int(index) for index in class_indices]
    per_level, margins = [], []
    for level in levels:
        score_map = level.score_map
        cells = score_map.probabilities()[indices]
        per_level.append(upsample_to_pixels(cells, score_map.geometry, score_map.image_size))
        margins.append(upsample_to_pixels(_class_margins(score_map.logits, indices), score_map.geometry,
                                          score_map.image_size))
    stacked = torch.stack(per_level)  # L × C × H × W
    # Confident levels saturate at probability 1.0 in float32; the log-odds still tell which level is surest.
    best_level = torch.stack(margins).argmax(dim=0)
    fused = fuse_maps(stacked, mode)
    return FusedProbabilities(
        probabilities=fused.clamp_(0.0, 1.0).numpy(),
        best_level=best_level.numpy(),
        class_indices=indices,
        levels=list(levels),
    )
