"""What each supported torchvision classifier becomes: window, stride and weights, from shapes alone (no weights).

Each model is built on the meta device and converted; its window (feature cells pooled at the training size) and
stride (input pixels per feature cell, from how the grid grows) come from the converted network itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .models.graph import GraphFullyConvolutionalNet, convert_classifier
from .models import zoo
from .models.zoo import _drop_auxiliary_heads, build_classifier, default_weights

__all__ = ["ModelInfo", "describe_model", "describe_models"]


@dataclass(frozen=True)
class ModelInfo:
    name: str
    weights: str
    input_size: int
    window: tuple[int, int]
    stride: int
    global_context: bool


def describe_model(arch: str) -> ModelInfo:
    """Window and stride of ``arch``'s converted network (meta device: no weights are read or computed)."""
    weights = default_weights(arch)
    crop = int(weights.transforms().crop_size[0])
    with torch.device("meta"):
        classifier = _drop_auxiliary_heads(build_classifier(arch), arch).eval()
    network = convert_classifier(classifier, input_size=crop, arch=arch)
    if isinstance(network, GraphFullyConvolutionalNet):
        window, global_context = network.window, network.global_context
        grow = network.feature_grid((crop + 1024, crop))[0] - network.feature_grid((crop, crop))[0]
        stride = 1024 // grow
    else:  # VGG/AlexNet: the converted fc6 kernel is the window; the layer walk gives the stride
        from .geometry import network_geometry

        first = next(layer for layer in network.head if isinstance(layer, torch.nn.Conv2d))
        window, global_context = tuple(first.kernel_size), False
        stride = int(network_geometry(network).stride[0])
    return ModelInfo(arch, weights.name, crop, window, stride, global_context)


def describe_models() -> list[ModelInfo]:
    return [describe_model(arch) for arch in zoo.SUPPORTED_ARCHS]
