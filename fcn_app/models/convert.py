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
from .graph import convert_graph_classifier, is_graph_classifier
from .network import FullyConvolutionalNet, grid_linear_layers, linear_to_conv

__all__ = [
    "FullyConvolutionalNet",
    "convert_classifier",
    "linear_to_conv",
    "grid_linear_layers",
    "split_classifier",
    "to_fully_convolutional",
]

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


def convert_classifier(model: nn.Module, *, copy_weights: bool = True, **kwargs) -> FullyConvolutionalNet:
    """Any supported classifier: the layer-list conversion for VGG/AlexNet/``nn.Sequential``, the graph one else.
    ``copy_weights=False`` lets the layer-list conversion share the model's tensors (the graph one always copies)."""
    return to_fully_convolutional(model, copy_weights=copy_weights, **kwargs)
