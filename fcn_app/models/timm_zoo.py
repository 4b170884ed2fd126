"""timm CNNs (``--model timm:NAME``), converted by the same exact graph conversion as torchvision's classifiers.

timm models split their ``forward`` into ``forward_features`` (the body, ending in a feature map) and
``forward_head`` (global pool → head). The conversion traces exactly that pair, so the global pool becomes the
stride-1 window pool and the head runs per cell (:func:`.graph.convert_graph_classifier`); timm's own building
blocks (its channels-first LayerNorm, its squeeze-and-excitation gates) are registered with the conversion here.

timm is an optional extra (``pip install 'fcn-heatmap[timm]'``) and is imported only when a ``timm:`` name is used.
Weights: a local file (``.safetensors`` or a PyTorch state dict, read without running code), else timm's pretrained
weights from the Hugging Face cache (``$HF_HOME/hub``), downloaded once unless ``FCN_HEATMAP_OFFLINE`` is set.
"""

from __future__ import annotations

import difflib
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..choices import DEFAULT_ARCH, TIMM_PREFIX
from ..errors import ConversionError, OptionError, WeightsError, WeightsUnavailableError
from .graph import GraphFullyConvolutionalNet, convert_graph_classifier, register_module_kinds
from .zoo import OFFLINE_ENV, WEIGHTS_ENV, _materialise, class_names_for, \
    default_weights, read_state_dict

__all__ = ["INSTALL_HINT", "build_timm_classifier", "build_timm_fcn", "load_timm_fcn", "timm_weights_file"]

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'fcn-heatmap[timm]'"
#: Files timm publishes its weights as on the Hugging Face hub, preferred first.
_HUB_FILENAMES = ("model.safetensors", "pytorch_model.bin")
#: Attributes only transformers have: position embeddings of one fixed grid, class tokens.
_TRANSFORMER_ATTRIBUTES = ("pos_embed", "cls_token", "absolute_pos_embed")


def _import_timm():
    try:
        import timm
    except ImportError:
        raise OptionError("model", f"timm models need the optional timm package: {INSTALL_HINT}") from None
    _register_timm_blocks()
    return timm


def _register_timm_blocks() -> None:
    from timm import layers
    from timm.models import _efficientnet_blocks

    norms = [getattr(layers, name) for name in ("LayerNorm2d", "LayerNorm2dFp32", "RmsNorm2d", "RmsNorm2dFp32")
             if hasattr(layers, name)]
    gates = [layers.SEModule, layers.EffectiveSEModule, layers.SqueezeExcite, layers.EcaModule,
             _efficientnet_blocks.SqueezeExcite]
    register_module_kinds(per_cell=norms, global_gates=gates, leaves=[layers.Linear])


class _FeaturesThenHead(nn.Module):
    """A timm model run as ``forward_head(forward_features(x))``: the interface the conversion cuts at the pool."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_head(self.model.forward_features(x))


def _check_name(timm, name: str) -> None:
    if timm.is_model(name):
        return
    names = timm.list_models()
    nearest = difflib.get_close_matches(name.lower(), names, n=3, cutoff=0.6)
    hint = f"did you mean {', '.join(TIMM_PREFIX + found for found in nearest)}?" if nearest else \
        f"timm knows {len(names)} models (python -c 'import timm; print(timm.list_models())')"
    raise OptionError("model", f"unknown timm model {name!r}; {hint}")


def _transformer_reason(name: str, model: nn.Module) -> str | None:
    attention = next((type(module).__name__ for module in model.modules()
                      if type(module).__name__.endswith("Attention")), None)
    embedded = next((attribute for attribute in _TRANSFORMER_ATTRIBUTES
                     if isinstance(getattr(model, attribute, None), (torch.Tensor, nn.Parameter))), None)
    if attention is None and embedded is None:
        return None
    what = f"its {attention} layers attend across positions" if attention else f"it adds a {embedded} of one grid"
    return (f"{TIMM_PREFIX}{name} is a transformer: {what}, so its features on a larger image are not those of its "
            "windows and it has no exact sliding-window form; use a CNN (timm:resnet50, timm:convnext_tiny, "
            "timm:efficientnet_b0, …)")


def build_timm_classifier(name: str, *, num_classes: int | None = None) -> nn.Module:
    """A randomly initialised timm classifier (call inside ``torch.device("meta")`` for shapes only).

    Unknown names get the nearest timm names; transformers are refused with one line saying why.
    """
    timm = _import_timm()
    _check_name(timm, name)
    kwargs: dict[str, Any] = {} if num_classes is None else {"num_classes": num_classes}
    model = timm.create_model(name, pretrained=False, **kwargs)
    reason = _transformer_reason(name, model)
    if reason is not None:
        raise ConversionError(reason, option="model")
    return model.eval()


def _pretrained_cfg(name: str) -> dict[str, Any]:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def timm_weights_file(name: str, *, progress: bool = True) -> Path:
    """timm's pretrained weights for ``name`` in the Hugging Face cache, downloaded once if missing (one
    :class:`WeightsUnavailableError` line when that is impossible or forbidden by ``FCN_HEATMAP_OFFLINE``)."""
    _import_timm()
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cfg = _pretrained_cfg(name)
    hub_id = cfg.get("hf_hub_id")
    if not hub_id:
        raise WeightsUnavailableError(f"{TIMM_PREFIX}{name} has no pretrained weights on the Hugging Face hub; give "
                                      f"a local weights file or set {WEIGHTS_ENV}=PATH", option="weights")
    filenames = (cfg["hf_hub_filename"],) if cfg.get("hf_hub_filename") else _HUB_FILENAMES
    for filename in filenames:
        cached = try_to_load_from_cache(hub_id, filename)
        if isinstance(cached, str):
            return Path(cached)

    def unavailable(reason: str) -> WeightsUnavailableError:
        return WeightsUnavailableError(
            f"pretrained weights of {TIMM_PREFIX}{name} ({hub_id}/{filenames[0]}) are not in the Hugging Face cache "
            f"and not downloadable ({reason}). Run the same command once on a machine with internet and copy its "
            f"cache (~/.cache/huggingface, or $HF_HOME), or give a local weights file / set {WEIGHTS_ENV}=PATH",
            option="weights")

    if os.environ.get(OFFLINE_ENV, "").strip() not in ("", "0"):
        raise unavailable(f"{OFFLINE_ENV} is set")
    logger.info("downloading %s/%s into the Hugging Face cache", hub_id, filenames[0])
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)  # its retry warnings would break the one-line error; the reason is below
    try:
        return Path(hf_hub_download(hub_id, filenames[0]))
    except Exception as error:  # noqa: BLE001 — network, HTTP and offline-mode errors all mean "not available"
        first_sentence = str(error).strip().splitlines()[0].split(". ")[0][:160] if str(error).strip() else ""
        raise unavailable(first_sentence or type(error).__name__) from None
    finally:
        hub_logger.setLevel(level)


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not path.is_file():
            raise WeightsError(f"{path}: weights file not found")
        try:
            return load_file(str(path))
        except (SafetensorError, OSError) as error:
            raise WeightsError(f"{path}: not a safetensors file ({str(error)[:160]})") from None
    return read_state_dict(path)


def _file_num_classes(name: str, state_dict: dict[str, torch.Tensor]) -> int | None:
    """Outputs of the classifier layer timm names in the model's pretrained config (``None``: the default)."""
    classifier = _pretrained_cfg(name).get("classifier")
    key = f"{classifier}.weight" if isinstance(classifier, str) else None
    return int(state_dict[key].shape[0]) if key in state_dict else None


def build_timm_fcn(
    name: str,
    *,
    pretrained: bool = True,
    weights_path: str | os.PathLike | None = None,
    classes_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> GraphFullyConvolutionalNet:
    """The exact sliding-window network of timm CNN ``name`` (``"resnet50"``, ``"convnext_tiny.fb_in1k"``, …).

    Weights: ``weights_path`` (or ``$FCN_HEATMAP_WEIGHTS``), else timm's pretrained file when ``pretrained``, else a
    random initialisation. Training size and normalisation come from timm's data config; class names are
    ImageNet's for 1000 outputs, else read from ``classes_path``.
    """
    timm = _import_timm()
    with torch.device("meta"):  # unknown names and transformers are refused before any weights are read
        build_timm_classifier(name)
    if weights_path is None and os.environ.get(WEIGHTS_ENV):
        weights_path = os.environ[WEIGHTS_ENV]
    if weights_path is None and pretrained:
        weights_path = timm_weights_file(name, progress=progress)
    if weights_path is not None:
        state_dict = _read_weights(Path(weights_path))
        with torch.device("meta"):
            model = build_timm_classifier(name, num_classes=_file_num_classes(name, state_dict))
        model.arch = TIMM_PREFIX + name
        _materialise(model, state_dict, str(weights_path))
    else:
        model = build_timm_classifier(name)
    data = timm.data.resolve_data_config({}, model=model)
    input_size = (int(data["input_size"][1]), int(data["input_size"][2]))
    categories = class_names_for(model.num_classes, classes_path, default_weights(DEFAULT_ARCH).meta["categories"])
    try:
        network = convert_graph_classifier(
            _FeaturesThenHead(model.eval()), input_size=input_size, categories=categories, arch=TIMM_PREFIX + name,
            mean=tuple(data["mean"]), std=tuple(data["std"]),
        )
    except (AssertionError, TypeError, ValueError, NotImplementedError) as error:  # timm's own shape checks
        raise ConversionError(f"{TIMM_PREFIX}{name} cannot be converted exactly: its forward fails on the feature "
                              f"grid ({str(error).splitlines()[0][:160] if str(error) else type(error).__name__})",
                              option="model") from None
    logger.debug("converted %s%s (timm %s) to a fully convolutional network", TIMM_PREFIX, name, timm.__version__)
    return network


def load_timm_fcn(
    name: str,
    *,
    weights_path: str | os.PathLike | None = None,
    classes_path: str | os.PathLike | None = None,
    progress: bool = True,
) -> GraphFullyConvolutionalNet:
    """:func:`build_timm_fcn` with pretrained weights (a local file or the Hugging Face cache)."""
    return build_timm_fcn(name, pretrained=True, weights_path=weights_path, classes_path=classes_path,
                          progress=progress)
