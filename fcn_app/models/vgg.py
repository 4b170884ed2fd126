"""torchvision's VGG family as shapes and weights facts, without importing torchvision (a fast start-up path).

``import torchvision`` imports every model family and ``torchvision.ops``, which imports ``torch._dynamo``: about
as long again as ``import torch`` (measured in docs/big-photos.md, "Start-up: what was cut"). Loading the
default VGG16 needs none of it: its layers are ``Conv2d``/``ReLU``/``MaxPool2d`` (+ ``BatchNorm2d``) in the
layout below, its weights are a file in the hub cache, and its preprocessing is ImageNet's. So the zoo builds
the VGG family's *shapes* here (on the meta device, weights loaded with ``assign``) and takes the weights facts
from :data:`VGG_WEIGHTS`; everything else — other models, downloads, random initialisation — goes through
torchvision. ``tests/test_zoo_models.py`` checks this module against torchvision: same module tree and state-dict
shapes, same file names, crop, mean, std and class names, same outputs with the same weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..classes import imagenet_categories

__all__ = ["VGG_ARCHS", "VGG_WEIGHTS", "VggShapes", "WeightsFacts", "imagenet_categories", "vgg_shapes"]

#: torchvision's ``vgg.cfgs``: output channels of each 3×3 conv, "M" for a 2×2/2 max-pool.
_LAYOUTS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class WeightsFacts:
    """What loading a classifier's default weights needs from torchvision's ``Weights`` entry."""

    url: str
    crop: int
    mean: tuple[float, float, float] = _IMAGENET_MEAN
    std: tuple[float, float, float] = _IMAGENET_STD


#: The ``DEFAULT`` (``IMAGENET1K_V1``) entry of each VGG's weights enum in torchvision.
VGG_WEIGHTS: dict[str, WeightsFacts] = {
    "vgg11": WeightsFacts("https://download.pytorch.org/models/vgg11-8a719046.pth", 224),
    "vgg11_bn": WeightsFacts("https://download.pytorch.org/models/vgg11_bn-6002323d.pth", 224),
    "vgg13": WeightsFacts("https://download.pytorch.org/models/vgg13-19584684.pth", 224),
    "vgg13_bn": WeightsFacts("https://download.pytorch.org/models/vgg13_bn-abd245e5.pth", 224),
    "vgg16": WeightsFacts("https://download.pytorch.org/models/vgg16-397923af.pth", 224),
    "vgg16_bn": WeightsFacts("https://download.pytorch.org/models/vgg16_bn-6c64b313.pth", 224),
    "vgg19": WeightsFacts("https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", 224),
    "vgg19_bn": WeightsFacts("https://download.pytorch.org/models/vgg19_bn-c79401a0.pth", 224),
}
VGG_ARCHS = tuple(VGG_WEIGHTS)


class VggShapes(nn.Module):
    """torchvision's ``VGG`` module tree (``features``, ``avgpool``, ``classifier``) with no initialisation: build
    it under ``torch.device("meta")`` and load weights with ``assign=True``."""

    def __init__(self, features: nn.Sequential, num_classes: int = 1000, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(p=dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(images)), 1))


def vgg_shapes(arch: str, num_classes: int = 1000) -> VggShapes:
    """The module tree of torchvision's ``arch`` (one of :data:`VGG_ARCHS`); call it on the meta device."""
    batch_norm = arch.endswith("_bn")
    layers: list[nn.Module] = []
    channels = 3
    for entry in _LAYOUTS[arch.removesuffix("_bn")]:
        if entry == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers.append(nn.Conv2d(channels, int(entry), kernel_size=3, padding=1))
        layers += [nn.BatchNorm2d(int(entry)), nn.ReLU(inplace=True)] if batch_norm else [nn.ReLU(inplace=True)]
        channels = int(entry)
    return VggShapes(nn.Sequential(*layers), num_classes)
