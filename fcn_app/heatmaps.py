"""From score maps to per-pixel class heatmaps: choosing classes, softmax, pixel-aligned upsampling, peaks."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ClassSelectionError, OptionError
from .geometry import upsample_to_pixels
from .scoring import ScoreMap

__all__ = [
    "ClassHeatmap",
    "ClassSelection",
    "class_heatmaps",
    "heatmap_for_class",
    "resolve_classes",
    "top_classes",
]


@dataclass(frozen=True)
class ClassSelection:
    """One heatmap's class: a single class, or several whose probabilities are summed (``--class cat``)."""

    name: str
    indices: tuple[int, ...]


@dataclass
class ClassHeatmap:
    """A per-pixel probability map for one selection, with its peak."""

    selection: ClassSelection
    heatmap: np.ndarray  # H×W float32 in [0, 1]
    peak_probability: float
    peak_pixel: tuple[int, int]  # (x, y)

    @classmethod
    def from_pixels(cls, selection: ClassSelection, heatmap: np.ndarray) -> "ClassHeatmap":
        """``heatmap`` (``H×W``) of ``selection`` with its peak: the first maximum in raster order."""
        peak_y, peak_x = divmod(int(np.argmax(heatmap)), heatmap.shape[1])
        return cls(selection, heatmap, float(heatmap[peak_y, peak_x]), (int(peak_x), int(peak_y)))

    def to_dict(self) -> dict:
        return {
            "name": self.selection.name,
            "indices": list(self.selection.indices),
            "peak_probability": round(self.peak_probability, 6),
            "peak_pixel": {"x": self.peak_pixel[0], "y": self.peak_pixel[1]},
        }


def _resolve_one(spec: str, categories: Sequence[str]) -> ClassSelection:
    text = spec.strip()
    if re.fullmatch(r"\d+", text):
        index = int(text)
        if index >= len(categories):
            raise ClassSelectionError(f"class index {index} is out of range; the model has {len(categories)} classes (0–{len(categories) - 1})")
        return ClassSelection(categories[index], (index,))
    lowered = [name.lower() for name in categories]
    needle = text.lower()
    if not needle:
        raise ClassSelectionError("empty class name; give a class name or index")
    if needle in lowered:
        index = lowered.index(needle)
        return ClassSelection(categories[index], (index,))
    word = re.compile(rf"(?<![a-z0-9]){re.escape(needle)}(?![a-z0-9])")
    matches = [index for index, name in enumerate(lowered) if word.search(name)]
    if not matches:
        matches = [index for index, name in enumerate(lowered) if needle in name]
    if matches:
        return ClassSelection(text, tuple(matches))
    close = difflib.get_close_matches(needle, lowered, n=5, cutoff=0.6)
    hint = f"; did you mean: {', '.join(repr(categories[lowered.index(name)]) for name in close)}?" if close else ""
    raise ClassSelectionError(f"no class named {spec!r}{hint} (class names match case-insensitively; indices work too)")


def resolve_classes(specs: Sequence[str], categories: Sequence[str]) -> list[ClassSelection]:
    """Turn ``--class`` values into selections.

    Each value is an index, an exact name (case-insensitive), or a word/substring matching several names whose
    probabilities are then summed per pixel (``"cat"`` → every class whose name contains the word *cat*).
    """
    return [_resolve_one(spec, categories) for spec in specs]


def top_classes(score_map: ScoreMap, k: int, probabilities: torch.Tensor | None = None) -> list[ClassSelection]:
    """The ``k`` classes with the highest peak probability anywhere on the map."""
    if k < 1:
        raise OptionError("topk", f"must be at least 1, got {k}")
    probabilities = score_map.probabilities() if probabilities is None else probabilities
    peaks = probabilities.flatten(1).amax(dim=1)
    order = torch.argsort(peaks, descending=True, stable=True)[: min(k, peaks.numel())]
    return [ClassSelection(score_map.categories[index], (int(index),)) for index in order.tolist()]


def heatmap_for_class(
    score_map: ScoreMap, selection: ClassSelection, probabilities: torch.Tensor | None = None
) -> ClassHeatmap:
    """Per-pixel probability of ``selection`` (summed over its classes), aligned to the image."""
    probabilities = score_map.probabilities() if probabilities is None else probabilities
    cells = probabilities[list(selection.indices)].sum(dim=0).clamp_(0.0, 1.0)
    return ClassHeatmap.from_pixels(selection, upsample_to_pixels(cells, score_map.geometry, score_map.image_size).numpy())


def class_heatmaps(
    score_map: ScoreMap, classes: Sequence[str] | None = None, topk: int = 3
) -> list[ClassHeatmap]:
    """Heatmaps of the named ``classes``, or of the ``topk`` classes when none are named."""
    probabilities = score_map.probabilities()
    selections = (
        resolve_classes(classes, score_map.categories) if classes else top_classes(score_map, topk, probabilities)
    )
    return [heatmap_for_class(score_map, selection, probabilities) for selection in selections]
