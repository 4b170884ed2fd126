"""Pretrained torchvision classifiers: building, finding and downloading weights, loading them safely.

The default is torchvision's ``VGG16_Weights.IMAGENET1K_V1`` (528 MB). It is downloaded once, with a progress
bar, into the torch hub cache — ``$TORCH_HOME/hub/checkpoints/vgg16-397923af.pth`` (``TORCH_HOME`` defaults to
``~/.cache/torch``) — exactly where torchvision itself keeps it, so a cache filled by torchvision is reused.
Class names and the input normalisation come from the weights' metadata, never from hand-typed lists.

Offline machines either pre-fill that cache or pass a local state dict (``weights_path``, the CLI's
``--weights`` or the ``FCN_HEATMAP_WEIGHTS`` environment variable). ``FCN_HEATMAP_OFFLINE=1`` forbids any
download attempt. Every file is read with ``torch.load(..., weights_only=True)``: a pickle carrying code is
refused, not run.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import re
import warnings
from pathlib import Path
from collections.abc import Sequence
from typing import Any
from urllib.error import URLError

import torch
import torchvision
from torch import nn
from torchvision.models import WeightsEnum, get_model, get_model_weights

from ..errors import OptionError, WeightsError, WeightsUnavailableError
from .convert import FullyConvolutionalNet, to_fully_convolutional

__all__ = [
    "DEFAULT_ARCH",
    "TINY_ARCH",
    "OFFLINE_ENV",
    "SUPPORTED_ARCHS",
    "WEIGHTS_ENV",
    "build_classifier",
    "build_fcn",
    "cached_weights_path",
    "default_weights",
    "fetch_default_weights",
    "load_classifier",
    "load_fcn",
    "load_network",
    "read_state_dict",
    "resolve_weights_path",
    "safe_torch_load",
    "tiny_vgg_classifier",
]

logger = logging.getLogger(__name__)

DEFAULT_ARCH = "vgg16"
SUPPORTED_ARCHS = (
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn", "alexnet",
)
#: A VGG-shaped classifier for 32×32 inputs, for CPU smoke runs and tests (no pretrained weights exist).
TINY_ARCH = "tiny_vgg"
#: tiny_vgg has vgg11_bn's layout at a fraction of the width; its input normalisation is that of vgg11_bn's weights.
_TINY_PREPROCESSING_ARCH = "vgg11_bn"
_TINY_INPUT_SIZE = 32
WEIGHTS_ENV = "FCN_HEATMAP_WEIGHTS"
OFFLINE_ENV = "FCN_HEATMAP_OFFLINE"
_HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")


def _check_arch(arch: str) -> str:
    if arch not in SUPPORTED_ARCHS:
        raise OptionError("model", f"unknown model {arch!r}; supported: {', '.join(SUPPORTED_ARCHS)}")
    return arch


def default_weights(arch: str = DEFAULT_ARCH) -> WeightsEnum:
    """The ImageNet weights entry torchvision ships for ``arch`` (url, categories, transforms)."""
    return get_model_weights(_check_arch(arch)).IMAGENET1K_V1


def build_classifier(arch: str = DEFAULT_ARCH) -> nn.Module:
    """A randomly initialised torchvision classifier (weights are loaded separately)."""
    return get_model(_check_arch(arch), weights=None)


def cached_weights_path(weights: WeightsEnum) -> Path:
    """Where torch's hub cache keeps ``weights`` (honours ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _unavailable_message(weights: WeightsEnum, destination: Path, reason: str) -> str:
    size = weights.meta.get("_file_size")
    size_text = f" ({size:.0f} MB)" if size else ""
    return (
        f"pretrained weights not found at {destination} and not downloadable ({reason}). Fetch {weights.url}"
        f"{size_text} on a machine with internet and put it at {destination} (set TORCH_HOME to use another "
        f"cache folder), or give a local weights file / set {WEIGHTS_ENV}=PATH"
    )


def fetch_default_weights(arch: str = DEFAULT_ARCH, *, progress: bool = True) -> Path:
    """Path of the cached default weights for ``arch``, downloading them once (with a progress bar) if needed."""
    weights = default_weights(arch)
    destination = cached_weights_path(weights)
    if destination.is_file():
        return destination
    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        raise WeightsUnavailableError(_unavailable_message(weights, destination, f"{OFFLINE_ENV} is set"),
                                      option="weights")
    logger.info("downloading %s to %s", weights.url, destination)
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        match = _HASH_REGEX.search(destination.name)
        torch.hub.download_url_to_file(
            weights.url, str(destination), hash_prefix=match.group(1) if match else None, progress=progress
        )
    except (URLError, OSError, RuntimeError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise WeightsUnavailableError(_unavailable_message(weights, destination, str(reason)),
                                      option="weights") from None
    return destination


def safe_torch_load(path: str | os.PathLike, what: str = "weights file") -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, every failure turned into one :class:`WeightsError` line.

    A pickle that carries code or arbitrary objects is refused, never run.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: {what} not found" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # protocol notes from the safe unpickler
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        reason = str(error).split("WeightsUnpickler error:")[-1].strip().splitlines()[0][:160]
        if "global" in reason.lower():
            raise WeightsError(
                f"{path}: refused to load: it holds Python objects or code ({reason}), not only tensors; "
                "files are read with weights_only=True"
            ) from None
        raise WeightsError(f"{path}: not a PyTorch checkpoint ({reason})") from None
    except Exception as error:  # noqa: BLE001 — a malformed file can make the unpickler fail in any way
        raise WeightsError(f"{path}: not a PyTorch checkpoint ({str(error).strip()[:160] or type(error).__name__})") from None


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict with ``weights_only=True``; unwraps ``{"state_dict": ...}`` / ``{"model": ...}``."""
    payload = safe_torch_load(path, "weights file")
    for key in ("state_dict", "model"):
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
    if not isinstance(payload, dict) or not all(isinstance(value, torch.Tensor) for value in payload.values()):
        raise WeightsError(f"{path}: does not contain a state dict (a mapping of names to tensors)")
    return payload


def _load_into(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        f"{key} {tuple(state_dict[key].shape)} vs expected {tuple(tensor.shape)}"
        for key, tensor in expected.items()
        if key in state_dict and state_dict[key].shape != tensor.shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append(f"wrong shape: {mismatched[0]}" + (f" (+{len(mismatched) - 1} more)" if len(mismatched) > 1 else ""))
        if missing:
            parts.append(f"missing {len(missing)} keys, e.g. {missing[0]}")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} keys, e.g. {unexpected[0]}")
        raise WeightsError(f"{source}: does not fit {getattr(model, 'arch', type(model).__name__)}: {'; '.join(parts)}; "
                           "is it the right model?", option="weights")
    model.load_state_dict(state_dict)


def resolve_weights_path(arch: str = DEFAULT_ARCH, weights_path: str | os.PathLike | None = None) -> Path:
    """The file that holds ``arch``'s weights: ``weights_path``, else ``$FCN_HEATMAP_WEIGHTS``, else the hub-cache
    path of the default weights (which may not have been downloaded yet)."""
    if weights_path is None and os.environ.get(WEIGHTS_ENV):
        weights_path = os.environ[WEIGHTS_ENV]
    return Path(weights_path) if weights_path is not None else cached_weights_path(default_weights(arch))


def load_classifier(
    arch: str = DEFAULT_ARCH, *, weights_path: str | os.PathLike | None = None, progress: bool = True
) -> tuple[nn.Module, WeightsEnum]:
    """A torchvision classifier with ImageNet weights, plus the weights entry carrying its metadata.

    The weights file is :func:`resolve_weights_path`'s; the default weights are downloaded once if missing.
    """
    weights = default_weights(arch)
    model = build_classifier(arch)
    model.arch = arch
    path = resolve_weights_path(arch, weights_path)
    if path == cached_weights_path(weights):
        path = fetch_default_weights(arch, progress=progress)
    _load_into(model, read_state_dict(path), str(path))
    return model.eval(), weights


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


def build_fcn(
    arch: str = DEFAULT_ARCH, *, pretrained: bool = True, weights_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> FullyConvolutionalNet:
    """The converted fully convolutional network of ``arch`` (a torchvision classifier or :data:`TINY_ARCH`).

    With ``pretrained`` (or a ``weights_path``) it holds the weights :func:`load_classifier` reads; otherwise a
    random initialisation. Class names, input size and normalisation come from torchvision's weights metadata.
    """
    if arch == TINY_ARCH:
        if pretrained and weights_path is None:
            raise WeightsError(f"{TINY_ARCH} has no pretrained weights; build it untrained or give a weights file")
        classifier = tiny_vgg_classifier()
        if weights_path is not None:
            _load_into(classifier, read_state_dict(weights_path), str(weights_path))
        preprocessing = default_weights(_TINY_PREPROCESSING_ARCH).transforms()
        return to_fully_convolutional(classifier, input_size=_TINY_INPUT_SIZE, arch=arch, mean=preprocessing.mean,
                                      std=preprocessing.std)
    if pretrained or weights_path is not None:
        classifier, weights = load_classifier(arch, weights_path=weights_path, progress=progress)
    else:
        classifier, weights = build_classifier(arch), default_weights(arch)
    preprocessing = weights.transforms()
    crop = int(preprocessing.crop_size[0])
    network = to_fully_convolutional(
        classifier,
        input_size=(crop, crop),
        categories=weights.meta["categories"],
        arch=arch,
        mean=preprocessing.mean,
        std=preprocessing.std,
    )
    logger.debug("converted %s (torchvision %s) to a fully convolutional network", arch, torchvision.__version__)
    return network


def load_fcn(
    arch: str = DEFAULT_ARCH, *, weights_path: str | os.PathLike | None = None, progress: bool = True
) -> FullyConvolutionalNet:
    """The converted network of a pretrained torchvision classifier, ready to score images (:func:`build_fcn`)."""
    return build_fcn(arch, pretrained=True, weights_path=weights_path, progress=progress)


def load_network(model: str, weights_path: str | os.PathLike | None = None) -> FullyConvolutionalNet:
    """The converted network named by ``model``: a torchvision architecture, or ``module:callable`` for your own.

    ``--model package.module:make_network`` imports ``package.module`` and calls ``make_network()``; it may
    return a :class:`FullyConvolutionalNet` (used as is) or a classifier that :func:`to_fully_convolutional`
    converts (224×224 input, no normalisation). This is how people run the CLI on their own classifiers, and how
    tests run folders of images through a tiny model in milliseconds.
    """
    if ":" not in model:
        return load_fcn(model, weights_path=weights_path)
    if weights_path is not None:
        raise OptionError("weights", f"cannot be combined with model {model}; the callable loads its own weights")
    module_name, _, attribute = model.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise OptionError("model", f"{model}: cannot import it ({error}); is the module on PYTHONPATH?") from None
    network = factory()
    if isinstance(network, FullyConvolutionalNet):
        return network.eval()
    if isinstance(network, nn.Module):
        return to_fully_convolutional(network, arch=model)
    raise OptionError("model", f"{model}: returned {type(network).__name__}, expected a torch nn.Module")
