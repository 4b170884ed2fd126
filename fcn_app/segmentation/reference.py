"""The FCN paper's VOC models (Long, Shelhamer & Darrell), imported from their published parameters.

The reference networks are Caffe models, commonly republished for PyTorch as a state dict with ``conv1_1.weight``
… ``conv5_3.bias``, ``fc6.weight`` (4096×512×7×7), ``fc7``, ``score_fr``, per variant ``score_pool4`` and
``score_pool3``, and the transposed convolutions ``upscore`` (32s), ``upscore2``/``upscore16`` (16s) or
``upscore2``/``upscore_pool4``/``upscore8`` (8s), without biases. :func:`import_reference_fcn` turns such a file
into this project's self-describing checkpoint: a :class:`~fcn_app.segmentation.models.SegmentationFCN` that takes
RGB pixels like every model here and computes what the reference computes on the same image:

- **Preprocessing.** The reference reads BGR pixels in 0–255 minus the mean ``(104.00699, 116.66877, 122.67892)``
  and divides by nothing. The checkpoint's ``mean``/``std`` (for RGB pixels scaled to [0, 1]) are that mean in
  RGB order / 255 and ``1/255``, and ``conv1_1``'s input channels are reversed, so RGB in equals BGR in.
- **Context.** The reference's ``conv1_1`` pads by :data:`REFERENCE_CONV1_PADDING` = 100 pixels (zeros after
  mean subtraction, i.e. the mean colour): every training image had 100 px of context, which also lets fc6's 7×7
  window fit an image of one pixel. This model's ``conv1_1`` pads by 1 like torchvision's VGG16, so the model
  carries ``context_padding`` = 100 − 1 = 99 pixels of mean colour around every input — the same input.
- **Pooling** is Caffe's (ceil mode), and the skip and final crops (19; 5, 27; 5, 9, 31) are derived from the
  layers' geometry (:func:`fcn_app.geometry.plan_context_axis`), as Caffe's ``Crop`` layer derives them.
- **FCN-8s at once** scales pool4 by 0.01 and pool3 by 0.0001 before scoring; its file has the same keys as the
  staged FCN-8s, so only ``--variant`` tells them apart.

:data:`PUBLISHED_MEAN_IU` holds the mean IU each variant reached in the paper (PASCAL VOC 2011 ``seg11valid``);
they are published figures, not reproduced here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import OptionError, WeightsError
from ..models.zoo import read_state_dict
from .datasets import VOC_CLASSES
from .models import FCN_VARIANTS, SegmentationFCN, build_segmentation_model

__all__ = [
    "PUBLISHED_MEAN_IU",
    "REFERENCE_CONV1_PADDING",
    "REFERENCE_MEAN_BGR",
    "REFERENCE_SPLIT",
    "import_reference_fcn",
    "reference_key_names",
    "reference_model",
]

#: ``pad: 100`` of conv1_1 in the FCN prototxts: the context every reference model was trained with.
REFERENCE_CONV1_PADDING = 100
#: The reference's per-channel mean, BGR order, 0–255 (subtracted, not divided by a std).
REFERENCE_MEAN_BGR = (104.00699, 116.66877, 122.67892)
#: The transposed convolutions of each variant, coarse to fine.
_UPSAMPLER_NAMES = {
    "fcn32s": ("upscore",),
    "fcn16s": ("upscore2", "upscore16"),
    "fcn8s": ("upscore2", "upscore_pool4", "upscore8"),
    "fcn8s-atonce": ("upscore2", "upscore_pool4", "upscore8"),
}
_SKIP_NAMES = ("score_pool4", "score_pool3")
#: Split the paper's figures are on, and the mean IU (%) each variant reached there (Shelhamer, Long & Darrell,
#: PAMI 2017, table 5 — the "staged" FCN-8s is this project's ``fcn8s``).
REFERENCE_SPLIT = "seg11valid"
PUBLISHED_MEAN_IU = {"fcn32s": 63.6, "fcn16s": 65.0, "fcn8s": 65.5, "fcn8s-atonce": 65.4}


def _check_variant(variant: str) -> None:
    if variant not in FCN_VARIANTS:
        raise OptionError("variant", f"unknown variant {variant!r}; choose one of {', '.join(FCN_VARIANTS)}")


def reference_model(variant: str) -> SegmentationFCN:
    """A randomly initialised FCN of ``variant`` laid out like the reference (21 VOC classes, VGG16, its context,
    ceil-mode pooling, learnable upsampling weights). Build it under ``torch.device("meta")`` for shapes only."""
    _check_variant(variant)
    model = build_segmentation_model(variant, len(VOC_CLASSES), backbone="vgg16", pretrained=False,
                                     learnable_upsampling=True, class_names=VOC_CLASSES, ceil_mode_pooling=True)
    # the reference's conv1_1 pads by 100; this conv1_1 pads by its own amount, the rest is context around the input
    conv1_1 = next(layer for layer in model.to_pool3 if isinstance(layer, nn.Conv2d))
    model.context_padding = REFERENCE_CONV1_PADDING - conv1_1.padding[0]
    return model


def reference_key_names(model: SegmentationFCN) -> dict[str, str]:
    """This model's state-dict key → the reference's key (``to_pool3.0.weight`` → ``conv1_1.weight``, …)."""
    names: dict[str, str] = {}

    def add(module: nn.Module, prefix: str, reference: str) -> None:
        for parameter in ("weight", "bias"):
            if getattr(module, parameter, None) is not None:
                names[f"{prefix}.{parameter}"] = f"{reference}.{parameter}"

    block, index = 1, 0
    for stage in ("to_pool3", "to_pool4", "to_pool5"):
        for position, layer in enumerate(getattr(model, stage)):
            if isinstance(layer, nn.Conv2d):
                index += 1
                add(layer, f"{stage}.{position}", f"conv{block}_{index}")
            elif isinstance(layer, nn.MaxPool2d):
                block, index = block + 1, 0
    fully_connected = [position for position, layer in enumerate(model.head) if isinstance(layer, nn.Conv2d)]
    for number, position in enumerate(fully_connected, start=6):
        add(model.head[position], f"head.{position}", f"fc{number}")
    add(model.score_fr, "score_fr", "score_fr")
    for number, layer in enumerate(model.score_skips):
        add(layer, f"score_skips.{number}", _SKIP_NAMES[number])
    for number, layer in enumerate(model.upsamplers):
        add(layer, f"upsamplers.{number}", _UPSAMPLER_NAMES[model.variant][number])
    return names


def _shape(tensor: torch.Tensor) -> str:
    return "×".join(str(size) for size in tensor.shape) or "scalar"


def _fitting_variants(keys: set[str]) -> list[str]:
    """The variants whose reference keys are exactly ``keys`` (a hint when ``variant`` was the wrong one)."""
    fitting = []
    for variant in FCN_VARIANTS:
        with torch.device("meta"):
            if set(reference_key_names(reference_model(variant)).values()) == keys:
                fitting.append(variant)
    return fitting


def _check_reference_keys(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], variant: str,
                          source: str) -> None:
    """One :class:`WeightsError` line naming the first problem: a missing key, a wrong shape (with the expected
    one) or an extra key — plus the variant the keys fit, if another one does."""
    problem = None
    for key, tensor in expected.items():
        if key not in state:
            problem = f"missing {key} (expected {_shape(tensor)})"
        elif not isinstance(state[key], torch.Tensor) or not state[key].is_floating_point():
            problem = f"{key} is not a floating-point tensor"
        elif state[key].shape != tensor.shape:
            problem = f"{key} is {_shape(state[key])}, expected {_shape(tensor)}"
        if problem:
            break
    if problem is None:
        extra = [key for key in state if key not in expected]
        if extra:
            problem = f"unexpected {extra[0]} ({_shape(state[extra[0]])})" + (
                f" and {len(extra) - 1} more keys" if len(extra) > 1 else "")
    if problem is None:
        return
    fitting = [name for name in _fitting_variants(set(state)) if name != variant]
    hint = (f"its keys are those of {' or '.join(fitting)}: import it as that variant" if fitting
            else f"is it a reference {variant} state dict (conv1_1 … fc7, score_fr, …)?")
    raise WeightsError(f"{source}: does not fit the reference {variant}: {problem}; {hint}", option="variant"
                       if fitting else None)


def import_reference_fcn(source: str | os.PathLike, variant: str) -> dict[str, Any]:
    """The checkpoint payload (see :mod:`fcn_app.segmentation.checkpoint`) of the reference ``variant`` whose
    parameters are in the state dict file ``source`` (read with ``weights_only=True``); nothing is written."""
    source = Path(source)
    _check_variant(variant)  # a mistyped option fails before the file is read
    state = read_state_dict(source)
    with torch.device("meta"):
        model = reference_model(variant)
    names = reference_key_names(model)
    own = model.state_dict()
    expected = {names[key]: own[key] for key in own}
    _check_reference_keys(state, expected, variant, str(source))
    converted = {}
    for key in own:
        tensor = state[names[key]].detach().to(torch.float32)
        if names[key] == "conv1_1.weight":
            tensor = tensor.flip(1)  # BGR filters read RGB input: reverse the input channels
        converted[key] = tensor
    config = model.model_config()
    config["mean"] = [value / 255.0 for value in reversed(REFERENCE_MEAN_BGR)]
    config["std"] = [1.0 / 255.0] * 3  # 0–255 pixels minus the mean, divided by nothing
    return {
        "model_config": config,
        "class_names": list(VOC_CLASSES),
        "model": converted,
        "imported_from": {"reference": variant, "file": source.name},
    }
