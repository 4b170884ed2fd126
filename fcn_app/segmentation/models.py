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
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, ConversionError
from ..geometry import network_geometry, output_grid_size
from ..models import FullyConvolutionalNet, SUPPORTED_ARCHS, build_classifier, load_classifier, to_fully_convolutional

__all__ = [
    "BACKBONES",
    "FCN_VARIANTS",
    "SegmentationFCN",
    "bilinear_kernel",
    "build_backbone",
    "build_segmentation_model",
    "tiny_vgg_classifier",
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
BACKBONES = tuple(arch for arch in SUPPORTED_ARCHS if arch.startswith("vgg")) + ("tiny_vgg",)
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def bilinear_kernel(channels: int, factor: int) -> torch.Tensor:
    """``channels × channels × 2f × 2f`` weight of a per-channel bilinear upsampling by ``factor`` (FCN's filler)."""
    size = 2 * factor
    center = factor - 0.5
    ramp = 1.0 - (torch.arange(size, dtype=torch.float64) - center).abs() / factor
    kernel = (ramp[:, None] * ramp[None, :]).float()
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = kernel
    return weight


def tiny_vgg_classifier(widths: Sequence[int] = (16, 32, 48, 64, 64), hidden: int = 128, num_classes: int = 10) -> nn.Sequential:
    """A VGG-shaped classifier for 32×32 inputs (five conv+BN+ReLU+pool blocks, two hidden FC layers), random init.

    Same layout as torchvision's ``vgg11_bn`` — 3×3 convs with padding 1, 2×2/2 max-pools — at a fraction of the
    width, so a whole FCN training run fits in seconds on a CPU; batch norm lets it learn from scratch quickly.
    Not pretrained: meant for tests and smoke runs.
    """
    layers: list[nn.Module] = []
    channels = 3
    for width in widths:
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                   nn.MaxPool2d(2)]
        channels = width
    layers += [nn.Flatten(), nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Dropout(0.1),
               nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(0.1), nn.Linear(hidden, num_classes)]
    return nn.Sequential(*layers)


def build_backbone(arch: str, *, pretrained: bool = True, weights_path: str | os.PathLike | None = None) -> FullyConvolutionalNet:
    """The converted classifier an FCN starts from (ImageNet weights when ``pretrained``; random otherwise)."""
    if arch not in BACKBONES:
        raise ConfigError(f"model.backbone {arch!r} is not supported; choose one of {', '.join(BACKBONES)}")
    if arch == "tiny_vgg":
        if pretrained and weights_path is None:
            raise ConfigError("model.backbone tiny_vgg has no pretrained weights; set model.pretrained: false")
        classifier = tiny_vgg_classifier()
        if weights_path is not None:
            from ..models import read_state_dict

            classifier.load_state_dict(read_state_dict(weights_path))
        return to_fully_convolutional(classifier, input_size=32, arch=arch, mean=_IMAGENET_MEAN, std=_IMAGENET_STD)
    if pretrained or weights_path is not None:
        classifier, _ = load_classifier(arch, weights_path=weights_path)
    else:
        classifier = build_classifier(arch)
    return to_fully_convolutional(classifier, input_size=224, arch=arch, mean=_IMAGENET_MEAN, std=_IMAGENET_STD)


@dataclass(frozen=True)
class _Span:
    """One axis of a map: pixel position of its first cell centre (in padded-input pixels), stride, length."""

    first: float
    stride: float
    length: int

    @property
    def last(self) -> float:
        return self.first + self.stride * (self.length - 1)


def _upsampled_span(span: _Span, factor: int) -> tuple[_Span, slice]:
    """Span of a bilinear ``ConvTranspose2d(2f, stride f)`` output after cropping its partial-weight rim."""
    stride = span.stride / factor
    keep = slice(factor, span.length * factor)
    return _Span(span.first + 0.5 * stride, stride, max(0, (span.length - 1) * factor)), keep


def _intersection(a: _Span, b: _Span) -> tuple[_Span, slice, slice]:
    """The cells two same-stride maps share, and the slices selecting them in each."""
    offset = (b.first - a.first) / a.stride
    if abs(a.stride - b.stride) > 1e-9 or abs(offset - round(offset)) > 1e-6:
        raise ConversionError(
            f"cannot fuse maps with strides {a.stride}/{b.stride} whose cells are {offset:g} cells apart; the "
            "skip layer's cells do not line up with the upsampled scores"
        )
    start, end = max(a.first, b.first), min(a.last, b.last)
    length = max(0, int(round((end - start) / a.stride)) + 1)
    start_a = int(round((start - a.first) / a.stride))
    start_b = int(round((start - b.first) / b.stride))
    return _Span(start, a.stride, length), slice(start_a, start_a + length), slice(start_b, start_b + length)


@dataclass(frozen=True)
class _AxisPlan:
    """How one axis is processed for one padded input size: crops for every fusion and the final crop."""

    coarse: slice  # after the first upsampling (or the only one)
    fusions: tuple[tuple[slice, slice, slice], ...]  # (upsampled crop ∘ intersection, skip slice, next upsampled crop)
    final_first: float
    final_length: int


class SegmentationFCN(nn.Module):
    """FCN-32s/16s/8s: ``forward(images N×3×H×W normalised) → logits N×C×H×W`` aligned to the input pixels."""

    def __init__(
        self,
        backbone: FullyConvolutionalNet,
        num_classes: int,
        *,
        variant: str = "fcn8s",
        learnable_upsampling: bool = False,
        class_names: Sequence[str] | None = None,
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

        features = list(copy.deepcopy(backbone.features))
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
        self._pool3_geometry = network_geometry(self.to_pool3)
        self._pool4_geometry = network_geometry(nn.Sequential(self.to_pool3, self.to_pool4))
        self._score_geometry = network_geometry(nn.Sequential(self.to_pool3, self.to_pool4, self.to_pool5, self.head))
        skip_geometries = [self._pool4_geometry, self._pool3_geometry][: spec["skips"]]
        strides = [self._score_geometry.stride] + [geometry.stride for geometry in skip_geometries]
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
        self._plans: dict[tuple[int, int], tuple] = {}

    # ---- alignment -------------------------------------------------------------------------------------------
    def _spans_along(self, axis: int, padded: int) -> tuple[_Span, list[_Span]]:
        full = nn.Sequential(self.to_pool3, self.to_pool4, self.to_pool5, self.head)
        size = (padded, padded)
        score = _Span(self._score_geometry.first_center[axis], self._score_geometry.stride[axis],
                      output_grid_size(full, size)[axis])
        skips = []
        for number, geometry in enumerate([self._pool4_geometry, self._pool3_geometry][: len(self.score_skips)]):
            module = nn.Sequential(self.to_pool3, self.to_pool4) if number == 0 else self.to_pool3
            skips.append(_Span(geometry.first_center[axis], geometry.stride[axis], output_grid_size(module, size)[axis]))
        return score, skips

    def _axis_plan(self, axis: int, padded: int) -> _AxisPlan:
        score, skips = self._spans_along(axis, padded)
        span, coarse = _upsampled_span(score, self.upsample_factors[0])
        fusions = []
        for skip, factor in zip(skips, self.upsample_factors[1:]):
            fused, in_upsampled, in_skip = _intersection(span, skip)
            span, keep = _upsampled_span(fused, factor)
            fusions.append((in_upsampled, in_skip, keep))
        return _AxisPlan(coarse, tuple(fusions), span.first, span.length)

    def padding_for(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` input padding after which the final map covers every input pixel."""
        return self._plan(int(size[0]), int(size[1]))[0]

    def _plan(self, height: int, width: int):
        if (height, width) not in self._plans:
            if len(self._plans) > 256:
                self._plans.clear()
            self._plans[(height, width)] = self._compute_plan(height, width)
        return self._plans[(height, width)]

    def _compute_plan(self, height: int, width: int):
        padding, plans = [], []
        for axis, size in enumerate((height, width)):
            first = self._axis_plan(axis, 4 * self._score_geometry.receptive_field[axis] + size).final_first
            before = max(0, math.ceil(first - 1e-9))
            if abs(first - round(first)) > 1e-6:
                raise ConversionError(f"the final map's pixels sit at half-pixel positions ({first}); cannot align")
            after = 0
            while True:
                padded = before + size + after
                plan = self._axis_plan(axis, padded)
                if plan.final_length > 0 and plan.final_first + plan.final_length - 1 >= before + size - 1:
                    break
                after += 1
            padding += [before, after]
            plans.append((plan, int(round(before - plan.final_first))))
        return tuple(padding[:2] + padding[2:]), plans

    # ---- forward ---------------------------------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        (top, bottom, left, right), ((plan_y, start_y), (plan_x, start_x)) = self._plan(int(height), int(width))
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
        return fused[..., start_y : start_y + height, start_x : start_x + width]

    def score_grid_geometry(self, size: tuple[int, int]):
        """Geometry (in *unpadded* input pixels) of the stride-32 ``score_fr`` grid for an input of ``size``."""
        from ..geometry import ScoreGeometry

        top, bottom, left, right = self.padding_for(size)
        padded = (size[0] + top + bottom, size[1] + left + right)
        full = nn.Sequential(self.to_pool3, self.to_pool4, self.to_pool5, self.head)
        return ScoreGeometry.for_network(self._score_geometry, output_grid_size(full, padded), self.input_size,
                                          offset=(top, left))

    def model_config(self) -> dict:
        """Plain-data description of this model (goes into checkpoints; rebuilds it with ``build_segmentation_model``)."""
        return {
            "variant": self.variant,
            "backbone": self.arch,
            "num_classes": self.num_classes,
            "learnable_upsampling": self.learnable_upsampling,
            "mean": list(self.mean),
            "std": list(self.std),
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
) -> SegmentationFCN:
    """An FCN of ``variant`` for ``num_classes`` classes on ``backbone`` (ImageNet-initialised when ``pretrained``)."""
    network = build_backbone(backbone, pretrained=pretrained, weights_path=weights_path)
    return SegmentationFCN(network, num_classes, variant=variant, learnable_upsampling=learnable_upsampling,
                           class_names=class_names)
