"""Where score cells sit on the image, and how cell values become per-pixel maps.

Coordinates: pixel ``p`` covers ``[p - 0.5, p + 0.5)``, i.e. pixel centres are at integers; rows are ``y``,
columns ``x``; tuples are ``(y, x)``.

The geometry of a fully convolutional network is derived from its layers, not hard-coded. Walking the layers in
order with the usual receptive-field recurrences (kernel ``k``, stride ``s``, padding ``p``, dilation ``d``,
``k' = d·(k − 1) + 1``)::

    center₀ ← center₀ + ((k' − 1)/2 − p) · jump      jump ← jump · s      field ← field + (k' − 1) · jump

gives, for VGG16 (torchvision layout): pool5 cell ``a`` centred at ``32·a + 15.5``; converted fc6 cell ``i``
centred at ``32·i + 111.5`` with the 224×224 window ``[32·i, 32·i + 224)`` and a 404-pixel receptive field.

Per-pixel maps interpolate *between cell centres*: pixel ``y`` sits at fractional cell ``u = (y − c₀)/stride``,
clamped to ``[0, cells − 1]``, and takes ``(1 − frac)·v[⌊u⌋] + frac·v[⌊u⌋ + 1]``. A cell's value lands exactly on
its window centre; beyond the outermost centres the map is constant. This is separable, so a map is
``R_y · V · R_xᵀ`` with two small interpolation matrices. (A naive stretch of the grid over the image would
shift everything by up to half a window.)

Inputs smaller than the classifier's window on a side are padded (centred) to the window, never stretched, so
a map always exists; the padding offset is part of the geometry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from .errors import ConversionError

__all__ = [
    "ELEMENTWISE_LAYERS",
    "LayerGeometry",
    "ScoreGeometry",
    "centered_padding",
    "interpolation_matrix",
    "network_geometry",
    "output_grid_size",
    "spatial_layers",
    "upsample_to_pixels",
]

#: Layers that act per position (or per channel) and leave the geometry unchanged.
ELEMENTWISE_LAYERS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid,
    nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Dropout2d, nn.Identity, nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d,
    nn.LocalResponseNorm,
)
_SPATIAL_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def spatial_layers(model: nn.Module) -> list[nn.Module]:
    """Leaf layers of ``model`` in registration order, checked to be sequential-friendly."""
    leaves = [module for module in model.modules() if not list(module.children())]
    for leaf in leaves:
        if not isinstance(leaf, (*_SPATIAL_LAYERS, *ELEMENTWISE_LAYERS)):
            raise ConversionError(
                f"cannot derive score-cell geometry through a {type(leaf).__name__} layer; supported are Conv2d, "
                "MaxPool2d, AvgPool2d and per-element layers (activations, BatchNorm, Dropout)"
            )
    return [leaf for leaf in leaves if isinstance(leaf, _SPATIAL_LAYERS)]


@dataclass(frozen=True)
class LayerGeometry:
    """Geometry of a network's output in *network input* coordinates, per axis ``(y, x)``."""

    stride: tuple[int, int]
    first_center: tuple[float, float]
    receptive_field: tuple[int, int]


def network_geometry(model: nn.Module) -> LayerGeometry:
    """Stride, centre of output cell ``(0, 0)`` and receptive field of ``model`` (layers walked in order)."""
    measured = getattr(model, "layer_geometry", None)
    if callable(measured):  # a graph network has no layer order to walk; it measures itself (models/graph.py)
        return measured()
    stride = [1, 1]
    center = [0.0, 0.0]
    field = [1, 1]
    for layer in spatial_layers(model):
        kernel = _pair(layer.kernel_size)
        step = _pair(layer.stride if layer.stride is not None else layer.kernel_size)
        padding = layer.padding if not isinstance(layer.padding, str) else None
        if padding is None:
            raise ConversionError(f"cannot derive geometry through padding={layer.padding!r}; use numeric padding")
        padding = _pair(padding)
        dilation = _pair(getattr(layer, "dilation", 1))
        for axis in range(2):
            effective = dilation[axis] * (kernel[axis] - 1) + 1
            center[axis] += ((effective - 1) / 2 - padding[axis]) * stride[axis]
            field[axis] += (effective - 1) * stride[axis]
            stride[axis] *= step[axis]
    return LayerGeometry(stride=(stride[0], stride[1]), first_center=(center[0], center[1]),
                         receptive_field=(field[0], field[1]))


def output_grid_size(model: nn.Module, input_size: tuple[int, int]) -> tuple[int, int]:
    """Score grid ``(rows, cols)`` that ``model`` produces for an input of ``input_size``, without running it."""
    measured = getattr(model, "output_grid", None)
    if callable(measured):  # graph networks: shapes from a meta-device pass (models/graph.py)
        return measured(input_size)
    size = [int(input_size[0]), int(input_size[1])]
    for layer in spatial_layers(model):
        kernel = _pair(layer.kernel_size)
        step = _pair(layer.stride if layer.stride is not None else layer.kernel_size)
        padding = _pair(layer.padding)
        dilation = _pair(getattr(layer, "dilation", 1))
        ceil_mode = getattr(layer, "ceil_mode", False)
        for axis in range(2):
            span = size[axis] + 2 * padding[axis] - dilation[axis] * (kernel[axis] - 1) - 1
            if span < 0:
                size[axis] = 0
                continue
            cells = (math.ceil if ceil_mode else math.floor)(span / step[axis]) + 1
            if ceil_mode and (cells - 1) * step[axis] >= size[axis] + padding[axis]:
                cells -= 1  # PyTorch: the last pooling window must start inside the input or left padding
            size[axis] = cells
    return size[0], size[1]


@dataclass(frozen=True)
class ScoreGeometry:
    """Where the cells of a score grid sit in *image* pixel coordinates (after undoing padding and scaling).

    Attributes:
        grid: ``(rows, cols)`` of the score grid.
        stride: pixels between neighbouring cell centres.
        first_center: pixel position of the centre of cell ``(0, 0)`` (may lie outside the image).
        window: size of the window the classifier looks at for each cell (its training input size).
        receptive_field: pixels that can influence one cell.
    """

    grid: tuple[int, int]
    stride: tuple[float, float]
    first_center: tuple[float, float]
    window: tuple[float, float]
    receptive_field: tuple[float, float]

    @classmethod
    def for_network(
        cls, layers: LayerGeometry, grid: tuple[int, int], window: tuple[int, int], offset: tuple[float, float] = (0, 0)
    ) -> "ScoreGeometry":
        """Geometry of ``grid`` for an input that was padded by ``offset = (top, left)`` pixels."""
        return cls(
            grid=(int(grid[0]), int(grid[1])),
            stride=(float(layers.stride[0]), float(layers.stride[1])),
            first_center=(layers.first_center[0] - offset[0], layers.first_center[1] - offset[1]),
            window=(float(window[0]), float(window[1])),
            receptive_field=(float(layers.receptive_field[0]), float(layers.receptive_field[1])),
        )

    def scaled(self, factor: float | tuple[float, float]) -> "ScoreGeometry":
        """Geometry in the coordinates of an image ``1/factor`` times the size (a pyramid level → original).

        ``factor`` may be a ``(y, x)`` pair: rounding a resized image to whole pixels scales the axes slightly
        differently.
        """
        factor_y, factor_x = (factor, factor) if isinstance(factor, (int, float)) else factor

        def to_original(value: float, axis_factor: float) -> float:
            return (value + 0.5) / axis_factor - 0.5  # pixel centres at integers in both images

        return replace(
            self,
            stride=(self.stride[0] / factor_y, self.stride[1] / factor_x),
            first_center=(to_original(self.first_center[0], factor_y), to_original(self.first_center[1], factor_x)),
            window=(self.window[0] / factor_y, self.window[1] / factor_x),
            receptive_field=(self.receptive_field[0] / factor_y, self.receptive_field[1] / factor_x),
        )

    def cell_centers(self, axis: int) -> np.ndarray:
        """Pixel positions of the cell centres along ``axis`` (0 = rows/y, 1 = columns/x)."""
        return self.first_center[axis] + self.stride[axis] * np.arange(self.grid[axis], dtype=np.float64)

    def cell_center(self, row: float, col: float) -> tuple[float, float]:
        """``(x, y)`` pixel position of (possibly fractional) cell ``(row, col)``."""
        return (self.first_center[1] + self.stride[1] * col, self.first_center[0] + self.stride[0] * row)

    def window_box(self, row: float, col: float) -> tuple[float, float, float, float]:
        """The classifier's window around cell ``(row, col)`` as ``(x, y, w, h)`` in pixels (edges, not centres)."""
        center_x, center_y = self.cell_center(row, col)
        height, width = self.window
        return (center_x + 0.5 - width / 2, center_y + 0.5 - height / 2, width, height)

    def to_dict(self) -> dict:
        return {
            "grid": list(self.grid),
            "stride": list(self.stride),
            "first_center": list(self.first_center),
            "window": list(self.window),
            "receptive_field": list(self.receptive_field),
        }


def centered_padding(size: tuple[int, int], minimum: tuple[int, int]) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` padding that brings ``size`` up to at least ``minimum``, centred."""
    extra_h = max(0, int(minimum[0]) - int(size[0]))
    extra_w = max(0, int(minimum[1]) - int(size[1]))
    return (extra_h // 2, extra_h - extra_h // 2, extra_w // 2, extra_w - extra_w // 2)


def interpolation_matrix(num_pixels: int, num_cells: int, first_center: float, stride: float) -> torch.Tensor:
    """``num_pixels × num_cells`` matrix of linear-interpolation weights between cell centres (rows sum to 1)."""
    matrix = torch.zeros(num_pixels, max(num_cells, 1), dtype=torch.float32)
    if num_cells <= 1:
        matrix[:, 0] = 1.0
        return matrix
    position = (torch.arange(num_pixels, dtype=torch.float64) - first_center) / stride
    position = position.clamp(0.0, num_cells - 1.0)
    lower = position.floor().long().clamp(max=num_cells - 2)
    fraction = (position - lower).float()
    rows = torch.arange(num_pixels)
    matrix[rows, lower] = 1.0 - fraction
    matrix[rows, lower + 1] = fraction
    return matrix


def upsample_to_pixels(cell_values: torch.Tensor, geometry: ScoreGeometry, image_size: tuple[int, int]) -> torch.Tensor:
    """Per-pixel map(s) ``[..., H, W]`` from cell values ``[..., rows, cols]``, aligned as the module describes."""
    rows, cols = cell_values.shape[-2:]
    if (rows, cols) != geometry.grid:
        raise ValueError(f"cell values have grid {(rows, cols)}, geometry says {geometry.grid}")
    height, width = image_size
    along_y = interpolation_matrix(height, rows, geometry.first_center[0], geometry.stride[0])
    along_x = interpolation_matrix(width, cols, geometry.first_center[1], geometry.stride[1])
    values = cell_values.to(torch.float32).cpu()
    return torch.einsum("hr,...rc,wc->...hw", along_y, values, along_x)
