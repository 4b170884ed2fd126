"""FCN on a dilated ResNet-50/101 (``model.backbone: resnet50 | resnet101``), as torchvision's FCN-ResNet.

The ImageNet ResNet (weights through :func:`fcn_app.models.load_classifier`: hub cache, offline rules, a local
file) keeps its parameters, but its last two stages trade stride for dilation (torchvision's
``replace_stride_with_dilation=[False, True, True]``), so ``layer4`` has output stride 8; torchvision's ``FCNHead``
(3×3 convolution to 512 channels, batch norm, ReLU, dropout, 1×1 score convolution, the score layer new) scores
it and the scores are resized to the input bilinearly. There are no skips — the dilation keeps the resolution —
so ``model.variant`` is ``fcn8s`` (the output stride) and the upsampling is fixed.

Scored whole, never in tiles: the bilinear resize to the input size is not a fixed-ratio upsampling, so no tile
computes what the whole image does.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..models import default_weights, load_classifier
from .whole import WholeImageSegmentation

__all__ = ["DILATED_RESNETS", "DilatedResNetFCN"]

DILATED_RESNETS = ("resnet50", "resnet101")
#: the one variant a dilated ResNet FCN is: output stride 8
RESNET_VARIANT = "fcn8s"


class DilatedResNetFCN(WholeImageSegmentation, nn.Module):
    """``forward(images N×3×H×W normalised) → logits N×C×H×W``: dilated ResNet (stride 8), FCNHead, bilinear."""

    def __init__(self, arch: str, num_classes: int, *, variant: str = RESNET_VARIANT, pretrained: bool = True,
                 weights_path: str | os.PathLike | None = None, class_names: Sequence[str] | None = None,
                 learnable_upsampling: bool = False) -> None:
        super().__init__()
        if arch not in DILATED_RESNETS:
            raise ConfigError(f"model.backbone {arch!r} is not a dilated ResNet; choose one of {', '.join(DILATED_RESNETS)}")
        if variant != RESNET_VARIANT:
            raise ConfigError(f"model.variant {variant} has skips for VGG backbones; a {arch} backbone is dilated to "
                              f"output stride 8 without skips (torchvision's FCN-ResNet): use {RESNET_VARIANT}")
        if learnable_upsampling:
            raise ConfigError(f"model.learnable_upsampling: a {arch} backbone's scores are resized bilinearly (fixed); "
                              "set it to false")
        if num_classes < 1:
            raise ConfigError(f"a segmentation model needs at least one class, got {num_classes}")
        from torchvision.models import get_model  # on use: importing torchvision is slow (see models.vgg)
        from torchvision.models.segmentation.fcn import FCNHead

        resnet = get_model(arch, weights=None, replace_stride_with_dilation=[False, True, True])
        if pretrained or weights_path is not None:
            classifier, _ = load_classifier(arch, weights_path=weights_path)
            resnet.load_state_dict(classifier.state_dict())  # dilation changes no parameter's shape
        self.body = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool, resnet.layer1,
                                  resnet.layer2, resnet.layer3, resnet.layer4)
        self.head = FCNHead(resnet.fc.in_features, num_classes)
        self.arch, self.variant = arch, variant
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        preprocessing = default_weights(arch).transforms()
        self.mean, self.std = tuple(preprocessing.mean), tuple(preprocessing.std)
        self.learnable_upsampling = False


    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores = self.head(self.body(images))
        return F.interpolate(scores, size=images.shape[-2:], mode="bilinear", align_corners=False)

    def model_config(self) -> dict:
        return {"variant": self.variant, "backbone": self.arch, "num_classes": self.num_classes,
                "learnable_upsampling": False, "mean": list(self.mean), "std": list(self.std)}
