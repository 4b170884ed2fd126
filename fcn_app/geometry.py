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

Everything that places cells speaks this module's vocabulary: :class:`AxisLayer` (one layer along one axis),
:class:`AxisSpan` (a run of cells: first centre, stride, count), :class:`LayerGeometry` and :class:`ScoreGeometry`
(where a network's cells sit), :class:`ScoreLayout` (what a network produces for an input size), the tiling plan
(:class:`AxisTile`, :func:`plan_axis`) and the skip alignment of FCN-16s/8s (:func:`plan_skip_axis`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, replace

import torch
from torch import nn

from .contracts import ScoringNetwork
from .errors import ConversionError
from .layers import (
    AxisLayer,
    LayerGeometry,
    ScoreLayout,
    axis_layers,
    chain_geometry,
    chain_grid,
    spatial_layers,
)
from .layers import axis_geometry as _axis_geometry
from .layers import axis_length as _axis_length
from .models.network import FullyConvolutionalNet

__all__ = [
    "AxisLayer",
    "AxisSpan",
    "AxisTile",
    "LayerGeometry",
    "ScoreGeometry",
    "ScoreLayout",
    "SkipAxisPlan",
    "Tile",
    "axis_layers",
    "centered_padding",
    "interpolation_matrix",
    "network_geometry",
    "output_grid_size",
    "plan_axis",
    "plan_context_axis",
    "plan_skip_axis",
    "score_layout",
    "spatial_layers",
    "upsample_to_pixels",
]

def network_geometry(model: nn.Module) -> LayerGeometry:
    """Stride, centre of output cell ``(0, 0)`` and receptive field of ``model``: a converted classifier's
    :meth:`~fcn_app.models.FullyConvolutionalNet.layer_geometry` (a graph network measures itself), any other
    module's layers walked in order."""
    if isinstance(model, FullyConvolutionalNet):
        return model.layer_geometry()
    return chain_geometry(model)


def output_grid_size(model: nn.Module, input_size: tuple[int, int]) -> tuple[int, int]:
    """Score grid ``(rows, cols)`` that ``model`` produces for an input of ``input_size``, without running it."""
    if isinstance(model, FullyConvolutionalNet):
        return model.output_grid(input_size)
    return chain_grid(model, input_size)


def score_layout(network: ScoringNetwork, input_size: tuple[int, int]) -> ScoreLayout:
    """The :class:`ScoreLayout` of ``network`` for an input of ``input_size`` (the network's own
    :meth:`~fcn_app.contracts.ScoringNetwork.score_layout`)."""
    return network.score_layout(input_size)


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

    @property
    def is_pixel_grid(self) -> bool:
        """Whether cell ``(i, j)`` is pixel ``(i, j)`` (a per-pixel output such as a segmentation's)."""
        return self.stride == (1.0, 1.0) and self.first_center == (0.0, 0.0)

    def cell_center(self, row: float, col: float) -> tuple[float, float]:
        """``(x, y)`` pixel position of (possibly fractional) cell ``(row, col)``."""
        return (self.first_center[1] + self.stride[1] * col, self.first_center[0] + self.stride[0] * row)

    def cell_at(self, x: float, y: float) -> tuple[float, float]:
        """Fractional cell ``(row, col)`` whose centre is pixel ``(x, y)`` (the inverse of :meth:`cell_center`)."""
        return ((y - self.first_center[0]) / self.stride[0], (x - self.first_center[1]) / self.stride[1])

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
    # every class of an image, and every image of a folder or a server of one size, needs the same matrices
    return _interpolation_matrix(int(num_pixels), int(num_cells), float(first_center), float(stride)).clone()


@functools.lru_cache(maxsize=64)
def _interpolation_matrix(num_pixels: int, num_cells: int, first_center: float, stride: float) -> torch.Tensor:
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
    values = cell_values.to(torch.float32).cpu()
    height, width = image_size
    if geometry.is_pixel_grid and geometry.grid == (height, width):
        return values  # already one value per pixel: interpolation would be the identity
    along_y = interpolation_matrix(height, rows, geometry.first_center[0], geometry.stride[0])
    along_x = interpolation_matrix(width, cols, geometry.first_center[1], geometry.stride[1])
    return torch.einsum("hr,...rc,wc->...hw", along_y, values, along_x)


# --- tiling plans ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AxisTile:
    """One tile along one axis: input pixels ``[input_start, input_stop)`` → score cells ``[cell_start, cell_stop)``.

    ``input_start`` is a multiple of the network's alignment, so tile cell ``j`` is image cell ``j + cell_offset``.
    """

    input_start: int
    input_stop: int
    cell_start: int
    cell_stop: int
    cell_offset: int


@dataclass(frozen=True)
class Tile:
    """A 2-D tile: the product of a row tile and a column tile."""

    rows: AxisTile
    cols: AxisTile

    @property
    def input_size(self) -> tuple[int, int]:
        return (self.rows.input_stop - self.rows.input_start, self.cols.input_stop - self.cols.input_start)


def plan_axis(
    length: int, cells: int, stride: int, first_center: float, receptive_field: int, cells_per_tile: int,
    alignment: int | None = None,
) -> list[AxisTile]:
    """Split ``cells`` score cells of an input ``length`` pixels long into runs of at most ``cells_per_tile``.

    Each run gets the smallest input range that starts at a multiple of ``alignment`` (default: ``stride``) and
    holds the receptive field of every cell in the run (clipped to the image, whose own edges the untiled pass
    sees too).
    """
    if cells_per_tile < 1:
        raise ValueError(f"cells_per_tile must be at least 1, got {cells_per_tile}")
    alignment = alignment or stride
    half_field = (receptive_field - 1) / 2
    tiles = []
    for cell_start in range(0, cells, cells_per_tile):
        cell_stop = min(cells, cell_start + cells_per_tile)
        first_pixel = math.floor(first_center + stride * cell_start - half_field)
        last_pixel = math.ceil(first_center + stride * (cell_stop - 1) + half_field)
        input_start = 0 if cell_start == 0 else max(0, (first_pixel // alignment) * alignment)
        if cell_stop == cells:
            input_stop = length
        else:  # keep the tile a whole number of steps long so every layer's grid ends cleanly
            input_stop = min(length, input_start + math.ceil((last_pixel + 1 - input_start) / alignment) * alignment)
        tiles.append(AxisTile(input_start, input_stop, cell_start, cell_stop, input_start // stride))
    return tiles


# --- skip alignment of FCN-16s/8s --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AxisSpan:
    """A run of cells along one axis: centre of the first (in input pixels), stride, number of cells."""

    first: float
    stride: float
    length: int

    @classmethod
    def after(cls, layers: tuple[AxisLayer, ...], length: int) -> "AxisSpan":
        """The cells ``layers`` produce from ``length`` input pixels."""
        stride, first, _ = _axis_geometry(layers)
        return cls(first, stride, _axis_length(layers, length))

    @property
    def last(self) -> float:
        return self.first + self.stride * (self.length - 1)

    def upsampled(self, factor: int) -> tuple["AxisSpan", slice]:
        """Span of a bilinear ``ConvTranspose2d(2f, stride f)`` output after cropping its partial-weight rim.

        Input cell ``i`` lands at output index ``f·i + f − ½``; indices ``[f, n·f)`` receive full weight from two
        cells (exact linear interpolation between neighbouring centres) and are kept.
        """
        stride = self.stride / factor
        keep = slice(factor, self.length * factor)
        return AxisSpan(self.first + 0.5 * stride, stride, max(0, (self.length - 1) * factor)), keep

    def intersect(self, other: "AxisSpan") -> tuple["AxisSpan", slice, slice]:
        """The cells two same-stride spans share, and the slices selecting them in each."""
        offset = (other.first - self.first) / self.stride
        if abs(self.stride - other.stride) > 1e-9 or abs(offset - round(offset)) > 1e-6:
            raise ConversionError(
                f"cannot fuse maps with strides {self.stride}/{other.stride} whose cells are {offset:g} cells "
                "apart; the skip layer's cells do not line up with the upsampled scores"
            )
        start, end = max(self.first, other.first), min(self.last, other.last)
        length = max(0, int(round((end - start) / self.stride)) + 1)
        start_self = int(round((start - self.first) / self.stride))
        start_other = int(round((start - other.first) / other.stride))
        return (AxisSpan(start, self.stride, length), slice(start_self, start_self + length),
                slice(start_other, start_other + length))


@dataclass(frozen=True)
class SkipAxisPlan:
    """How one axis of an input is run through an FCN with skips: input padding, the crops at each fusion, and
    where the final map's pixel 0 starts."""

    padding: tuple[int, int]  # (before, after) input pixels
    coarse: slice  # crop of the first upsampling
    fusions: tuple[tuple[slice, slice, slice], ...]  # (upsampled crop ∘ intersection, skip slice, next crop)
    start: int  # index of input pixel 0 in the final map


def _fuse_axis(
    score: tuple[AxisLayer, ...], skips: tuple[tuple[AxisLayer, ...], ...], factors: tuple[int, ...], padded: int
) -> tuple[slice, tuple[tuple[slice, slice, slice], ...], AxisSpan]:
    span, coarse = AxisSpan.after(score, padded).upsampled(factors[0])
    fusions = []
    for skip, factor in zip(skips, factors[1:]):
        fused, in_upsampled, in_skip = span.intersect(AxisSpan.after(skip, padded))
        span, keep = fused.upsampled(factor)
        fusions.append((in_upsampled, in_skip, keep))
    return coarse, tuple(fusions), span


@functools.lru_cache(maxsize=1024)
def plan_skip_axis(
    score: tuple[AxisLayer, ...], skips: tuple[tuple[AxisLayer, ...], ...], factors: tuple[int, ...], length: int
) -> SkipAxisPlan:
    """Plan one axis of ``length`` pixels through an FCN whose scores come from the ``score`` layers and whose
    skips from the ``skips`` layer chains (coarse to fine), upsampled by ``factors`` (one more than skips).

    The input is padded (mean colour, zero after normalisation) just enough that the final map covers every input
    pixel; the plan says where each map is cropped so that fused maps line up cell for cell.
    """
    first = _fuse_axis(score, skips, factors, 4 * _axis_geometry(score)[2] + length)[2].first
    if abs(first - round(first)) > 1e-6:
        raise ConversionError(f"the final map's pixels sit at half-pixel positions ({first}); cannot align")
    before = max(0, math.ceil(first - 1e-9))
    after = 0
    while True:
        coarse, fusions, span = _fuse_axis(score, skips, factors, before + length + after)
        if span.length > 0 and span.first + span.length - 1 >= before + length - 1:
            break
        after += 1
    return SkipAxisPlan((before, after), coarse, fusions, int(round(before - span.first)))


def _upsampled_whole(first: float, stride: float, length: int, factor: int) -> tuple[float, float, int]:
    """``(first centre, stride, cells)`` of a whole ``ConvTranspose2d(2f, stride f)`` output, partial rims kept:
    input cell ``i`` lands at output index ``f·i + f − ½``, and ``(n + 1)·f`` indices come out of ``n`` cells."""
    step = stride / factor
    return first - (factor - 0.5) * step, step, (length + 1) * factor


@functools.lru_cache(maxsize=1024)
def plan_context_axis(
    score: tuple[AxisLayer, ...], skips: tuple[tuple[AxisLayer, ...], ...], factors: tuple[int, ...], length: int,
    context: int,
) -> SkipAxisPlan:
    """Plan one axis the way the reference FCNs (Caffe) run: the input gets ``context`` pixels of mean colour on
    both sides, every upsampled map is kept whole (its partial-weight rim included), and each skip map and the
    final map are cropped where their cells line up with it — the offsets Caffe's ``Crop`` layer derives from
    the layers' coordinate maps (for VGG16 with 100 px of context: 19 for FCN-32s; 5 and 27 for 16s; 5, 9 and
    31 for 8s). Unlike :func:`plan_skip_axis`, pixels near the border may read a single coarse cell, as they did
    in training; the context is the model's, so the plan never adds padding of its own.
    """
    padded = length + 2 * context
    stride, first, _ = _axis_geometry(score)
    first, stride, cells = _upsampled_whole(first, stride, _axis_length(score, padded), factors[0])
    fusions = []
    for skip, factor in zip(skips, factors[1:]):
        skip_stride, skip_first, _ = _axis_geometry(skip)
        skip_cells = _axis_length(skip, padded)
        offset = (first - skip_first) / skip_stride
        if abs(stride - skip_stride) > 1e-9 or abs(offset - round(offset)) > 1e-6 or round(offset) < 0 \
                or round(offset) + cells > skip_cells:
            raise ConversionError(
                f"with {context} px of context, the skip map ({skip_cells} cells, stride {skip_stride}) does not "
                f"cover the upsampled scores ({cells} cells, stride {stride:g}, {offset:g} cells in) for a "
                f"{length}-pixel input"
            )
        offset = int(round(offset))
        fusions.append((slice(None), slice(offset, offset + cells), slice(None)))
        first, stride, cells = _upsampled_whole(first, stride, cells, factor)
    start = (context - first) / stride  # input pixel 0 sits at padded coordinate `context`
    if abs(stride - 1) > 1e-9 or abs(start - round(start)) > 1e-6 or round(start) < 0 \
            or round(start) + length > cells:
        raise ConversionError(
            f"with {context} px of context, the final map ({cells} cells, stride {stride:g}, first at "
            f"{first:g}) does not cover a {length}-pixel input"
        )
    return SkipAxisPlan((context, context), slice(None), tuple(fusions), int(round(start)))
