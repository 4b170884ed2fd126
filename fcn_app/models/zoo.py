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

import contextlib
import difflib
import functools
import logging
import os
import pickle
import re
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.error import URLError

import torch
from torch import nn

from ..choices import DEFAULT_ARCH, TINY_ARCH
from ..classes import imagenet_categories, read_class_names
from ..errors import OptionError, WeightsError, WeightsUnavailableError
from .convert import FullyConvolutionalNet, convert_classifier, to_fully_convolutional
from .graph import _REFUSED
from .vgg import VGG_WEIGHTS, WeightsFacts, vgg_shapes

if TYPE_CHECKING:
    from torchvision.models import WeightsEnum

# torchvision is imported where it is needed, not here: its import takes about as long as torch's (it pulls in
# torch._dynamo), and the default VGG16 loads without it (see .vgg).

__all__ = [
    "DEFAULT_ARCH",
    "OFFLINE_ENV",
    "SUPPORTED_ARCHS",
    "TINY_ARCH",
    "WEIGHTS_ENV",
    "build_classifier",
    "build_fcn",
    "cached_weights_path",
    "class_names_for",
    "default_weights",
    "fetch_default_weights",
    "fetch_weights",
    "load_classifier",
    "load_fcn",
    "read_class_names",
    "read_state_dict",
    "resolve_weights_path",
    "safe_torch_load",
    "tiny_vgg_classifier",
]

logger = logging.getLogger(__name__)

#: tiny_vgg has vgg11_bn's layout at a fraction of the width; its input normalisation is that of vgg11_bn's weights.
_TINY_PREPROCESSING_ARCH = "vgg11_bn"
_TINY_INPUT_SIZE = 32
WEIGHTS_ENV = "FCN_HEATMAP_WEIGHTS"
OFFLINE_ENV = "FCN_HEATMAP_OFFLINE"
_HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")
#: torchvision classifiers without an exact sliding-window form, by name prefix → the class that says why.
_REFUSED_PREFIXES = {"vit_": "VisionTransformer", "swin_": "SwinTransformer", "maxvit": "MaxVit"}
#: GoogLeNet and Inception-v3 weights were ported from TensorFlow: torchvision builds them with auxiliary heads
#: (their weights are in the file) and with ``transform_input``, which re-normalises ImageNet-normalised input to
#: the [-1, 1] range those weights expect. Building them otherwise would silently change every score.
_PORTED_FROM_TENSORFLOW = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}


def _refused_reason(arch: str) -> str | None:
    for prefix, class_name in _REFUSED_PREFIXES.items():
        if arch.startswith(prefix):
            return _REFUSED[class_name]
    return None


@functools.lru_cache(maxsize=1)
def _torchvision_classifiers() -> tuple[str, ...]:
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


@functools.lru_cache(maxsize=1)
def _supported_archs() -> tuple[str, ...]:
    return tuple(name for name in _torchvision_classifiers() if _refused_reason(name) is None)


def __getattr__(name: str) -> Any:
    if name == "SUPPORTED_ARCHS":  # computed on first use: listing the models imports torchvision
        return _supported_archs()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _check_arch(arch: str) -> str:
    supported = _supported_archs()
    if arch in supported:
        return arch
    reason = _refused_reason(arch) if arch in _torchvision_classifiers() else None
    if reason is not None:
        raise OptionError("model", f"{arch!r} cannot be converted exactly: {reason}")
    nearest = difflib.get_close_matches(arch.lower(), supported, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(nearest)}?" if nearest else f"{len(supported)} models are supported"
    raise OptionError("model", f"unknown model {arch!r}; {hint}")


def default_weights(arch: str = DEFAULT_ARCH) -> WeightsEnum:
    """torchvision's recommended ImageNet weights for ``arch`` (``DEFAULT``: url, categories, transforms).

    ``DEFAULT`` is the most accurate ImageNet-1k entry torchvision ships (``IMAGENET1K_V1`` for VGG and AlexNet,
    ``IMAGENET1K_V2`` for e.g. ResNet-50); its evaluation transforms give the window size.
    """
    from torchvision.models import get_model_weights

    return get_model_weights(_check_arch(arch)).DEFAULT


def _weights_facts(arch: str) -> WeightsFacts:
    """Url, crop and normalisation of ``arch``'s default weights (the VGG family's without importing torchvision)."""
    if arch in VGG_WEIGHTS:
        return VGG_WEIGHTS[arch]
    weights = default_weights(arch)
    preprocessing = weights.transforms()
    return WeightsFacts(weights.url, int(preprocessing.crop_size[0]), tuple(preprocessing.mean),
                        tuple(preprocessing.std))


def _default_categories(arch: str) -> list[str]:
    """The class names of ``arch``'s default weights (ImageNet's for the VGG family, read without torchvision)."""
    names = imagenet_categories() if arch in VGG_WEIGHTS else None
    return names if names is not None else list(default_weights(arch).meta["categories"])


def build_classifier(arch: str = DEFAULT_ARCH, *, num_classes: int = 1000, aux_logits: bool = True) -> nn.Module:
    """A randomly initialised torchvision classifier (weights are loaded separately).

    Called inside ``with torch.device("meta")`` it builds shapes only (fast, no memory), RegNet included.
    """
    from torchvision.models import get_model

    kwargs: dict[str, Any] = {"num_classes": num_classes}
    if _check_arch(arch) in _PORTED_FROM_TENSORFLOW:
        kwargs.update(aux_logits=aux_logits, transform_input=True, init_weights=False)
    if arch.startswith("regnet"):
        with _regnet_widths_on_cpu():
            return get_model(arch, weights=None, **kwargs)
    return get_model(arch, weights=None, **kwargs)


@contextlib.contextmanager
def _regnet_widths_on_cpu():
    """RegNet's builder computes its layer widths with tensor ops, which fail under ``torch.device("meta")``; run
    that arithmetic on the CPU so the model itself can still be built as shapes only."""
    from torchvision.models import regnet

    original = regnet.BlockParams.__dict__["from_init_params"]

    def from_init_params(cls, *args, **kwargs):
        with torch.device("cpu"):
            return original.__func__(cls, *args, **kwargs)

    regnet.BlockParams.from_init_params = classmethod(from_init_params)
    try:
        yield
    finally:
        regnet.BlockParams.from_init_params = original


def _drop_auxiliary_heads(model: nn.Module, arch: str) -> nn.Module:
    """What torchvision does after loading GoogLeNet/Inception weights: the eval-time network has no aux heads."""
    if arch in _PORTED_FROM_TENSORFLOW:
        model.aux_logits = False
        for name in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, name):
                setattr(model, name, None)
    return model


def cached_weights_path(weights: WeightsEnum | WeightsFacts) -> Path:
    """Where torch's hub cache keeps ``weights`` (honours ``TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def _default_weights_file(arch: str) -> Path:
    return cached_weights_path(VGG_WEIGHTS[arch] if arch in VGG_WEIGHTS else default_weights(arch))


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
    destination = _default_weights_file(arch)  # the VGG family's file is known without importing torchvision
    if destination.is_file():
        return destination
    return fetch_weights(default_weights(arch), progress=progress)


def fetch_weights(weights: WeightsEnum, *, progress: bool = True) -> Path:
    """Path of ``weights`` in the torch hub cache, downloaded once (with a progress bar) if missing; with
    ``$FCN_HEATMAP_OFFLINE`` set, or no route to the server, one line saying where to put the file."""
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


def safe_torch_load(path: str | os.PathLike, what: str = "weights file", *, mmap: bool = False) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, every failure turned into one :class:`WeightsError` line.

    A pickle that carries code or arbitrary objects is refused, never run. With ``mmap`` a file in torch's zip
    format is memory-mapped (copy-on-write) instead of read into fresh memory: tensors are paged in from the page
    cache as they are used, which saves copying VGG16's 528 MB at start-up; older (legacy-format) files are read.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: {what} not found" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # protocol notes from the safe unpickler
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and zipfile.is_zipfile(path))
    except pickle.UnpicklingError as error:
        reason = str(error).split("WeightsUnpickler error:")[-1].strip().splitlines()[0][:160]
        # torch ≥ 2.6 words a blocked module ("unsupported GLOBAL posix.system whose module posix is blocked")
        # on a line of its own, without the WeightsUnpickler prefix
        reason = next((line.strip()[:160] for line in str(error).splitlines() if "GLOBAL" in line), reason)
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
    payload = safe_torch_load(path, "weights file", mmap=True)
    for key in ("state_dict", "model"):
        if isinstance(payload, dict) and isinstance(payload.get(key), dict):
            payload = payload[key]
    if not isinstance(payload, dict) or not all(isinstance(value, torch.Tensor) for value in payload.values()):
        raise WeightsError(f"{path}: does not contain a state dict (a mapping of names to tensors)")
    return payload


def _load_into(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    _check_fits(model, state_dict, source)
    model.load_state_dict(state_dict)


def _check_fits(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """One :class:`WeightsError` line naming the first mismatch (a key, its shape and the expected one)."""
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


def _meta_classifier(arch: str, *, num_classes: int = 1000, aux_logits: bool = True, fast: bool = False
                     ) -> nn.Module:
    """``arch``'s module tree on the meta device, for loading weights with ``assign``; with ``fast``, the VGG family
    is built by :func:`.vgg.vgg_shapes` (same tree and names as torchvision's, no torchvision import)."""
    with torch.device("meta"):
        if fast and arch in VGG_WEIGHTS:
            return vgg_shapes(arch, num_classes)
        return build_classifier(arch, num_classes=num_classes, aux_logits=aux_logits)


def _file_num_classes(arch: str, state_dict: dict[str, torch.Tensor], fast: bool = False) -> int:
    """The number of classes a state dict for ``arch`` was trained for: torchvision's 1000 unless only the
    classification layers (their output size) differ — a fine-tuned head. Anything else is left to the loader's
    mismatch message."""
    expected = _meta_classifier(arch, fast=fast).state_dict()
    class_keys = {key for key, tensor in expected.items() if tensor.dim() and tensor.shape[0] == 1000}
    differing = {key for key, tensor in expected.items() if key in state_dict and state_dict[key].shape != tensor.shape}
    sizes = {int(state_dict[key].shape[0]) for key in differing if state_dict[key].dim()}
    if differing and differing == class_keys and len(sizes) == 1 and all(
        state_dict[key].shape[1:] == expected[key].shape[1:] for key in differing
    ):
        return sizes.pop()
    return 1000


def _materialise(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Load ``state_dict`` into a meta-built ``model`` without ever running the (slow) random initialisation."""
    _check_fits(model, state_dict, source)
    if getattr(state_dict, "_metadata", None) is None:  # a plain dict: its layout is today's (MNASNet checks)
        state_dict = OrderedDict(state_dict)
        state_dict._metadata = model.state_dict()._metadata  # type: ignore[attr-defined]
    model.load_state_dict(state_dict, assign=True)
    leftover = [name for name, tensor in (*model.named_parameters(), *model.named_buffers()) if tensor.is_meta]
    if leftover:
        raise WeightsError(f"{source}: no values for {leftover[0]} of {getattr(model, 'arch', 'the model')}")
    return model


def resolve_weights_path(arch: str = DEFAULT_ARCH, weights_path: str | os.PathLike | None = None) -> Path:
    """The file that holds ``arch``'s weights: ``weights_path``, else ``$FCN_HEATMAP_WEIGHTS``, else the hub-cache
    path of the default weights (which may not have been downloaded yet)."""
    if weights_path is None and os.environ.get(WEIGHTS_ENV):
        weights_path = os.environ[WEIGHTS_ENV]
    return Path(weights_path) if weights_path is not None else _default_weights_file(arch)


def load_classifier(
    arch: str = DEFAULT_ARCH, *, weights_path: str | os.PathLike | None = None, progress: bool = True
) -> tuple[nn.Module, WeightsEnum]:
    """A torchvision classifier with ImageNet weights, plus the weights entry carrying its metadata.

    The weights file is :func:`resolve_weights_path`'s; the default weights are downloaded once if missing. A
    fine-tuned state dict may have another number of classes (read from its final layer's size).
    """
    return _load_weighted(arch, weights_path, progress), default_weights(arch)


def _load_weighted(arch: str, weights_path: str | os.PathLike | None, progress: bool, fast: bool = False) -> nn.Module:
    """:func:`load_classifier`'s model; with ``fast`` a VGG is :func:`.vgg.vgg_shapes`' tree (no torchvision)."""
    path = resolve_weights_path(arch, weights_path)
    if path == _default_weights_file(arch):
        path = fetch_default_weights(arch, progress=progress)
    state_dict = read_state_dict(path)
    aux_prefixes = _PORTED_FROM_TENSORFLOW.get(arch, ())
    has_aux = any(key.startswith(aux_prefixes) for key in state_dict) if aux_prefixes else True
    num_classes = _file_num_classes(arch, state_dict, fast) if has_aux else 1000
    model = _meta_classifier(arch, num_classes=num_classes, aux_logits=has_aux, fast=fast)
    model.arch = arch
    _materialise(model, state_dict, str(path))
    return _drop_auxiliary_heads(model, arch).eval()


def class_names_for(num_classes: int, classes_path: str | os.PathLike | None,
                    imagenet_categories: Sequence[str]) -> list[str]:
    """Names of a classifier's outputs: from ``classes_path`` (one per line) if given, else ImageNet's when it has
    as many outputs; otherwise one :class:`WeightsError` line asking for the file."""
    if classes_path is not None:
        categories = read_class_names(classes_path)
        if len(categories) != num_classes:
            raise WeightsError(f"{classes_path}: {len(categories)} class names for a model with {num_classes} "
                               "classes; give one name per line for each output", option="classes")
        return categories
    if num_classes == len(imagenet_categories):
        return list(imagenet_categories)
    raise WeightsError(f"the weights have {num_classes} classes, not ImageNet's {len(imagenet_categories)}"
                       "; name them in a text file, one per line, and give it as the class names file",
                       option="classes")


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
    arch: str = DEFAULT_ARCH,
    *,
    pretrained: bool = True,
    weights_path: str | os.PathLike | None = None,
    classes_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> FullyConvolutionalNet:
    """The converted fully convolutional network of ``arch`` (a torchvision classifier or :data:`TINY_ARCH`).

    With ``pretrained`` (or a ``weights_path``) it holds the weights :func:`load_classifier` reads; otherwise a
    random initialisation. Input size and normalisation come from torchvision's weights metadata; class names
    too, or from ``classes_path`` (one per line) — needed when a fine-tuned file has another number of classes.
    """
    if arch == TINY_ARCH:
        if pretrained and weights_path is None:
            raise WeightsError(f"{TINY_ARCH} has no pretrained weights; build it untrained or give a weights file")
        classifier = tiny_vgg_classifier()
        if weights_path is not None:
            _load_into(classifier, read_state_dict(weights_path), str(weights_path))
        preprocessing = _weights_facts(_TINY_PREPROCESSING_ARCH)
        return to_fully_convolutional(classifier, input_size=_TINY_INPUT_SIZE, arch=arch, mean=preprocessing.mean,
                                      std=preprocessing.std)
    if pretrained or weights_path is not None:
        classifier = _load_weighted(arch, weights_path, progress, fast=True)
    else:
        classifier = _drop_auxiliary_heads(build_classifier(arch), arch).eval()
    preprocessing = _weights_facts(arch)
    crop = preprocessing.crop
    categories = class_names_for(_output_size(classifier), classes_path, _default_categories(arch))
    network = convert_classifier(
        classifier,
        input_size=(crop, crop),
        categories=categories,
        arch=arch,
        mean=preprocessing.mean,
        std=preprocessing.std,
        copy_weights=False,  # the classifier was built here only to be converted
    )
    logger.debug("converted %s to a fully convolutional network", arch)
    return network


def load_fcn(
    arch: str = DEFAULT_ARCH,
    *,
    weights_path: str | os.PathLike | None = None,
    classes_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> FullyConvolutionalNet:
    """The converted network of a pretrained torchvision classifier, ready to score images (:func:`build_fcn`)."""
    return build_fcn(arch, pretrained=True, weights_path=weights_path, classes_path=classes_path, progress=progress)


def _output_size(classifier: nn.Module) -> int:
    """Number of classes of a torchvision classifier: the output size of its last Linear (or 1×1 conv) layer."""
    last = [module for module in classifier.modules() if isinstance(module, (nn.Linear, nn.Conv2d))][-1]
    return last.out_features if isinstance(last, nn.Linear) else last.out_channels
