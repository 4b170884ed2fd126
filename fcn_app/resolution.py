"""Working resolution: the network sees a resized image, results are given on the original pixels.

Classifiers recognise objects at the scale they were trained on (ImageNet objects fill much of a 224 window).
In a 12 MP photo every window at native resolution sees a patch of texture, so the map answers a question
nobody asked — and costs minutes. The network therefore runs on the image resized to a *working size* (longer
side = a few windows), and the score map is mapped back onto the original pixels through exact per-axis scale
factors, so heatmaps, peaks and boxes refer to the original image.

The default multiple of the window comes from ``scripts/bench_scale.py``: the fastest working size whose
peak-in-object hit rate is within 1 % of the best, on scenes where objects fill 20–70 % of the frame.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from .choices import DEFAULT_WORK_WINDOWS, default_work_size
from .geometry import ScoreGeometry, interpolation_matrix, upsample_to_pixels
from .heatmaps import peak_at_cell_centers
from .scoring import ScoreMap

__all__ = ["DEFAULT_WORK_WINDOWS", "default_work_size", "geometry_on_original", "peak_on_pixels",
           "pixel_scores_on_original", "score_map_on_original", "working_pixels_on_original"]


def score_map_on_original(score_map: ScoreMap, original_size: tuple[int, int]) -> ScoreMap:
    """``score_map`` of an image resized from ``original_size = (height, width)``, placed on the original pixels.

    The factors are per axis (``working / original``; rounding to whole pixels makes them differ slightly), and
    pixel centres stay at integers in both images (see :meth:`fcn_app.geometry.ScoreGeometry.scaled`).
    """
    if tuple(score_map.image_size) == tuple(original_size):
        return score_map
    return replace(score_map, geometry=geometry_on_original(score_map.geometry, score_map.image_size, original_size),
                   image_size=(int(original_size[0]), int(original_size[1])))


def geometry_on_original(geometry: ScoreGeometry, work_size: tuple[int, int],
                         original_size: tuple[int, int]) -> ScoreGeometry:
    """``geometry`` of cells on an image resized from ``original_size`` to ``work_size`` (both ``(height, width)``),
    placed on the original's pixels (per-axis factors, pixel centres aligned: as bilinear resizing maps them)."""
    if tuple(work_size) == tuple(original_size):
        return geometry
    return geometry.scaled(_work_factor(work_size, original_size))


def _work_factor(work_size: tuple[int, int], original_size: tuple[int, int]) -> tuple[float, float]:
    return (work_size[0] / original_size[0], work_size[1] / original_size[1])


def working_pixels_on_original(work_size: tuple[int, int], original_size: tuple[int, int]) -> ScoreGeometry:
    """The pixels of an image resized from ``original_size`` to ``work_size`` (both ``(height, width)``) as a grid
    placed on the original: ``cell_center(row, col)`` is where working pixel ``(row, col)`` lies in original
    pixel coordinates — the mapping of :func:`score_map_on_original`, for things found on the working pixels."""
    pixel_grid = ScoreGeometry(grid=(int(work_size[0]), int(work_size[1])), stride=(1.0, 1.0),
                               first_center=(0.0, 0.0), window=(1.0, 1.0), receptive_field=(1.0, 1.0))
    return pixel_grid.scaled(_work_factor(work_size, original_size))


def _is_resized_pixel_grid(geometry: ScoreGeometry, original_size: tuple[int, int]) -> bool:
    """Whether the cells are the pixels of an image of ``geometry.grid`` pixels resized onto ``original_size``
    (pixel centres aligned): then bilinear resizing with ``align_corners=False`` is the geometry's interpolation."""
    for axis in range(2):
        stride = original_size[axis] / geometry.grid[axis]
        if not (math.isclose(geometry.stride[axis], stride, rel_tol=1e-9)
                and math.isclose(geometry.first_center[axis], stride / 2 - 0.5, rel_tol=1e-9, abs_tol=1e-9)):
            return False
    return True


def pixel_scores_on_original(score_map: ScoreMap, original_size: tuple[int, int]) -> ScoreMap:
    """A per-pixel score map (a segmentation model's logits) of an image resized from ``original_size =
    (height, width)`` — or of a pyramid level — as one score per original pixel.

    The values are those of :func:`score_map_on_original` followed by
    :func:`~fcn_app.geometry.upsample_to_pixels` (linear between cell centres, constant beyond the outermost);
    for the pixels of a resized image that is bilinear resizing with pixel centres aligned, computed with
    ``F.interpolate`` (two taps per pixel and axis instead of dense ``H×rows`` and ``W×cols`` matrices, which
    matters for a photo's millions of pixels). Other grids go through ``upsample_to_pixels`` itself.
    """
    original_size = (int(original_size[0]), int(original_size[1]))
    mapped = score_map_on_original(score_map, original_size)
    geometry = mapped.geometry
    if geometry.is_pixel_grid and geometry.grid == original_size:
        return mapped
    if _is_resized_pixel_grid(geometry, original_size):
        logits = F.interpolate(mapped.logits[None].float(), size=original_size, mode="bilinear",
                               align_corners=False)[0]
    else:
        logits = upsample_to_pixels(mapped.logits, geometry, original_size)
    return replace(mapped, logits=logits,
                   geometry=replace(geometry, grid=original_size, stride=(1.0, 1.0), first_center=(0.0, 0.0)))


def peak_on_pixels(
    cell_values: torch.Tensor, geometry: ScoreGeometry, image_size: tuple[int, int]
) -> tuple[float, tuple[int, int]]:
    """The peak of ``upsample_to_pixels(cell_values, geometry, image_size)`` — the hottest cell's centre and the
    map's value there (:func:`~fcn_app.heatmaps.peak_at_cell_centers`) — without computing the ``H×W`` map (a 12 MP
    map per class is 12 million interpolations; this is a handful): the map is evaluated only at the pixels next to that
    centre, with the same interpolation weights.
    """
    height, width = image_size
    along_y = interpolation_matrix(height, geometry.grid[0], geometry.first_center[0], geometry.stride[0])
    along_x = interpolation_matrix(width, geometry.grid[1], geometry.first_center[1], geometry.stride[1])
    values = cell_values.to(torch.float32).cpu()

    def values_at(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        return (along_y[torch.from_numpy(rows)] @ values @ along_x[torch.from_numpy(cols)].T).numpy()

    return peak_at_cell_centers(values_at, [geometry], image_size, [values])
