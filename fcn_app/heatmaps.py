"""From score maps to per-pixel class heatmaps: choosing classes, softmax, pixel-aligned upsampling, peaks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .classes import ClassSelection, resolve_classes
from .errors import OptionError
from .geometry import ScoreGeometry, upsample_to_pixels
from .scoring import ScoreMap

__all__ = [
    "ClassHeatmap",
    "ClassSelection",
    "center_pixels",
    "class_heatmaps",
    "heatmap_for_class",
    "min_max_scaled",
    "peak_at_cell_centers",
    "resolve_classes",
    "selection_probabilities",
    "top_classes",
]


def _pixels_around(centers: np.ndarray, num_pixels: int) -> np.ndarray:
    """The pixels next to each centre along one axis (rounded down and up, clamped into the image), sorted."""
    around = np.concatenate([np.floor(centers), np.ceil(centers)])
    return np.unique(np.clip(around, 0, num_pixels - 1).astype(np.int64))


def center_pixels(geometry: ScoreGeometry, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)``: along each axis, the pixels next to a cell centre (rounded down and up, clamped into the
    image of ``image_size = (height, width)``) — the only pixels a peak is reported at.

    A map interpolated linearly between cell centres and constant beyond the outermost (the per-pixel map of
    :func:`~fcn_app.geometry.upsample_to_pixels`, or a saliency map resized from its feature grid) reaches its
    maximum at one of them; what they leave out is the plateau beyond the outermost centres, whose first pixel in
    raster order is the image border, not a cell.
    """
    height, width = image_size
    return (_pixels_around(geometry.first_center[0] + geometry.stride[0] * np.arange(geometry.grid[0]), height),
            _pixels_around(geometry.first_center[1] + geometry.stride[1] * np.arange(geometry.grid[1]), width))


def peak_at_cell_centers(values_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
                         geometries: Sequence[ScoreGeometry], image_size: tuple[int, int],
                         cell_values: Sequence[torch.Tensor | np.ndarray] | None = None
                         ) -> tuple[float, tuple[int, int]]:
    """``(value, (x, y))``: the peak of a per-pixel map — the centre of its hottest cell, clamped into the image,
    and the map's value there. The one rule for every peak that is reported (tables, JSON, the cross on the
    overlay): never a pixel of the plateau beyond the outermost cell centres.

    ``values_at(rows, cols)`` gives the map on those rows × columns (a slice of the full map, or the few
    interpolated values when the map itself is not needed: :func:`~fcn_app.resolution.peak_on_pixels`). The cells
    are those ``geometries`` place on the image (several: the levels of a pyramid). The hottest cell is the first
    maximum of ``cell_values`` (one grid per geometry; in geometry order, then raster order) when they are given;
    for a map known only by its pixels (a saliency map), the cell whose centre the map is highest at. A centre
    between pixels is reported as the neighbouring pixel where the map is higher (the first on ties).
    """
    if not geometries:
        raise ValueError("a peak is a cell's centre: give the geometry of the map's cells")
    height, width = image_size
    if cell_values is None:  # rank the cells by the map next to their centres
        best = None
        for geometry in geometries:
            rows, cols = center_pixels(geometry, image_size)
            values = np.asarray(values_at(rows, cols))
            row, col = divmod(int(np.argmax(values)), values.shape[1])
            if best is None or values[row, col] > best[0]:
                best = (float(values[row, col]), (int(cols[col]), int(rows[row])))
        return best
    if len(cell_values) != len(geometries):
        raise ValueError(f"{len(cell_values)} grids of cell values for {len(geometries)} geometries")
    hottest = None
    for geometry, cells in zip(geometries, cell_values):
        cells = np.asarray(cells, dtype=np.float64)
        if cells.shape != tuple(geometry.grid):
            raise ValueError(f"cell values have grid {cells.shape}, geometry says {geometry.grid}")
        index = int(np.argmax(cells))
        if hottest is None or cells.flat[index] > hottest[0]:
            hottest = (cells.flat[index], geometry, divmod(index, cells.shape[1]))
    _, geometry, (row, col) = hottest
    center_x, center_y = geometry.cell_center(row, col)
    rows, cols = _pixels_around(np.array([center_y]), height), _pixels_around(np.array([center_x]), width)
    values = np.asarray(values_at(rows, cols))
    row, col = divmod(int(np.argmax(values)), values.shape[1])
    return float(values[row, col]), (int(cols[col]), int(rows[row]))


def min_max_scaled(values: np.ndarray) -> np.ndarray:
    """``values`` scaled to [0, 1] by their own minimum and maximum, as saliency maps are (pytorch-grad-cam's
    ``scale_cam_image``, torchcam's CAM): they say *where*, not *how much*. A constant map is all zeros."""
    values = np.asarray(values, dtype=np.float32)
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return np.zeros_like(values)
    return ((values - np.float32(low)) / np.float32(high - low)).astype(np.float32)


@dataclass
class ClassHeatmap:
    """A per-pixel map for one selection (a probability, or a saliency map in [0, 1]), with its peak."""

    selection: ClassSelection
    heatmap: np.ndarray  # H×W float32 in [0, 1]
    peak_probability: float  # the map's value at its peak
    peak_pixel: tuple[int, int]  # (x, y): the hottest cell's centre (see peak_at_cell_centers)

    @classmethod
    def from_pixels(cls, selection: ClassSelection, heatmap: np.ndarray, geometries: Sequence[ScoreGeometry],
                    cell_values: Sequence[torch.Tensor | np.ndarray] | None = None) -> "ClassHeatmap":
        """``heatmap`` (``H×W``) of ``selection`` with its peak: the centre of the hottest of the cells
        ``geometries`` place on its pixels, by ``cell_values`` when given (:func:`peak_at_cell_centers`)."""
        value, pixel = peak_at_cell_centers(lambda rows, cols: heatmap[np.ix_(rows, cols)], geometries,
                                            heatmap.shape[:2], cell_values)
        return cls(selection, heatmap, value, pixel)

    def to_dict(self) -> dict:
        return {
            "name": self.selection.name,
            "indices": list(self.selection.indices),
            "peak_probability": round(self.peak_probability, 6),
            "peak_pixel": {"x": self.peak_pixel[0], "y": self.peak_pixel[1]},
        }


def top_classes(score_map: ScoreMap, k: int, probabilities: torch.Tensor | None = None) -> list[ClassSelection]:
    """The ``k`` classes with the highest peak probability anywhere on the map."""
    if k < 1:
        raise OptionError("topk", f"must be at least 1, got {k}")
    probabilities = score_map.probabilities() if probabilities is None else probabilities
    peaks = probabilities.flatten(1).amax(dim=1)
    order = torch.argsort(peaks, descending=True, stable=True)[: min(k, peaks.numel())]
    return [ClassSelection(score_map.categories[index], (int(index),)) for index in order.tolist()]


def selection_probabilities(probabilities: torch.Tensor, selection: ClassSelection) -> torch.Tensor:
    """Per-cell probability of ``selection``: its classes' probabilities (``K×rows×cols``) summed, within [0, 1]."""
    return probabilities[list(selection.indices)].sum(dim=0).clamp_(0.0, 1.0)


def heatmap_for_class(
    score_map: ScoreMap, selection: ClassSelection, probabilities: torch.Tensor | None = None
) -> ClassHeatmap:
    """Per-pixel probability of ``selection`` (summed over its classes), aligned to the image."""
    probabilities = score_map.probabilities() if probabilities is None else probabilities
    cells = selection_probabilities(probabilities, selection)
    heat = upsample_to_pixels(cells, score_map.geometry, score_map.image_size).numpy()
    return ClassHeatmap.from_pixels(selection, heat, [score_map.geometry], [cells])


def class_heatmaps(
    score_map: ScoreMap, classes: Sequence[str] | None = None, topk: int = 3
) -> list[ClassHeatmap]:
    """Heatmaps of the named ``classes``, or of the ``topk`` classes when none are named."""
    probabilities = score_map.probabilities()
    selections = (
        resolve_classes(classes, score_map.categories) if classes else top_classes(score_map, topk, probabilities)
    )
    return [heatmap_for_class(score_map, selection, probabilities) for selection in selections]
