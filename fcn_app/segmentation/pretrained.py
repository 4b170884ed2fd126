"""torchvision's pretrained segmentation models, by name: ``torchvision:fcn_resnet50`` and the others of
:data:`TORCHVISION_MODELS` (weights ``COCO_WITH_VOC_LABELS_V1``: trained on a COCO subset in the 20 VOC classes).

Weights come through the torch hub cache exactly like the classifiers' (:func:`fcn_app.models.zoo.fetch_weights`:
downloaded once, ``$FCN_HEATMAP_OFFLINE`` and no-route machines get one line saying where to put the file), are
read with ``weights_only=True``, and the class names come from the weights' metadata (torchvision's
``__background__`` is called ``background``, as in the VOC datasets). The model is wrapped so that it behaves
like a trained checkpoint: normalised ``N×3×H×W`` in (mean/std from the weights' transforms), per-pixel logits
``N×21×H×W`` out (torchvision's ``"out"``), scored by the same inference path.

Two differences from torchvision's own evaluation transform, both deliberate: by default the image is labelled
at its own size (torchvision resizes the short side to 520 px first; a working size — see
:class:`~fcn_app.tasks.SegmentationTask` — runs the model on a copy whose *longer* side is that size and resizes
its logits back onto the photo's pixels), and the
auxiliary head, which only served training, is not run. These networks are scored whole, never in tiles: their
outputs are resized to the input with bilinear interpolation and DeepLabV3/LR-ASPP pool over the whole image,
so no tile computes what the whole image does.
"""

from __future__ import annotations

import difflib
import functools
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..errors import WeightsError
from ..models.zoo import fetch_weights, read_state_dict
from .whole import WholeImageSegmentation

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

__all__ = ["TORCHVISION_MODELS", "TORCHVISION_PREFIX", "TorchvisionSegmentation", "load_torchvision_segmentation",
           "torchvision_weights"]

TORCHVISION_PREFIX = "torchvision:"
#: torchvision's segmentation builders (fcn_resnet50/101, deeplabv3_resnet50/101, deeplabv3_mobilenet_v3_large,
#: lraspp_mobilenet_v3_large).
#: Computed on first use (module ``__getattr__``): importing torchvision costs about as much as importing torch, and
#: the CLI must start without it.


def __getattr__(name: str):
    if name == "TORCHVISION_MODELS":
        return _torchvision_models()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _torchvision_models() -> tuple[str, ...]:
    import torchvision

    return tuple(sorted(torchvision.models.list_models(module=torchvision.models.segmentation)))
#: The metric key torchvision's metadata gives for these weights (COCO val2017, VOC classes).
PUBLISHED_ON = "COCO-val2017-VOC-labels"


def torchvision_weights(name: str) -> WeightsEnum:
    """The pretrained weights of torchvision segmentation model ``name``; unknown names → one line with the
    nearest ones."""
    from torchvision.models import get_model_weights

    known = _torchvision_models()
    if name not in known:
        nearest = difflib.get_close_matches(name, known, n=3, cutoff=0.4)
        hint = f"did you mean {', '.join(nearest)}?" if nearest else f"choose one of {', '.join(known)}"
        # no flag named: the name arrives as --checkpoint or as evaluate's argument
        raise WeightsError(f"unknown torchvision segmentation model {name!r}; {hint}")
    return get_model_weights(name).DEFAULT


def _display_name(category: str) -> str:
    return "background" if category == "__background__" else category


class TorchvisionSegmentation(WholeImageSegmentation, nn.Module):
    """A torchvision segmentation model as this package runs segmentation models: ``forward(normalised images)
    → logits N×C×H×W``, with ``mean``/``std``, ``categories`` and a per-pixel :meth:`score_layout`."""

    def __init__(self, model: nn.Module, name: str, weights: WeightsEnum) -> None:
        super().__init__()
        self.model = model
        self.arch = f"{TORCHVISION_PREFIX}{name}"
        transforms = weights.transforms()
        self.mean, self.std = tuple(transforms.mean), tuple(transforms.std)
        self.class_names = [_display_name(category) for category in weights.meta["categories"]]
        self.num_classes = len(self.class_names)
        self.published = {key: value for key, value in weights.meta.get("_metrics", {}).get(PUBLISHED_ON, {}).items()}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)["out"]

    def model_config(self) -> dict:
        return {"torchvision": self.arch[len(TORCHVISION_PREFIX):], "num_classes": self.num_classes,
                "mean": list(self.mean), "std": list(self.std)}


def load_torchvision_segmentation(name: str, device: str | torch.device = "cpu") -> tuple[
        TorchvisionSegmentation, list[str], dict[str, Any]]:
    """``(model in eval mode on device, class names, description)`` of ``torchvision:NAME`` (or ``NAME``), with
    its pretrained weights from the hub cache (downloaded once if allowed)."""
    name = name[len(TORCHVISION_PREFIX):] if name.startswith(TORCHVISION_PREFIX) else name
    weights = torchvision_weights(name)
    path = fetch_weights(weights)
    state = read_state_dict(path)
    with torch.device("meta"):  # shapes only: the random initialisation would be overwritten right away
        extra = {} if name.startswith("lraspp") else {"aux_loss": any(key.startswith("aux_classifier.") for key in state)}
        from torchvision.models import get_model

        model = get_model(name, weights=None, weights_backbone=None, num_classes=len(weights.meta["categories"]),
                          **extra)
    try:
        model.load_state_dict(state, assign=True)
    except RuntimeError as error:
        detail = next((line.strip() for line in str(error).splitlines()[1:] if line.strip()), str(error))[:200]
        raise WeightsError(f"{path}: does not fit torchvision's {name} ({detail}); delete it to download it again")
    if hasattr(model, "aux_classifier"):
        model.aux_classifier = None  # a training-time head: torchvision's forward skips it when absent
    network = TorchvisionSegmentation(model, name, weights).to(device).eval()
    description = {"model_config": network.model_config(), "class_names": network.class_names,
                   "published": {"on": PUBLISHED_ON, **network.published}}
    return network, network.class_names, description
