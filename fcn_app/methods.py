"""Heatmap methods: the classifier's exact window scores, class activation mapping, or a saliency map of
pytorch-grad-cam.

``fcn`` (the default) is this project's map: the classifier's verdict on every window, softmax per cell.
``cam`` is class activation mapping (Zhou et al. 2016), only for classifiers ending in global pooling: the network
scores every feature cell on its own (:func:`fcn_app.models.graph.with_window` with a window of one cell), and the
class's logit there — for a head that is one linear layer after the pool, the class's fc weights over the last
feature map plus its bias — is scaled per map to [0, 1] and placed on the pixels by the derived geometry
(:func:`class_activation_map`). The per-cell *probability* of that network is ``--window 1`` with ``fcn``.
Every other method is one of pytorch-grad-cam's (an optional extra, ``pip install 'fcn-heatmap[cam]'``), run on the
same network seen as an image classifier (:class:`WindowClassifier`) with the target layer chosen where the
conversion split the classifier: the body's output, the last convolutional stage before the global pool
(``features``; overridable by name).

Saliency maps (``cam`` and pytorch-grad-cam's) are scaled per map to [0, 1]; they say *where* relative to the rest
of the image, not *how sure*. What the classifier says about the class is given beside each map: its probability on
its surest window (:attr:`SaliencyMaps.window_probabilities`; for ``cam`` a window is one feature cell).
"""

from __future__ import annotations

import contextlib
import importlib
import io
import time
from dataclasses import dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
from torch import nn

from .choices import CAM, FCN, INSTALL_HINT, METHODS, check_method
from .errors import FcnError, MissingExtraError, OptionError
from .geometry import ScoreGeometry, upsample_to_pixels
from .heatmaps import (ClassHeatmap, ClassSelection, heatmap_for_class, min_max_scaled, resolve_classes,
                       selection_probabilities, top_classes)
from .method_registry import MethodKind, get_method
from .models.graph import with_window
from .resolution import working_pixels_on_original
from .scoring import ScoreMap, compute_score_map, prepare_batch

__all__ = [
    "CAM",
    "FCN",
    "INSTALL_HINT",
    "METHODS",
    "MethodMap",
    "SaliencyMaps",
    "WindowClassifier",
    "backend_note",
    "class_activation_map",
    "class_activation_maps",
    "class_score_function",
    "method_heatmap",
    "check_method",
    "method_network",
    "require_grad_cam",
    "resolve_target_layer",
    "target_layer_names",
    "saliency_maps",
]

#: The layer saliency methods read by default: the body, up to where the conversion split off the head.
DEFAULT_TARGET_LAYER = "features"


def backend_note(method: str, backend: str | None) -> str | None:
    """The one line to show when a saliency method was asked for with another inference backend than torch:
    they hook and differentiate the torch network itself, so they run on torch whatever the backend."""
    method = get_method(method)
    if backend in (None, "torch", "auto") or not method.runs_on_torch_only:  # auto may pick torch: nothing to say
        return None
    return f"{method.name} runs on the torch backend (it needs the torch network's activations and " \
           f"gradients), not on {backend}"


def require_grad_cam(method: str):
    """The module that makes ``method``'s maps (``pytorch_grad_cam``), or :class:`MissingExtraError` with the
    install line."""
    entry = get_method(method)
    try:
        return importlib.import_module(entry.module)
    except ImportError:
        raise MissingExtraError(f"the {method} method needs {entry.package}, an optional extra: {entry.install_hint}",
                                option="method") from None


def method_network(network: nn.Module, method: str) -> nn.Module:
    """The network a method scores with: ``cam`` scores every feature cell on its own (a window of one cell),
    others use the network itself."""
    method = get_method(method)
    if method.window is None:
        return network
    try:
        return with_window(network, method.window)
    except FcnError as error:
        raise OptionError("method", f"{method.name}: {error}") from None


class WindowClassifier(nn.Module):
    """A fully convolutional classifier seen as an image classifier, for methods that explain one score per class.

    The score of class ``k`` is its logit on the window where it is highest: what a sliding-window classifier says
    about "is there a ``k`` in this image". At the classifier's training size there is one window and this is
    exactly the original classifier's logits.
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def cell_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.cell_logits(images).flatten(2).amax(dim=2)


class _SelectionTarget:
    """pytorch-grad-cam target of a class selection: the logit of its class, or for a selection of several
    classes the log of their summed exponentials (monotone in their summed probability)."""

    def __init__(self, indices: tuple[int, ...]) -> None:
        self.indices = list(indices)

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        scores = output[..., self.indices]
        return scores[..., 0] if len(self.indices) == 1 else scores.logsumexp(dim=-1)


def resolve_target_layer(network: nn.Module, name: str | None = None) -> tuple[str, nn.Module]:
    """``(name, module)`` a saliency method reads: ``features`` (the body up to the global pool or the first
    window layer) unless another submodule is named (``features.layer4`` or ``layer4``)."""
    name = DEFAULT_TARGET_LAYER if name is None else str(name).strip()
    for candidate in (name, f"{DEFAULT_TARGET_LAYER}.{name}"):
        try:
            return candidate, network.get_submodule(candidate)
        except AttributeError:
            continue
    convolutions = [layer for layer, module in network.named_modules() if isinstance(module, nn.Conv2d)
                    and layer.startswith(DEFAULT_TARGET_LAYER + ".")]
    hint = f"; its last convolutions are {', '.join(convolutions[-3:])}" if convolutions else ""
    raise OptionError("target_layer", f"the network has no layer {name!r}{hint} (default: {DEFAULT_TARGET_LAYER}, "
                                      "the body's output)")


def target_layer_names(network: nn.Module) -> list[tuple[str, str]]:
    """``(name, module type)`` of every layer :func:`resolve_target_layer` accepts by its full name, the default
    first: the body (``features``) and its submodules — or every submodule of a network without that body."""
    modules = list(network.named_modules())
    body = [(name, module) for name, module in modules
            if name == DEFAULT_TARGET_LAYER or name.startswith(DEFAULT_TARGET_LAYER + ".")]
    return [(name, type(module).__name__) for name, module in (body or [entry for entry in modules if entry[0]])]


@dataclass
class SaliencyMaps:
    """One image's saliency maps: one per class selection, ``K×H×W`` float32 in [0, 1] on the network input."""

    method: str
    selections: list[ClassSelection]
    maps: np.ndarray
    window_probabilities: list[float]  # the classifier's probability of each selection on its surest window
    target_layer: str
    seconds: float  # time to compute the maps (not the class choice)
    image_size: tuple[int, int]
    cells: ScoreGeometry  # the target layer's cells on the image, where pytorch-grad-cam's resize centres them


def _window_probabilities(classifier: WindowClassifier, batch: torch.Tensor, layer: nn.Module
                          ) -> tuple[torch.Tensor, tuple[int, int]]:
    """``K×rows×cols`` probabilities per window, and the grid ``(rows, cols)`` of ``layer``'s output on the way."""
    grid = []
    hook = layer.register_forward_hook(lambda module, inputs, output: grid.append(tuple(output.shape[-2:])))
    try:
        with torch.no_grad():
            return torch.softmax(classifier.cell_logits(batch).float(), dim=1)[0], grid[-1]
    finally:
        hook.remove()


def _outside_inference_mode(network: nn.Module) -> None:
    """Replace parameters and buffers created under ``torch.inference_mode`` (scoring converts weights to
    channels-last there) by equal ordinary tensors: autograd cannot save inference tensors for backward."""
    with torch.no_grad():
        for module in network.modules():
            for name, parameter in list(module.named_parameters(recurse=False)):
                if parameter.is_inference():
                    setattr(module, name, nn.Parameter(parameter.clone(), requires_grad=parameter.requires_grad))
            for name, buffer in list(module.named_buffers(recurse=False)):
                if buffer is not None and buffer.is_inference():
                    setattr(module, name, buffer.clone())


def saliency_maps(network: nn.Module, image: np.ndarray, method: str, *, classes: list[str] | None = None,
                  topk: int = 3, target_layer: str | None = None,
                  selections: list[ClassSelection] | None = None) -> SaliencyMaps:
    """Saliency maps of ``image`` (``H×W×3`` uint8 RGB) by pytorch-grad-cam's ``method`` for the named ``classes``
    (or the ``topk`` classes with the highest probability on their surest window), or for ``selections`` as
    already resolved.

    The image is normalised and padded as for scoring (:func:`~fcn_app.scoring.prepare_batch`); the maps are cut
    back to the image. Runs on the network's device in fp32, with gradients enabled whatever the caller's mode.
    """
    method = check_method(method)
    grad_cam = require_grad_cam(method)
    if topk < 1:
        raise OptionError("topk", f"must be at least 1, got {topk}")
    layer_name, layer = resolve_target_layer(network, target_layer)
    categories = list(network.categories)
    with torch.inference_mode(False), torch.enable_grad():
        _outside_inference_mode(network)
        batch, (top, bottom, left, right) = prepare_batch(network, [image])
        batch = batch.contiguous().to(next(network.parameters()).device).requires_grad_(True)
        classifier = WindowClassifier(network).eval()
        cells, layer_grid = _window_probabilities(classifier, batch, layer)
        if selections is not None:
            selections = list(selections)
        elif classes:
            selections = resolve_classes(classes, categories)
        else:
            peaks = cells.flatten(1).amax(dim=1)
            order = torch.argsort(peaks, descending=True, stable=True)[: min(topk, len(categories))]
            selections = [ClassSelection(categories[index], (int(index),)) for index in order.tolist()]
        probabilities = [float(selection_probabilities(cells, selection).max()) for selection in selections]
        explainer = getattr(grad_cam, get_method(method).class_name)(model=classifier, target_layers=[layer])
        start = time.perf_counter()
        maps = []
        try:
            # ScoreCAM and AblationCAM draw tqdm bars on stderr: a library prints nothing
            with contextlib.redirect_stderr(io.StringIO()):
                for selection in selections:
                    maps.append(explainer(input_tensor=batch, targets=[_SelectionTarget(selection.indices)])[0])
        finally:
            explainer.activations_and_grads.release()
        seconds = time.perf_counter() - start
    height, width = batch.shape[-2:]
    stacked = np.stack(maps).astype(np.float32)[:, top:height - bottom, left:width - right]
    stacked = np.nan_to_num(np.clip(stacked, 0.0, 1.0), nan=0.0)
    # pytorch-grad-cam resizes each layer map onto the input with cv2.resize: its cells, as pixels of an image of
    # the layer's grid resized to the input's, then shifted by the padding that is cut away
    on_input = working_pixels_on_original(layer_grid, (int(height), int(width)))
    cells = replace(on_input, first_center=(on_input.first_center[0] - top, on_input.first_center[1] - left))
    return SaliencyMaps(method, selections, np.ascontiguousarray(stacked), probabilities, layer_name, seconds,
                        tuple(image.shape[:2]), cells)


def class_activation_map(score_map: ScoreMap, selection: ClassSelection) -> ClassHeatmap:
    """Class activation map (Zhou et al. 2016) of ``selection`` on the pixels of ``score_map``, the score map of a
    network that scores every feature cell on its own (:func:`method_network` with ``cam``).

    Cell ``(i, j)`` holds the head applied to feature cell ``(i, j)``; for a head that is one linear layer after the
    global pool (ResNet, DenseNet, …) the class's logit there is ``Σ_k w_k^c f_k(i, j) + b_c``: CAM plus the class's
    bias. The selection's logits (summed over its classes: the CAM of their summed weights) are min–max scaled on the
    cell grid, as torchcam scales CAM (the bias, a constant, drops out), then placed on the pixels by the score
    map's geometry — linear between cell centres, so the map stays in [0, 1] and peaks at 1 on the hottest cell.
    For a head with more layers (ConvNeXt's LayerNorm, an MLP) a cell is that head applied to one feature cell.
    """
    logits = score_map.logits[list(selection.indices)].float().sum(dim=0)
    cells = torch.from_numpy(min_max_scaled(logits.numpy()))
    heat = np.clip(upsample_to_pixels(cells, score_map.geometry, score_map.image_size).numpy(), 0.0, 1.0)
    return ClassHeatmap.from_pixels(selection, heat, [score_map.geometry], [cells])


def class_activation_maps(score_map: ScoreMap, classes: list[str] | None = None, topk: int = 3
                          ) -> tuple[list[ClassHeatmap], list[float]]:
    """The class activation maps of the named ``classes`` (or of the ``topk`` classes with the highest probability
    on one feature cell) from a ``cam`` score map, and each selection's probability on its surest cell — the
    per-window probability ``--window 1`` draws."""
    probabilities = score_map.probabilities()
    selections = (resolve_classes(classes, score_map.categories) if classes
                  else top_classes(score_map, topk, probabilities))
    window = [float(selection_probabilities(probabilities, selection).max()) for selection in selections]
    return [class_activation_map(score_map, selection) for selection in selections], window


class MethodMap(NamedTuple):
    """One class's map of an image by one method (:func:`method_heatmap`)."""

    heat: np.ndarray  # H×W float32 in [0, 1] on the image
    seconds: float  # the time it took
    cells: ScoreGeometry  # where the map's cells sit on the image: its peak is one's centre


def method_heatmap(network: nn.Module, image: np.ndarray, method: str, selection: ClassSelection, *,
                   target_layer: str | None = None) -> MethodMap:
    """One class's ``H×W`` map of ``image`` in [0, 1] by any method, the time it took and its cells.

    ``fcn`` gives the class's per-pixel probability; ``cam`` its class activation map (pass the network as it is,
    this function narrows the window); the others a pytorch-grad-cam saliency map.
    """
    entry = get_method(method)
    if entry.saliency:
        require_grad_cam(entry.name)  # its first import takes seconds: not the method's time
    start = time.perf_counter()
    if entry.saliency:
        maps = saliency_maps(network, image, entry.name, selections=[selection], target_layer=target_layer)
        heat, cells = maps.maps[0], maps.cells
    else:
        score_map = compute_score_map(method_network(network, entry.name), image, precision="fp32")
        heat, cells = (class_activation_map(score_map, selection) if entry.kind is MethodKind.CAM
                       else heatmap_for_class(score_map, selection)).heatmap, score_map.geometry
    return MethodMap(heat, time.perf_counter() - start, cells)


def class_score_function(network: nn.Module, selection: ClassSelection):
    """The score faithfulness metrics ask for (:mod:`fcn_app.metrics`): the probability of ``selection`` (summed
    over its classes) on the window where it is highest, for a batch of normalised images — what the ``fcn`` map
    peaks at, and at the classifier's training size exactly the classifier's probability."""
    indices = list(selection.indices)

    def score(images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            cells = torch.softmax(network(images.to(next(network.parameters()).device)).float(), dim=1)
            return cells[:, indices].sum(dim=1).flatten(1).amax(dim=1).cpu()

    return score
