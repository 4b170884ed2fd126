"""The network a converted classifier becomes, and the convolutions its fully connected layers turn into.

:class:`FullyConvolutionalNet` implements :class:`fcn_app.contracts.ScoringNetwork`; :func:`linear_to_conv` and
:func:`grid_linear_layers` build its head. Both conversions (:mod:`.convert` for layer lists, :mod:`.graph` for
traced graphs) build on this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ..errors import ConversionError
from ..layers import LayerGeometry, ScoreLayout, chain_activation_values, chain_geometry, chain_grid, pair

__all__ = ["FullyConvolutionalNet", "grid_linear_layers", "linear_to_conv"]


class FullyConvolutionalNet(nn.Module):
    """A classifier whose head runs as convolutions: ``forward`` maps ``N×3×H×W`` to ``N×K×h'×w'`` scores.

    ``forward_features`` and ``forward_head`` can be called alone. ``input_size`` is the ``(height, width)`` the
    classifier was trained on: the smallest input that yields one score cell, and the size of each cell's window.
    ``mean``/``std`` describe the input normalisation the weights expect, for pixel values scaled to [0, 1].
    """

    def __init__(
        self,
        features: nn.Module,
        head: nn.Sequential,
        *,
        input_size: tuple[int, int],
        num_classes: int,
        categories: Sequence[str] | None = None,
        arch: str = "custom",
        mean: Sequence[float] = (0.0, 0.0, 0.0),
        std: Sequence[float] = (1.0, 1.0, 1.0),
    ) -> None:
        super().__init__()
        self.mean = tuple(float(value) for value in mean)
        self.std = tuple(float(value) for value in std)
        self.features = features
        self.head = head
        self.input_size = (int(input_size[0]), int(input_size[1]))
        #: the size the classifier was trained on; stays when the window changes (objects keep their scale)
        self.training_size = self.input_size
        self.num_classes = int(num_classes)
        self.categories = list(categories) if categories is not None else [str(i) for i in range(num_classes)]
        self.arch = arch
        if len(self.categories) != self.num_classes:
            raise ConversionError(
                f"{len(self.categories)} category names given for a model with {self.num_classes} classes"
            )

    #: the contract's traits (:class:`fcn_app.contracts.ScoringNetwork`): scored channels-last, any tile whose
    #: border is a receptive field away from its cells computes them exactly, no feature sees the whole input
    channels_last = True
    tileable = True
    global_context = False

    @property
    def min_input_size(self) -> tuple[int, int]:
        """Smaller inputs are padded to this (the window): one score cell needs one whole window."""
        return self.input_size

    def layer_geometry(self) -> LayerGeometry:
        """Stride, centre of score cell ``(0, 0)`` and receptive field, from the layers walked in order."""
        return chain_geometry(self)

    def output_grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """Score grid ``(rows, cols)`` for an input of ``input_size``, without running the network."""
        return chain_grid(self, input_size)

    def score_layout(self, input_size: tuple[int, int]) -> ScoreLayout:
        """The score grid for ``input_size``: cells placed by :meth:`layer_geometry`, tiles aligned to the stride,
        each cell judging one ``input_size`` window."""
        layers = self.layer_geometry()
        return ScoreLayout(layers, self.output_grid(input_size), layers.stride, pair(self.input_size))

    def activation_values(self, input_size: tuple[int, int]) -> int:
        """Peak activation values of one image's pass (:func:`fcn_app.layers.chain_activation_values`)."""
        return chain_activation_values(self, input_size)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)

    def forward_head(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.head(feature_map)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))


def linear_to_conv(
    linear: nn.Linear, in_channels: int, kernel_size: tuple[int, int], dilation: tuple[int, int] = (1, 1), *,
    copy_weights: bool = True,
) -> nn.Conv2d:
    """The convolution computing ``linear`` on every ``in_channels×kh×kw`` window (weights copied, shapes asserted).

    ``copy_weights=False``: the convolution's weight is a reshaped *view* of the linear's (no copy), for a
    classifier that is only built to be converted.
    """
    kernel_height, kernel_width = kernel_size
    expected = in_channels * kernel_height * kernel_width
    if linear.in_features != expected:
        raise ConversionError(
            f"Linear layer takes {linear.in_features} inputs but the feature grid is "
            f"{in_channels}×{kernel_height}×{kernel_width} = {expected}; is input_size the size the classifier "
            "was trained on?"
        )
    # built on the meta device and then given the weights: no random initialisation (seconds for VGG16's fc6,
    # 102 M values) that would only be overwritten
    conv = nn.Conv2d(in_channels, linear.out_features, kernel_size=(kernel_height, kernel_width), dilation=dilation,
                     bias=linear.bias is not None, device="meta", dtype=linear.weight.dtype)
    with torch.no_grad():
        weight = linear.weight.reshape(linear.out_features, in_channels, kernel_height, kernel_width)
        assert weight.shape == conv.weight.shape, (weight.shape, conv.weight.shape)
        conv.weight = _copied_parameter(weight) if copy_weights else nn.Parameter(weight.detach())
        if linear.bias is not None:
            conv.bias = _copied_parameter(linear.bias) if copy_weights else nn.Parameter(linear.bias.detach())
    return conv


def _copied_parameter(values: torch.Tensor) -> nn.Parameter:
    """A trainable parameter holding its own contiguous copy of ``values`` (the classifier stays untouched)."""
    return nn.Parameter(values.detach().clone(memory_format=torch.contiguous_format))


def _fold_average_pool(linear: nn.Linear, channels: int, pooled: tuple[int, int], grid: tuple[int, int]) -> nn.Conv2d:
    """First Linear after an adaptive average pool ``grid → pooled``, as one conv over the whole ``grid``."""
    (pooled_h, pooled_w), (grid_h, grid_w) = pooled, grid
    factor_h, factor_w = grid_h // pooled_h, grid_w // pooled_w
    conv = linear_to_conv(linear, channels, pooled)
    folded = nn.Conv2d(channels, linear.out_features, kernel_size=grid, bias=linear.bias is not None,
                       device="meta", dtype=conv.weight.dtype)
    with torch.no_grad():
        expanded = conv.weight.repeat_interleave(factor_h, dim=2).repeat_interleave(factor_w, dim=3)
        folded.weight = _copied_parameter(expanded / (factor_h * factor_w))
        if conv.bias is not None:
            folded.bias = _copied_parameter(conv.bias)
    return folded


def grid_linear_layers(
    linear: nn.Linear, pool: nn.Module | None, channels: int, grid: tuple[int, int], *, copy_weights: bool = True,
) -> list[nn.Module]:
    """The layers computing ``linear(flatten(pool(f)))`` for every ``grid``-sized window of a feature map ``f``.

    ``grid`` is the ``channels×rows×cols`` feature grid at the classifier's training size and ``pool`` the adaptive
    pool between the features and the flatten (``None`` or ``Identity`` if there is none). Without a pool the
    Linear is one ``rows×cols`` convolution; an adaptive pool to the same grid is the identity there and is dropped;
    an average pool to a divisor of the grid is folded into the kernel; a max pool becomes a stride-1 max pool
    followed by a dilated convolution. Uneven bins have no exact convolutional form: :class:`ConversionError`.
    """
    grid = (int(grid[0]), int(grid[1]))
    if pool is None or isinstance(pool, nn.Identity):
        return [linear_to_conv(linear, channels, grid, copy_weights=copy_weights)]
    if not isinstance(pool, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        raise ConversionError(f"unsupported pool {type(pool).__name__} between features and head")
    pooled = grid if pool.output_size is None else pair(pool.output_size)
    pooled = (pooled[0] or grid[0], pooled[1] or grid[1])
    if pooled == grid:
        return [linear_to_conv(linear, channels, grid, copy_weights=copy_weights)]
    if grid[0] % pooled[0] or grid[1] % pooled[1]:
        raise ConversionError(
            f"the adaptive pool maps a {grid[0]}×{grid[1]} grid to {pooled[0]}×{pooled[1]} with uneven bins, "
            f"which has no exact convolutional form; choose an input_size whose feature grid is a multiple "
            f"of {pooled[0]}×{pooled[1]}"
        )
    if isinstance(pool, nn.AdaptiveAvgPool2d):
        return [_fold_average_pool(linear, channels, pooled, grid)]
    factor = (grid[0] // pooled[0], grid[1] // pooled[1])
    return [nn.MaxPool2d(kernel_size=factor, stride=1),
            linear_to_conv(linear, channels, pooled, dilation=factor, copy_weights=copy_weights)]
