"""FCN-32s / 16s / 8s (and FCN-8s "at once") semantic segmentation built on a converted classifier.

The network is the converted classifier of :mod:`fcn_app.models.convert` — backbone convolutions plus fc6/fc7 as
convolutions, ImageNet-initialised — with its 1000-class score convolution replaced by a new ``N``-class one
(``score_fr``), optional zero-initialised skip scores on pool4 and pool3, and transposed convolutions initialised
to bilinear interpolation (fixed or learnable).

Alignment is computed, not tuned. The reference implementation pads every input by 100 pixels and crops the
upsampled maps at hand-found offsets (5, 9, 19, 31). Here every map carries its geometry — the input pixel of its
first cell centre and its stride, from :func:`fcn_app.geometry.network_geometry` — so:

- an upsampling ``ConvTranspose2d(kernel 2f, stride f)`` with a bilinear kernel puts input cell ``i`` at output
  index ``f·i + f − ½``; output indices ``[f, n·f)`` receive full weight from two cells (exact linear
  interpolation between neighbouring cell centres) and are kept, the partial-weight rim is cropped;
- a skip map is fused with the upsampled coarse map on the pixels both cover (same stride, offsets computed);
- the input is padded (with the mean colour, i.e. zeros after normalisation) just enough that the final map
  covers every input pixel, then the final map is cropped to the input: logits are ``N×C×H×W`` aligned to the
  input pixels for any ``H, W ≥ 1``.

With fixed bilinear upsampling, FCN-32s's output equals :func:`fcn_app.geometry.upsample_to_pixels` of its
stride-32 score grid — the same interpolation the heatmap command uses (tested).

A model imported from the reference (:mod:`fcn_app.segmentation.reference`) instead runs as the reference does:
``context_padding`` pixels of mean colour around every input (the context it was trained with), Caffe's ceil-mode
pooling (``ceil_mode_pooling``), upsampled maps kept whole and cropped at the offsets their geometry gives
(:func:`fcn_app.geometry.plan_context_axis`).
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ConversionError
from ..geometry import (LayerGeometry, ScoreLayout, SkipAxisPlan, axis_layers, network_geometry, plan_context_axis,
                        plan_skip_axis)
from ..layers import chain_activation_values
from ..models import TINY_ARCH, FullyConvolutionalNet, build_fcn
from ..models.vgg import VGG_ARCHS
from .resnet import DILATED_RESNETS, DilatedResNetFCN
from .whole import SegmentationNetwork

__all__ = [
    "BACKBONES",
    "FCN_VARIANTS",
    "SegmentationFCN",
    "bilinear_kernel",
    "build_backbone",
    "build_segmentation_model",
]

#: Variant → which skips it fuses (pool4, pool3) and the scale applied to the pooled features before scoring.
FCN_VARIANTS = {
    "fcn32s": {"skips": 0, "scales": ()},
    "fcn16s": {"skips": 1, "scales": (1.0,)},
    "fcn8s": {"skips": 2, "scales": (1.0, 1.0)},
    # "FCN-8s at once" (Shelhamer et al. 2016): trained in one stage, pool4/pool3 scaled so the skips start small
    "fcn8s-atonce": {"skips": 2, "scales": (0.01, 0.0001)},
}
#: Backbones: torchvision VGGs (ImageNet weights) and a reduced-width VGG for CPU smoke runs and tests.
BACKBONES = VGG_ARCHS + (TINY_ARCH,)


def bilinear_kernel(channels: int, factor: int) -> torch.Tensor:
    """``channels × channels × 2f × 2f`` weight of a per-channel bilinear upsampling by ``factor`` (FCN's filler)."""
    size = 2 * factor
    center = factor - 0.5
    ramp = 1.0 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    kernel = (ramp[:, None] * ramp[None, :]).float()
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = kernel
    return weight


def build_backbone(arch: str, *, pretrained: bool = True, weights_path: str | os.PathLike | None = None) -> FullyConvolutionalNet:
    """The converted classifier an FCN starts from (:func:`fcn_app.models.build_fcn`: ImageNet weights when
    ``pretrained``, random otherwise; normalisation from the weights' metadata)."""
    if arch not in BACKBONES:
        raise ConfigError(f"model.backbone {arch!r} is not supported; choose one of "
                          f"{', '.join(BACKBONES + DILATED_RESNETS)}")
    if arch == TINY_ARCH and pretrained and weights_path is None:
        raise ConfigError(f"model.backbone {TINY_ARCH} has no pretrained weights; set model.pretrained: false")
    return build_fcn(arch, pretrained=pretrained, weights_path=weights_path)


class SegmentationFCN(SegmentationNetwork, nn.Module):
    """FCN-32s/16s/8s: ``forward(images N×3×H×W normalised) → logits N×C×H×W`` aligned to the input pixels.

    Any input of at least one pixel is scored: it is padded internally until the final map covers it."""

    #: scored in NCHW: the transposed convolutions and crops of the decoder, and the scores it gave before the
    #: shared inference path, stay as they were (``scripts/bench.py`` measures channels-last for classifiers)
    channels_last = False

    def __init__(
        self,
        backbone: FullyConvolutionalNet,
        num_classes: int,
        *,
        variant: str = "fcn8s",
        learnable_upsampling: bool = False,
        class_names: Sequence[str] | None = None,
        context_padding: int | None = None,
        ceil_mode_pooling: bool = False,
    ) -> None:
        super().__init__()
        if variant not in FCN_VARIANTS:
            raise ConfigError(f"model.variant {variant!r} is unknown; choose one of {', '.join(FCN_VARIANTS)}")
        if num_classes < 1:
            raise ConfigError(f"a segmentation model needs at least one class, got {num_classes}")
        self.variant = variant
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(num_classes)]
        self.arch = backbone.arch
        self.mean, self.std = backbone.mean, backbone.std
        self.learnable_upsampling = bool(learnable_upsampling)
        spec = FCN_VARIANTS[variant]
        self.skip_scales = tuple(spec["scales"])
        if context_padding is not None and context_padding < 0:
            raise ConfigError(f"context padding must be ≥ 0 pixels, got {context_padding}")
        #: pixels of mean colour around every input, with the reference's alignment; None: just enough padding
        #: that the final map covers the input, with partial-weight rims cropped (see the module docstring)
        self.context_padding = None if context_padding is None else int(context_padding)
        self.ceil_mode_pooling = bool(ceil_mode_pooling)

        features = list(copy.deepcopy(backbone.features))
        for layer in features:
            if isinstance(layer, nn.MaxPool2d):
                layer.ceil_mode = self.ceil_mode_pooling
        pools = [index for index, layer in enumerate(features) if isinstance(layer, nn.MaxPool2d)]
        if len(pools) < 3:
            raise ConversionError(
                f"FCN skips need pool3 and pool4: the backbone has {len(pools)} max-pool layers, at least 3 needed"
            )
        pool3, pool4 = pools[-3], pools[-2]  # the last pool is pool5; counted from the end so any depth works
        self.to_pool3 = nn.Sequential(*features[: pool3 + 1])
        self.to_pool4 = nn.Sequential(*features[pool3 + 1 : pool4 + 1])
        self.to_pool5 = nn.Sequential(*features[pool4 + 1 :])
        head = list(copy.deepcopy(backbone.head))
        last_conv = max(index for index, layer in enumerate(head) if isinstance(layer, nn.Conv2d))
        self.head = nn.Sequential(*head[:last_conv])  # fc6, fc7 (+ReLU/Dropout); the ImageNet score layer is dropped
        head_channels = head[last_conv].in_channels
        self.score_fr = nn.Conv2d(head_channels, num_classes, 1)
        nn.init.zeros_(self.score_fr.weight)  # as the reference: a fresh score layer starts from zero
        nn.init.zeros_(self.score_fr.bias)

        def channels_of(module: nn.Sequential, fallback: int) -> int:
            convs = [layer for layer in module if isinstance(layer, nn.Conv2d)]
            return convs[-1].out_channels if convs else fallback

        pool3_channels = channels_of(self.to_pool3, 3)
        pool4_channels = channels_of(self.to_pool4, pool3_channels)
        self.score_skips = nn.ModuleList()
        for channels in (pool4_channels, pool3_channels)[: spec["skips"]]:
            score = nn.Conv2d(channels, num_classes, 1)
            nn.init.zeros_(score.weight)
            nn.init.zeros_(score.bias)
            self.score_skips.append(score)

        # geometry of every map, in padded-input pixels, from the layers themselves
        score_chain = self._score_chain()
        skip_chains = [nn.Sequential(self.to_pool3, self.to_pool4), self.to_pool3][: spec["skips"]]
        self._score_geometry = network_geometry(score_chain)
        strides = [network_geometry(chain).stride for chain in [score_chain, *skip_chains]]
        factors = []
        for coarse, fine in zip(strides, strides[1:] + [(1, 1)]):
            if coarse[0] != coarse[1] or coarse[0] % fine[0]:
                raise ConversionError(f"cannot upsample stride {coarse} to stride {fine} by an integer factor")
            factors.append(coarse[0] // fine[0])
        self.upsample_factors = tuple(factors)
        self.upsamplers = nn.ModuleList()
        for factor in factors:
            upsample = nn.ConvTranspose2d(num_classes, num_classes, 2 * factor, stride=factor, bias=False)
            with torch.no_grad():
                upsample.weight.copy_(bilinear_kernel(num_classes, factor))
            upsample.weight.requires_grad_(self.learnable_upsampling)
            self.upsamplers.append(upsample)
        self.input_size = backbone.input_size
        # per axis: the layer chains that place the score and skip cells (hashable, so plans are cached)
        self._axes = tuple(
            (axis_layers(score_chain, axis), tuple(axis_layers(chain, axis) for chain in skip_chains),
             self.upsample_factors)
            for axis in range(2)
        )

    def _score_chain(self) -> nn.Sequential:
        """The layers from the input to the score grid (a view on this model's own layers, not registered)."""
        return nn.Sequential(self.to_pool3, self.to_pool4, self.to_pool5, self.head)

    # ---- geometry --------------------------------------------------------------------------------------------
    def score_layout(self, input_size: tuple[int, int]) -> ScoreLayout:
        """One score cell per input pixel. A pixel's score reads the score cells of the two nearest stride-``S``
        centres around each upsampling, so its receptive field is the score grid's plus at most ``2·S`` on each
        side; tiles must start at multiples of ``S`` (the score grid's stride) to keep every layer's phase."""
        score = self._score_geometry
        field = tuple(score.receptive_field[axis] + 4 * score.stride[axis] for axis in range(2))
        return ScoreLayout(LayerGeometry((1, 1), (0.0, 0.0), field), (int(input_size[0]), int(input_size[1])),
                           score.stride, (1, 1))

    def activation_values(self, input_size: tuple[int, int]) -> int:
        """The backbone's peak (see :func:`fcn_app.layers.chain_activation_values`) or the full-resolution score maps
        (an upsampled map, a skip map and their sum alive at once), whichever is larger."""
        context = 2 * (self.context_padding or 0)
        backbone = chain_activation_values(self._score_chain(), (int(input_size[0]) + context, int(input_size[1]) + context))
        return max(backbone, 3 * self.num_classes * int(input_size[0]) * int(input_size[1]))

    # ---- forward ---------------------------------------------------------------------------------------------
    def plan(self, size: tuple[int, int]) -> tuple[SkipAxisPlan, SkipAxisPlan]:
        """How an input of ``size = (height, width)`` is padded, fused and cropped, per axis (cached)."""
        if self.context_padding is not None:
            return (plan_context_axis(*self._axes[0], int(size[0]), self.context_padding),
                    plan_context_axis(*self._axes[1], int(size[1]), self.context_padding))
        return plan_skip_axis(*self._axes[0], int(size[0])), plan_skip_axis(*self._axes[1], int(size[1]))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        plan_y, plan_x = self.plan((height, width))
        (top, bottom), (left, right) = plan_y.padding, plan_x.padding
        padded = F.pad(images, (left, right, top, bottom)) if (top or bottom or left or right) else images
        pool3 = self.to_pool3(padded)
        pool4 = self.to_pool4(pool3)
        scores = self.score_fr(self.head(self.to_pool5(pool4)))
        fused = self.upsamplers[0](scores)[..., plan_y.coarse, plan_x.coarse]
        skip_inputs = (pool4, pool3)
        for number, (fusion_y, fusion_x) in enumerate(zip(plan_y.fusions, plan_x.fusions)):
            scale = self.skip_scales[number]
            features = skip_inputs[number] * scale if scale != 1.0 else skip_inputs[number]
            skip = self.score_skips[number](features)
            fused = fused[..., fusion_y[0], fusion_x[0]] + skip[..., fusion_y[1], fusion_x[1]]
            fused = self.upsamplers[number + 1](fused)[..., fusion_y[2], fusion_x[2]]
        return fused[..., plan_y.start : plan_y.start + height, plan_x.start : plan_x.start + width]

    def model_config(self) -> dict:
        """Plain-data description of this model (goes into checkpoints; rebuilds it with ``build_segmentation_model``)."""
        return {
            "variant": self.variant,
            "backbone": self.arch,
            "num_classes": self.num_classes,
            "learnable_upsampling": self.learnable_upsampling,
            "mean": list(self.mean),
            "std": list(self.std),
            "context_padding": self.context_padding,
            "ceil_mode_pooling": self.ceil_mode_pooling,
        }


def build_segmentation_model(
    variant: str,
    num_classes: int,
    *,
    backbone: str = "vgg16",
    pretrained: bool = True,
    weights_path: str | os.PathLike | None = None,
    learnable_upsampling: bool = False,
    class_names: Sequence[str] | None = None,
    context_padding: int | None = None,
    ceil_mode_pooling: bool = False,
) -> SegmentationFCN:
    """An FCN of ``variant`` for ``num_classes`` classes on ``backbone`` (ImageNet-initialised when ``pretrained``);
    ``resnet50``/``resnet101``: torchvision's FCN-ResNet (:class:`~fcn_app.segmentation.resnet.DilatedResNetFCN`)."""
    if backbone in DILATED_RESNETS:
        if context_padding is not None or ceil_mode_pooling:
            raise ConfigError(f"context padding and ceil-mode pooling are the reference VGG16 FCN's; a {backbone} "
                              "backbone has neither")
        return DilatedResNetFCN(backbone, num_classes, variant=variant, pretrained=pretrained,
                                weights_path=weights_path, class_names=class_names,
                                learnable_upsampling=learnable_upsampling)
    network = build_backbone(backbone, pretrained=pretrained, weights_path=weights_path)
    return SegmentationFCN(network, num_classes, variant=variant, learnable_upsampling=learnable_upsampling,
                           class_names=class_names, context_padding=context_padding,
                           ceil_mode_pooling=ceil_mode_pooling)
