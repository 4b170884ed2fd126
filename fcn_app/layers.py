"""The layer vocabulary shared by conversion, geometry and densification (the bottom of the data flow).

- :func:`pair` reads PyTorch's ``int | (int, int)`` layer arguments;
- :data:`ELEMENTWISE_LAYERS` act on each value alone: they run unchanged on a grid of any size (so a classifier
  head made of them and Linear layers converts exactly), and they leave the geometry of a map unchanged;
- a chain of layers walked in order (:func:`chain_geometry`, :func:`chain_grid`, :func:`chain_activation_values`)
  and the records of where a network's cells sit (:class:`LayerGeometry`, :class:`ScoreLayout`): here, below the
  models, so a network can describe itself (:class:`fcn_app.contracts.ScoringNetwork`); :mod:`fcn_app.geometry`
  builds the rest of its vocabulary on them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from .errors import ConversionError

__all__ = [
    "ELEMENTWISE_LAYERS",
    "AxisLayer",
    "LayerGeometry",
    "ScoreLayout",
    "axis_geometry",
    "axis_layers",
    "axis_length",
    "chain_activation_values",
    "chain_geometry",
    "chain_grid",
    "pair",
    "spatial_layers",
]

#: Layers that act on every value alone (activations, dropout, identity).
ELEMENTWISE_LAYERS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid,
    nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Dropout2d, nn.Identity,
)


def pair(value):
    """``(y, x)`` of a layer argument given as one value or a pair (``None`` entries, as in adaptive pools, kept)."""
    return (value[0], value[1]) if isinstance(value, (tuple, list)) else (value, value)


#: Besides the element-wise layers, these keep every cell where it is (they normalise, they do not move).
_POSITION_PRESERVING = (*ELEMENTWISE_LAYERS, nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d, nn.LocalResponseNorm)
_SPATIAL_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def spatial_layers(model: nn.Module) -> list[nn.Module]:
    """Leaf layers of ``model`` in registration order, checked to be sequential-friendly."""
    leaves = [module for module in model.modules() if not list(module.children())]
    for leaf in leaves:
        if not isinstance(leaf, (*_SPATIAL_LAYERS, *_POSITION_PRESERVING)):
            raise ConversionError(
                f"cannot derive score-cell geometry through a {type(leaf).__name__} layer; supported are Conv2d, "
                "MaxPool2d, AvgPool2d and per-element layers (activations, BatchNorm, Dropout)"
            )
    return [leaf for leaf in leaves if isinstance(leaf, _SPATIAL_LAYERS)]


@dataclass(frozen=True)
class AxisLayer:
    """A convolution or pooling layer along one axis."""

    kernel: int
    stride: int
    padding: int
    dilation: int = 1
    ceil_mode: bool = False

    @property
    def extent(self) -> int:
        """Input cells one output cell reads: ``dilation·(kernel − 1) + 1``."""
        return self.dilation * (self.kernel - 1) + 1

    def output_length(self, length: int) -> int:
        """Output cells for ``length`` input cells (PyTorch's rule, ceil mode included)."""
        span = length + 2 * self.padding - self.extent
        if span < 0:
            return 0
        cells = (math.ceil if self.ceil_mode else math.floor)(span / self.stride) + 1
        if self.ceil_mode and (cells - 1) * self.stride >= length + self.padding:
            cells -= 1  # PyTorch: the last pooling window must start inside the input or left padding
        return cells


def axis_layers(model: nn.Module, axis: int) -> tuple[AxisLayer, ...]:
    """The spatial layers of ``model`` along ``axis`` (0 = rows/y, 1 = columns/x), in order."""
    layers = []
    for layer in spatial_layers(model):
        if isinstance(layer.padding, str):
            raise ConversionError(f"cannot derive geometry through padding={layer.padding!r}; use numeric padding")
        layers.append(AxisLayer(
            kernel=pair(layer.kernel_size)[axis],
            stride=pair(layer.stride if layer.stride is not None else layer.kernel_size)[axis],
            padding=pair(layer.padding)[axis],
            dilation=pair(getattr(layer, "dilation", 1))[axis],
            ceil_mode=bool(getattr(layer, "ceil_mode", False)),
        ))
    return tuple(layers)


def axis_geometry(layers: tuple[AxisLayer, ...]) -> tuple[int, float, int]:
    """``(stride, first centre, receptive field)`` after ``layers``, by the recurrences in the module docstring."""
    stride, center, field = 1, 0.0, 1
    for layer in layers:
        center += ((layer.extent - 1) / 2 - layer.padding) * stride
        field += (layer.extent - 1) * stride
        stride *= layer.stride
    return stride, center, field


def axis_length(layers: tuple[AxisLayer, ...], length: int) -> int:
    """Cells left of ``length`` input cells after ``layers``."""
    for layer in layers:
        length = layer.output_length(length)
    return length


@dataclass(frozen=True)
class LayerGeometry:
    """Geometry of a network's output in *network input* coordinates, per axis ``(y, x)``."""

    stride: tuple[int, int]
    first_center: tuple[float, float]
    receptive_field: tuple[int, int]


@dataclass(frozen=True)
class ScoreLayout:
    """What a network produces for one input size: the grid, where its cells sit, and how it may be tiled.

    ``alignment`` is the step tiles must start at so that every layer sees the same phase as in the whole input
    (the network's total down-sampling); ``window`` is what one cell judges (a classifier's training input size;
    one pixel for a per-pixel output).
    """

    geometry: LayerGeometry
    grid: tuple[int, int]
    alignment: tuple[int, int]
    window: tuple[int, int]


def chain_geometry(model: nn.Module) -> LayerGeometry:
    """Stride, centre of output cell ``(0, 0)`` and receptive field of ``model``'s layers walked in order."""
    rows, cols = (axis_geometry(axis_layers(model, axis)) for axis in range(2))
    return LayerGeometry(stride=(rows[0], cols[0]), first_center=(rows[1], cols[1]),
                         receptive_field=(rows[2], cols[2]))


def chain_grid(model: nn.Module, input_size: tuple[int, int]) -> tuple[int, int]:
    """Output grid ``(rows, cols)`` of ``model``'s layers walked in order, for an input of ``input_size``."""
    return (axis_length(axis_layers(model, 0), int(input_size[0])),
            axis_length(axis_layers(model, 1), int(input_size[1])))


def chain_activation_values(model: nn.Module, input_size: tuple[int, int]) -> int:
    """Peak number of activation values alive during one pass of one image through ``model``'s layers in order.

    During each convolution or pooling both its input and its output are alive (activations are in place); the
    peak is the largest such pair."""
    size = (int(input_size[0]), int(input_size[1]))
    channels = None
    peak = 0
    for layer in spatial_layers(model):
        if isinstance(layer, nn.Conv2d):
            in_channels, out_channels = layer.in_channels, layer.out_channels
        else:
            in_channels = out_channels = channels if channels is not None else 3
        next_size = chain_grid(layer, size)
        values = in_channels * size[0] * size[1] + out_channels * next_size[0] * next_size[1]
        peak = max(peak, values)
        size, channels = next_size, out_channels
    return peak
