"""Every classifier ``--model`` can name, with what it becomes and what an offline user must fetch.

Two halves:

- **Recorded** (:func:`recorded_models`, :func:`recorded_model`): ``models/catalog.json`` in the package, written by
  ``scripts/make_model_catalog.py``, one row per torchvision classifier and per timm CNN the project converts.
  Reading it imports neither torch nor torchvision, so ``fcn-heatmap models`` answers at once and ``compare`` knows
  before loading a model whether it ends in global pooling. ``tests/test_model_catalog.py`` checks the names,
  weights, URLs and files against torchvision's registry as installed, and the geometry against
  :func:`describe_model`.
- **Computed** (:func:`describe_model`, :func:`describe_timm_model`): each model is built on the meta device (no
  weights read, nothing computed) and converted; its window (feature cells pooled at the training size) and stride
  (input pixels per feature cell, from how the grid grows) come from the converted network itself.
"""

from __future__ import annotations

import fnmatch
import functools
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

__all__ = ["CATALOG_FILE", "ModelInfo", "describe", "describe_model", "describe_timm_model", "find_models",
           "recorded_model", "recorded_models", "recorded_versions"]

#: The recorded catalog (scripts/make_model_catalog.py writes it). Found by path: importing ``fcn_app.models`` to
#: locate it would import torch.
CATALOG_FILE = Path(__file__).resolve().parent / "models" / "catalog.json"
#: Where timm keeps a Hugging Face hub file, as ``hf_hub_download`` fetches it.
_HUB_URL = "https://huggingface.co/{repo}/resolve/main/{file}"
#: ``--model timm:NAME`` (:data:`.models.zoo.TIMM_PREFIX`, not imported: that module imports torch).
_TIMM_PREFIX = "timm:"


@dataclass(frozen=True)
class ModelInfo:
    """One classifier: what ``--model`` calls it, what it converts to, and its default weights.

    ``window`` (feature cells) and ``stride`` (input pixels per cell) are ``None`` for a model with no exact
    sliding-window form (``exact`` false, ``reason`` says why). ``free_window``: it ends in global pooling, so
    ``--window`` and ``--method cam`` apply. ``size_mb`` is the weights file's size as the registry states it
    (torchvision's ``_file_size``, in MB), ``None`` where it states none (timm's Hugging Face files).
    """

    name: str
    weights: str
    input_size: int | None
    window: tuple[int, int] | None
    stride: int | None
    global_context: bool
    source: str = "torchvision"
    family: str = ""
    free_window: bool = False
    exact: bool = True
    reason: str | None = None
    file: str | None = None
    size_mb: float | None = None
    url: str | None = None

    def to_dict(self) -> dict:
        record = asdict(self)
        record["window"] = list(self.window) if self.window is not None else None
        return record

    @classmethod
    def from_dict(cls, record: dict) -> "ModelInfo":
        known = {field.name for field in fields(cls)}
        values = {key: value for key, value in record.items() if key in known}
        if values.get("window") is not None:
            values["window"] = tuple(values["window"])
        return cls(**values)


@functools.lru_cache(maxsize=4)
def _read_catalog(path: str, modified: float) -> tuple[tuple[ModelInfo, ...], dict[str, str]]:
    with open(path, encoding="utf-8") as file:
        document = json.load(file)
    return tuple(ModelInfo.from_dict(record) for record in document["models"]), dict(document.get("versions", {}))


def _catalog(path: str | os.PathLike | None) -> tuple[tuple[ModelInfo, ...], dict[str, str]]:
    path = Path(path) if path is not None else CATALOG_FILE
    return _read_catalog(str(path), path.stat().st_mtime)


def recorded_models(path: str | os.PathLike | None = None) -> list[ModelInfo]:
    """Every model of the recorded catalog (``path``, default :data:`CATALOG_FILE`), in its order: torchvision's
    classifiers as ``torchvision.models.list_models`` lists them, then timm's."""
    return list(_catalog(path)[0])


def recorded_versions(path: str | os.PathLike | None = None) -> dict[str, str]:
    """The versions of torch, torchvision and timm the recorded catalog was made with."""
    return dict(_catalog(path)[1])


def recorded_model(name: str) -> ModelInfo | None:
    """The recorded row of ``--model`` ``name`` (``timm:`` names too, with or without a pretrained tag), or
    ``None`` for a model the catalog does not hold (``module:callable``, an unlisted timm model)."""
    rows = {info.name: info for info in recorded_models()}
    if name in rows:
        return rows[name]
    if name.startswith(_TIMM_PREFIX) and "." in name:  # timm:convnext_tiny.fb_in1k: the architecture's row
        return rows.get(name.split(".", 1)[0])
    return None


def find_models(pattern: str | None = None, *, source: str | None = None) -> list[ModelInfo]:
    """Recorded models whose name matches ``pattern`` — a shell pattern (``resnet*``, ``timm:*``) or else a
    substring (``convnext``), case-insensitive — and, if given, whose ``source`` is ``torchvision`` or ``timm``."""
    rows = [info for info in recorded_models() if source is None or info.source == source]
    if not pattern:
        return rows
    pattern = pattern.lower()
    if any(character in pattern for character in "*?["):
        return [info for info in rows if fnmatch.fnmatchcase(info.name.lower(), pattern)]
    return [info for info in rows if pattern in info.name.lower()]


def _window_and_stride(network, crop: int) -> tuple[tuple[int, int], int, bool]:
    """``(window, stride, global_context)`` of a converted network built for ``crop``-pixel training images."""
    import torch

    from .models.graph import GraphFullyConvolutionalNet

    if isinstance(network, GraphFullyConvolutionalNet):
        grow = network.feature_grid((crop + 1024, crop))[0] - network.feature_grid((crop, crop))[0]
        return tuple(network.window), 1024 // grow, network.global_context
    from .geometry import network_geometry  # VGG/AlexNet: the converted fc6 kernel is the window

    first = next(layer for layer in network.head if isinstance(layer, torch.nn.Conv2d))
    return tuple(first.kernel_size), int(network_geometry(network).stride[0]), False


def describe_model(arch: str) -> ModelInfo:
    """``arch`` (a torchvision classifier) as the catalog records it: its default weights' facts, and the window
    and stride of its converted network (built on the meta device: no weights are read or computed). A model
    without an exact sliding-window form (ViT, Swin, MaxViT) gets ``exact`` false and the reason."""
    import torch
    from torchvision.models import get_model_builder, get_model_weights

    from .models.convert import convert_classifier
    from .models.graph import has_free_window
    from .models.zoo import _drop_auxiliary_heads, _refused_reason, build_classifier

    weights = get_model_weights(arch).DEFAULT
    crop = int(weights.transforms().crop_size[0])
    facts = dict(name=arch, weights=str(weights), input_size=crop, source="torchvision",
                 family=get_model_builder(arch).__module__.rsplit(".", 1)[-1], file=os.path.basename(weights.url),
                 size_mb=weights.meta.get("_file_size"), url=weights.url)
    reason = _refused_reason(arch)
    if reason is not None:
        return ModelInfo(**facts, window=None, stride=None, global_context=False, exact=False, reason=reason)
    with torch.device("meta"):
        classifier = _drop_auxiliary_heads(build_classifier(arch), arch).eval()
    network = convert_classifier(classifier, input_size=crop, arch=arch)
    window, stride, global_context = _window_and_stride(network, crop)
    return ModelInfo(**facts, window=window, stride=stride, global_context=global_context,
                     free_window=has_free_window(network))


def describe_timm_model(name: str) -> ModelInfo:
    """timm model ``name`` (no ``timm:`` prefix) as the catalog records it: its default pretrained weights on the
    Hugging Face hub, and the window and stride of its converted network (meta device). A model that does not
    convert exactly (a transformer) gets ``exact`` false and the reason."""
    import torch

    from .errors import ConversionError
    from .models.graph import convert_graph_classifier, has_free_window
    from .models.timm_zoo import _FeaturesThenHead, _import_timm, _pretrained_cfg, _transformer_reason

    timm = _import_timm()
    cfg = _pretrained_cfg(name)
    hub_file = cfg.get("hf_hub_filename") or "model.safetensors"
    hub_id = cfg.get("hf_hub_id")
    facts = dict(name=_TIMM_PREFIX + name, weights=f"{cfg.get('architecture', name)}.{cfg.get('tag')}"
                 if cfg.get("tag") else name, source="timm", file=hub_file if hub_id else None, size_mb=None,
                 url=_HUB_URL.format(repo=hub_id, file=hub_file) if hub_id else None)
    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    facts["family"] = type(model).__module__.rsplit(".", 1)[-1]
    crop = int(timm.data.resolve_data_config({}, model=model)["input_size"][-1])
    reason = _transformer_reason(name, model)
    if reason is None:
        try:
            network = convert_graph_classifier(_FeaturesThenHead(model), input_size=crop, arch=_TIMM_PREFIX + name)
        except ConversionError as error:
            reason = str(error)
    if reason is not None:
        return ModelInfo(**facts, input_size=crop, window=None, stride=None, global_context=False, exact=False,
                         reason=reason)
    window, stride, global_context = _window_and_stride(network, crop)
    return ModelInfo(**facts, input_size=crop, window=window, stride=stride, global_context=global_context,
                     free_window=has_free_window(network))


def describe(name: str) -> ModelInfo:
    """The catalog row of ``--model`` ``name`` computed now: :func:`describe_timm_model` for ``timm:NAME``, else
    :func:`describe_model`."""
    if name.startswith(_TIMM_PREFIX):
        return describe_timm_model(name[len(_TIMM_PREFIX):])
    return describe_model(name)
