"""Turning an image classifier into an exactly equivalent fully convolutional network.

A classifier of the shape ``features → [adaptive pool] → flatten → Linear/ReLU/Dropout head`` computes, for a
``C×h×w`` feature grid, ``W₁·vec(f) + b₁`` in its first Linear layer. That is exactly a convolution with
``out_features`` kernels of shape ``C×h×w`` and no padding, because ``torch.flatten`` orders the grid as
``(c, y, x)`` — the same order as a Conv2d weight ``(out, c, y, x)``. The following Linear layers act on a
1×1 grid and become 1×1 convolutions. After the change the network accepts larger inputs and returns one score
vector per window: what the classifier would say about each ``input_size`` window, computed in one pass.

An adaptive pool between features and head is *folded in* rather than kept, so the output grows with the input:

- if the features already have the pooled size at the training input (VGG and AlexNet at 224), it is the
  identity and is dropped;
- an adaptive *average* pool whose input size is a multiple of its output size becomes part of the first
  kernel: ``W'[o, c, y, x] = W[o, c, y // kh, x // kw] / (kh·kw)`` — exact, and a model trained with global
  average pooling on 32×32 crops turns into a sliding 32×32 classifier;
- an adaptive *max* pool becomes ``MaxPool2d(kh×kw, stride 1)`` followed by a first convolution dilated by
  ``(kh, kw)``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from ..device import module_device
from ..errors import ConversionError
from ..layers import ELEMENTWISE_LAYERS, pair

__all__ = [
    "FullyConvolutionalNet",
    "linear_to_conv",
    "grid_linear_layers",
    "split_classifier",
    "to_fully_convolutional",
]

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

    @property
    def min_input_size(self) -> tuple[int, int]:
        """Smaller inputs are padded to this (the window): one score cell needs one whole window."""
        return self.input_size

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.features(images)

    def forward_head(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.head(feature_map)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))


def split_classifier(model: nn.Module) -> tuple[nn.Module, nn.Module | None, list[nn.Module]]:
    """Split ``model`` into ``(features, adaptive_pool_or_None, head_layers)``.

    Understands torchvision's layout (``.features``, optional ``.avgpool``, ``.classifier``) and plain
    ``nn.Sequential`` models (everything before the first ``Flatten``/``Linear`` is the feature extractor; a
    trailing adaptive pool there is the pool).
    """
    if hasattr(model, "features") and hasattr(model, "classifier"):
        features = model.features
        pool = getattr(model, "avgpool", None)
        classifier = model.classifier
        head_layers = list(classifier) if isinstance(classifier, nn.Sequential) else [classifier]
        return features, pool, head_layers
    if isinstance(model, nn.Sequential):
        layers = list(model)
        split = next((i for i, layer in enumerate(layers) if isinstance(layer, (nn.Flatten, nn.Linear))), None)
        if split is None or split == 0:
            raise ConversionError(
                "the nn.Sequential model has no feature extractor followed by a Flatten/Linear head; expected "
                "conv layers, then Flatten, then Linear/ReLU/Dropout layers"
            )
        feature_layers, head_layers = layers[:split], layers[split:]
        pool = None
        if isinstance(feature_layers[-1], (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            pool = feature_layers.pop()
        if not feature_layers:
            raise ConversionError("the nn.Sequential model has no convolutional layers before its head")
        return nn.Sequential(*feature_layers), pool, head_layers
    raise ConversionError(
        f"cannot find the feature extractor and head of a {type(model).__name__}: expected attributes "
        "`features` and `classifier` (torchvision VGG/AlexNet layout) or an nn.Sequential; otherwise pass "
        "features= and head= to to_fully_convolutional()"
    )


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


def _pooled_side(size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool) -> int:
    """Output length of a pooling window along one axis, as PyTorch computes it (``ceil_mode`` included)."""
    span = size + 2 * padding - dilation * (kernel - 1) - 1
    out = (-(-span // stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window may not start in the right padding
    return out


def _sequential_grid(features: nn.Module, in_channels: int, input_size: tuple[int, int]
                     ) -> tuple[int, int, int] | None:
    """``(channels, rows, cols)`` of ``features`` on an input of ``input_size``, by each layer's size formula, for an
    ``nn.Sequential`` of convolutions, max/average pools, batch norms and per-value layers (VGG, AlexNet); ``None``
    for anything else (or an input too small), which is then run for real. Running VGG16's convolutions at 224 px
    just for this would cost more than all the rest of building the network."""
    if not isinstance(features, nn.Sequential):
        return None
    channels, (height, width) = in_channels, input_size
    for layer in features:
        if isinstance(layer, nn.Conv2d) and not isinstance(layer.padding, str) and layer.in_channels == channels:
            sides = zip((height, width), layer.kernel_size, layer.stride, layer.padding, layer.dilation)
            height, width = (_pooled_side(size, *numbers, ceil_mode=False) for size, *numbers in sides)
            channels = layer.out_channels
        elif isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
            kernel = pair(layer.kernel_size)
            stride = pair(layer.stride if layer.stride else layer.kernel_size)
            dilation = pair(layer.dilation) if isinstance(layer, nn.MaxPool2d) else (1, 1)
            sides = zip((height, width), kernel, stride, pair(layer.padding), dilation)
            height, width = (_pooled_side(size, *numbers, ceil_mode=layer.ceil_mode) for size, *numbers in sides)
        elif not isinstance(layer, (nn.BatchNorm2d, *ELEMENTWISE_LAYERS)):
            return None
        if height < 1 or width < 1:
            return None
    return channels, height, width


@torch.no_grad()
def _feature_grid(features: nn.Module, in_channels: int, input_size: tuple[int, int]) -> tuple[int, int, int]:
    computed = _sequential_grid(features, in_channels, input_size)
    if computed is not None:
        return computed
    parameter = next(iter(features.parameters()), None)
    device = module_device(features)
    dtype = parameter.dtype if parameter is not None else torch.float32
    was_training = features.training
    features.eval()
    try:
        output = features(torch.zeros(1, in_channels, *input_size, device=device, dtype=dtype))
    except RuntimeError as error:
        raise ConversionError(
            f"the feature extractor cannot run on a {in_channels}×{input_size[0]}×{input_size[1]} input ({error})"
        ) from None
    finally:
        features.train(was_training)
    if output.dim() != 4:
        raise ConversionError(f"the feature extractor returns a {output.dim()}-D tensor; expected N×C×H×W")
    return int(output.shape[1]), int(output.shape[2]), int(output.shape[3])


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


def to_fully_convolutional(
    model: nn.Module | None = None,
    *,
    features: nn.Module | None = None,
    head: Sequence[nn.Module] | nn.Module | None = None,
    pool: nn.Module | None = None,
    input_size: int | tuple[int, int] = 224,
    in_channels: int = 3,
    categories: Sequence[str] | None = None,
    arch: str | None = None,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
    copy_weights: bool = True,
) -> FullyConvolutionalNet:
    """Convert a classifier into a :class:`FullyConvolutionalNet` computing exactly the same function per window.

    Args:
        model: any classifier ending in global pooling + head (ResNet, ConvNeXt, DenseNet, …: converted by
            :func:`fcn_app.models.graph.convert_graph_classifier`), a torchvision VGG/AlexNet-style classifier or an
            ``nn.Sequential``; alternatively pass
            ``features`` and ``head`` (and optionally ``pool``) yourself.
        input_size: the ``(height, width)`` (or one side) the classifier was trained on, e.g. 224 for ImageNet
            models, 32 for a model trained on 32×32 crops.
        in_channels: image channels the feature extractor expects.
        categories: class names (defaults to ``"0" … "K-1"``).
        mean, std: the normalisation the classifier expects on pixels scaled to [0, 1] (default: none).

    The feature extractor is copied (the original model is left untouched); head weights are copied from the
    Linear layers with shapes asserted. The result is in eval mode. ``copy_weights=False`` shares the model's
    tensors instead (the head's are views): for a classifier built only to be converted (the zoo's), it saves
    copying VGG16's 528 MB at start-up.
    """
    if model is not None:
        if features is not None or head is not None:
            raise ConversionError("pass either a model or features= and head=, not both")
        from .graph import convert_graph_classifier, is_graph_classifier  # graph builds on this module

        if is_graph_classifier(model):
            return convert_graph_classifier(model, input_size=input_size, in_channels=in_channels,
                                            categories=categories, arch=arch, mean=mean, std=std)
        features, pool, head_layers = split_classifier(model)
        arch = arch or type(model).__name__.lower()
    else:
        if features is None or head is None:
            raise ConversionError("to_fully_convolutional needs a model, or both features= and head=")
        head_layers = list(head) if isinstance(head, (nn.Sequential, list, tuple)) else [head]
    input_size = pair(input_size)
    features = copy.deepcopy(features) if copy_weights else features

    head_layers = [layer for layer in head_layers if not isinstance(layer, nn.Flatten)]
    linears = [layer for layer in head_layers if isinstance(layer, nn.Linear)]
    if not linears:
        raise ConversionError("the classifier head has no Linear layer to convert")
    for layer in head_layers:
        if not isinstance(layer, (nn.Linear, *ELEMENTWISE_LAYERS)):
            raise ConversionError(
                f"cannot convert a {type(layer).__name__} in the classifier head; supported are Linear, "
                "ReLU-like activations and Dropout"
            )

    channels, grid_h, grid_w = _feature_grid(features, in_channels, input_size)
    first = linears[0]
    first_layers = grid_linear_layers(first, pool, channels, (grid_h, grid_w), copy_weights=copy_weights)

    converted: list[nn.Module] = []
    previous_width = None
    for layer in head_layers:
        if layer is first:
            converted.extend(first_layers)
            previous_width = first.out_features
        elif isinstance(layer, nn.Linear):
            converted.append(linear_to_conv(layer, previous_width, (1, 1), copy_weights=copy_weights))
            previous_width = layer.out_features
        else:  # per-element layers (a Dropout before the first Linear too) work on any grid unchanged
            converted.append(copy.deepcopy(layer))

    network = FullyConvolutionalNet(
        features,
        nn.Sequential(*converted),
        input_size=input_size,
        num_classes=linears[-1].out_features,
        categories=categories,
        arch=arch or "custom",
        mean=mean,
        std=std,
    )
    return network.eval()
