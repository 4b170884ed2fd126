"""From per-pixel class probabilities to boxes: threshold → connected components → one detection each → NMS.

What a heat component means decides how big the box is. A classifier turned into an FCN scores *windows*: a
pixel is hot when the window centred there contains the object, so a component marks the *window centres*
where the classifier fires and is much smaller than the object (on the digit scenes of ``scripts/bench_detect.py``
the component's own bounding box scores AP50 ≈ 0). The box that fits is the classifier's window, centred at
the component's peak, at the pyramid scale where the class fires best there (box mode ``"window"``, the default
for :class:`~fcn_app.models.FullyConvolutionalNet` maps). A model trained for segmentation gives per-pixel maps
whose components *are* the objects; there the component's bounding box is right (box mode ``"region"``).

``window_fill`` shrinks window boxes around their centre: a classifier whose training objects fill a fraction of
its window (the digits fill ~27 of 32 px) finds objects that fill the same fraction, so that fraction of the
window is the better box.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import cv2
import numpy as np
import torch

from .coco import encode_mask
from .errors import ClassSelectionError, OptionError
from .geometry import ScoreGeometry
from .heatmaps import ClassSelection, resolve_classes
from .method_registry import get_method
from .methods import FCN, saliency_maps
from .models.convert import FullyConvolutionalNet
from .pyramid import FusedProbabilities, fuse_levels, score_pyramid
from .resolution import working_pixels_on_original
from .scoring import ScoringOptions

__all__ = [
    "BOX_MODES",
    "CENTER_MODES",
    "THRESHOLD_MODES",
    "ClassPeak",
    "check_method_scales",
    "Detection",
    "DetectOptions",
    "Detections",
    "detect_objects",
    "detection_on_original",
    "detections_from_probabilities",
    "highest_peak",
    "non_max_suppression",
    "resolve_box_mode",
    "select_detection_classes",
    "threshold_mask",
]

logger = logging.getLogger(__name__)

THRESHOLD_MODES = ("absolute", "relative", "otsu")
BOX_MODES = ("auto", "window", "region")
CENTER_MODES = ("peak", "centroid")
BACKGROUND_NAMES = ("background", "__background__", "bg")


def check_choice(option: str, value: str, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else :class:`~fcn_app.errors.OptionError` naming them."""
    if value not in choices:
        raise OptionError(option, f"unknown value {value!r}; choose one of {', '.join(choices)}")
    return value


@dataclass(frozen=True)
class DetectOptions:
    """How heat becomes boxes.

    Attributes:
        threshold_mode: ``"absolute"`` (probability ≥ ``threshold``), ``"relative"`` (≥ ``threshold`` × the
            class's peak in the image) or ``"otsu"`` (Otsu's threshold of the class map; ``threshold`` unused).
        threshold: the value for the absolute/relative modes.
        min_score: components whose peak probability is below this are dropped (guards relative/Otsu
            thresholds on maps where the class is absent).
        box_mode: ``"window"``, ``"region"`` or ``"auto"`` (window for classifier maps, region otherwise).
        window_fill: window boxes are this fraction of the classifier's window (1 = the whole window).
        center: where a window box is centred: ``"peak"`` (the component's hottest pixel) or ``"centroid"``
            (its probability-weighted centre — sub-stride precision from the heat's shape). A centre beyond the
            outermost window the classifier scored at that scale moves onto it: heat there is only the edge
            cells' value carried outwards.
        nms_iou: boxes overlapping a better one by more than this IoU are suppressed.
        classwise_nms: suppress only within a class (default: across classes — one object, one label).
        min_area: components smaller than this many pixels are ignored.
        max_detections: keep at most this many detections per image (best first).
        masks: attach each component's pixel mask to its detection.
    """

    threshold_mode: str = "relative"
    threshold: float = 0.5
    min_score: float = 0.3
    box_mode: str = "auto"
    window_fill: float = 1.0
    center: str = "peak"
    nms_iou: float = 0.3
    classwise_nms: bool = False
    min_area: int = 1
    max_detections: int = 100
    masks: bool = False

    def __post_init__(self) -> None:
        for name, choices in (("threshold_mode", THRESHOLD_MODES), ("box_mode", BOX_MODES), ("center", CENTER_MODES)):
            check_choice(name, getattr(self, name), choices)
        for name in ("threshold", "min_score", "nms_iou"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise OptionError(name, f"must be between 0 and 1, got {getattr(self, name)}")
        if not 0.0 < self.window_fill <= 4.0:
            raise OptionError("window_fill", f"must be in (0, 4], got {self.window_fill}")
        if self.min_area < 1 or self.max_detections < 1:
            raise OptionError("min_area" if self.min_area < 1 else "max_detections", "must be at least 1")


@dataclass
class Detection:
    """One found object. ``box`` is ``(x, y, w, h)`` in original-image pixels (edges: ``x`` is a left edge)."""

    class_name: str
    class_index: int
    score: float
    box: tuple[float, float, float, float]
    peak: tuple[int, int]  # (x, y) pixel of the component's highest probability
    scale: float  # pyramid scale at which the class fired best at the peak
    mask: np.ndarray | None = field(default=None, repr=False)  # H×W bool, when asked for

    def to_dict(self) -> dict:
        payload = {
            "class_name": self.class_name,
            "class_index": self.class_index,
            "score": round(float(self.score), 6),
            "box": [round(float(value), 2) for value in self.box],
            "peak": {"x": int(self.peak[0]), "y": int(self.peak[1])},
            "scale": self.scale,
        }
        if self.mask is not None:
            payload["mask"] = encode_mask(self.mask)
        return payload


class ClassPeak(NamedTuple):
    """The highest probability of one class anywhere in an image."""

    class_name: str
    class_index: int
    score: float

    def to_dict(self) -> dict:
        return {"class_name": self.class_name, "class_index": self.class_index, "score": round(float(self.score), 6)}


class Detections(list):
    """The detections of one image, best first (a ``list`` of :class:`Detection`), and ``highest_peak``: the
    highest probability of any class looked for, whether or not it became a box — what to lower ``min_score`` to
    when nothing passed (``None`` where unknown)."""

    def __init__(self, detections: Iterable[Detection] = (), highest_peak: ClassPeak | None = None) -> None:
        super().__init__(detections)
        self.highest_peak = highest_peak


def highest_peak(fused: FusedProbabilities) -> ClassPeak:
    """The class of ``fused`` with the highest probability anywhere, and that probability (the score its best
    component would have)."""
    peaks = fused.probabilities.reshape(len(fused.class_indices), -1).max(axis=1)
    best = int(np.argmax(peaks))
    class_index = int(fused.class_indices[best])
    return ClassPeak(fused.categories[class_index], class_index, float(peaks[best]))


def threshold_mask(probability: np.ndarray, mode: str, value: float) -> np.ndarray:
    """Boolean mask of the pixels of ``probability`` (``H×W`` in [0, 1]) that count as hot."""
    if mode == "absolute":
        return probability >= value
    if mode == "relative":
        return probability >= value * float(probability.max())
    if mode == "otsu":
        levels = np.clip(np.rint(probability * 255.0), 0, 255).astype(np.uint8)
        if levels.min() == levels.max():
            return np.zeros(probability.shape, dtype=bool)
        _, binary = cv2.threshold(levels, 0, 255, cv2.THRESH_BINARY | cv2.THRESH_OTSU)
        return binary > 0
    raise OptionError("threshold_mode", f"unknown threshold mode {mode!r}; choose one of {', '.join(THRESHOLD_MODES)}")


def _background_indices(categories: Sequence[str]) -> set[int]:
    return {index for index, name in enumerate(categories) if name.strip().lower() in BACKGROUND_NAMES}


def select_detection_classes(
    categories: Sequence[str], classes: Sequence[str] | None = None, *, peak_probabilities: torch.Tensor | None = None,
    topk: int = 5,
) -> list[int]:
    """Class indices to look for.

    Named ``classes`` (names, words or indices as for heatmaps; a word matching several classes looks for each
    of them). Otherwise every class except a background class when the model has at most 100 classes, or the
    ``topk`` classes with the highest peak probability (``peak_probabilities``, one per class) for bigger
    label sets such as ImageNet's 1000.
    """
    if classes:
        indices = [index for selection in resolve_classes(classes, categories) for index in selection.indices]
        return list(dict.fromkeys(indices))
    background = _background_indices(categories)
    candidates = [index for index in range(len(categories)) if index not in background]
    if not candidates:
        raise ClassSelectionError("the model has only background classes; nothing to detect")
    if len(categories) <= 100 or peak_probabilities is None:
        return candidates
    if topk < 1:
        raise OptionError("topk", f"must be at least 1, got {topk}")
    order = torch.argsort(peak_probabilities[candidates], descending=True, stable=True)[:topk]
    return [candidates[int(position)] for position in order]


def _window_box(geometry: ScoreGeometry, x: float, y: float, fill: float) -> tuple[float, float, float, float]:
    row, col = geometry.cell_at(x, y)
    # Heat beyond the outermost cell centres is the edge cells' value carried outwards (nothing was scored there),
    # so a peak on that plateau lands on the image border; the window that fired is the outermost scored one.
    row = min(max(row, 0.0), geometry.grid[0] - 1.0)
    col = min(max(col, 0.0), geometry.grid[1] - 1.0)
    left, top, width, height = geometry.window_box(row, col)
    center_x, center_y = left + width / 2, top + height / 2
    width, height = width * fill, height * fill
    return (center_x - width / 2, center_y - height / 2, width, height)


def _clip_box(box: tuple[float, float, float, float], image_size: tuple[int, int]) -> tuple[float, float, float, float]:
    height, width = image_size
    left, top = max(0.0, box[0]), max(0.0, box[1])
    right, bottom = min(float(width), box[0] + box[2]), min(float(height), box[1] + box[3])
    return (left, top, max(0.0, right - left), max(0.0, bottom - top))


def detections_from_probabilities(
    fused: FusedProbabilities, options: DetectOptions = DetectOptions(), *, box_mode: str = "window"
) -> list[Detection]:
    """One detection per connected hot component of each class map in ``fused`` (before NMS).

    ``box_mode`` is ``"window"`` or ``"region"`` (``"auto"`` is resolved by the caller, who knows the model).
    """
    if box_mode not in ("window", "region"):
        raise ValueError(f"box_mode must be 'window' or 'region' here, got {box_mode!r}")
    categories = fused.categories
    image_size = fused.probabilities.shape[1:]
    detections = []
    for position, class_index in enumerate(fused.class_indices):
        probability = fused.probabilities[position]
        if float(probability.max()) < options.min_score:
            continue
        hot = threshold_mask(probability, options.threshold_mode, options.threshold)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(hot.astype(np.uint8), connectivity=8)
        for label in range(1, count):
            left, top, width, height, area = (int(value) for value in stats[label])
            if area < options.min_area:
                continue
            component = labels[top : top + height, left : left + width] == label
            crop = np.where(component, probability[top : top + height, left : left + width], -1.0)
            peak_y, peak_x = np.unravel_index(int(np.argmax(crop)), crop.shape)
            score = float(crop[peak_y, peak_x])
            if score < options.min_score:
                continue
            peak_x, peak_y = left + int(peak_x), top + int(peak_y)
            level = fused.levels[int(fused.best_level[position, peak_y, peak_x])]
            if box_mode == "window":
                center_x, center_y = float(peak_x), float(peak_y)
                if options.center == "centroid":
                    weights = np.where(component, probability[top : top + height, left : left + width], 0.0)
                    rows, cols = np.mgrid[top : top + height, left : left + width]
                    center_x = float((weights * cols).sum() / weights.sum())
                    center_y = float((weights * rows).sum() / weights.sum())
                box = _clip_box(_window_box(level.score_map.geometry, center_x, center_y, options.window_fill),
                                image_size)
            else:
                box = (float(left), float(top), float(width), float(height))
            mask = None
            if options.masks:
                mask = np.zeros(image_size, dtype=bool)
                mask[top : top + height, left : left + width] = component
            detections.append(Detection(categories[class_index], int(class_index), score, box, (peak_x, peak_y),
                                        level.scale, mask))
    return detections


def detection_on_original(detection: Detection, work_size: tuple[int, int],
                          original_size: tuple[int, int]) -> Detection:
    """``detection``, found on an image resized from ``original_size`` to ``work_size`` (both ``(height, width)``),
    in original pixels: box edges and peak through :func:`~fcn_app.resolution.working_pixels_on_original` (exact
    per-axis factors), the mask resized nearest-neighbour with pixel centres aligned."""
    pixels = working_pixels_on_original(work_size, original_size)
    x, y, width, height = detection.box
    # An edge lies half a pixel before the pixel that starts there; cell_center maps pixel positions.
    left, top = pixels.cell_center(y - 0.5, x - 0.5)
    right, bottom = pixels.cell_center(y + height - 0.5, x + width - 0.5)
    peak_x, peak_y = pixels.cell_center(detection.peak[1], detection.peak[0])
    peak = (min(max(round(peak_x), 0), original_size[1] - 1), min(max(round(peak_y), 0), original_size[0] - 1))
    mask = detection.mask
    if mask is not None:
        mask = cv2.resize(mask.astype(np.uint8), (int(original_size[1]), int(original_size[0])),
                          interpolation=cv2.INTER_NEAREST_EXACT).astype(bool)
    return replace(detection, box=(left + 0.5, top + 0.5, right - left, bottom - top), peak=peak, mask=mask)


def non_max_suppression(
    detections: Sequence[Detection], iou_threshold: float = 0.3, classwise: bool = False,
    max_detections: int | None = None,
) -> list[Detection]:
    """Keep the best-scoring of overlapping detections (``torchvision.ops``), across classes unless ``classwise``."""
    if not detections:
        return []
    boxes = torch.tensor([[d.box[0], d.box[1], d.box[0] + d.box[2], d.box[1] + d.box[3]] for d in detections],
                         dtype=torch.float32)
    scores = torch.tensor([d.score for d in detections], dtype=torch.float32)
    from torchvision.ops import batched_nms, nms  # imported on use: it costs ~1 s (see fcn_app.models.vgg)

    if classwise:
        labels = torch.tensor([d.class_index for d in detections])
        keep = batched_nms(boxes, scores, labels, iou_threshold)
    else:
        keep = nms(boxes, scores, iou_threshold)
    kept = [detections[int(index)] for index in keep]  # sorted by decreasing score
    return kept[:max_detections] if max_detections else kept


def resolve_box_mode(box_mode: str, network: torch.nn.Module) -> str:
    """``"auto"`` → ``"window"`` for a classifier turned FCN (its heat marks window centres), else ``"region"``."""
    if box_mode != "auto":
        return box_mode
    return "window" if isinstance(network, FullyConvolutionalNet) else "region"


def check_method_scales(method: str, scales: Sequence[float]) -> bool:
    """Whether ``method`` makes saliency maps; a saliency method with a pyramid (``scales`` other than ``(1,)``)
    is an :class:`~fcn_app.errors.OptionError`: it makes one map per class at one scale. Score maps and CAM take
    any scales."""
    saliency = get_method(method).saliency
    if saliency and tuple(scales) != (1.0,):
        raise OptionError("scales", f"the {method} method makes one saliency map per class at one scale")
    return saliency


def detect_objects(
    network: FullyConvolutionalNet,
    image: np.ndarray,
    *,
    scales: Sequence[float] = (1.0,),
    classes: Sequence[str] | None = None,
    fuse: str = "max",
    topk: int = 5,
    options: DetectOptions = DetectOptions(),
    scoring: ScoringOptions | None = None,
    method: str = FCN,
    target_layer: str | None = None,
) -> Detections:
    """Boxes of the objects in ``image`` (``H×W×3`` uint8 RGB), best first, with the highest peak of the classes
    looked for (:class:`Detections`: it says how close an image without boxes came to ``options.min_score``).

    ``network`` may be densified first (:func:`fcn_app.dense.densify`) for a finer map. The image is scored at
    every scale, per-pixel probabilities of the classes looked for are fused (``max``/``mean``), and
    :func:`detections_from_probabilities` + :func:`non_max_suppression` turn them into detections. ``scoring``
    says how each level is scored (precision, memory budget, runtime; default :class:`ScoringOptions`).
    """
    scoring = scoring if scoring is not None else ScoringOptions()
    saliency = check_method_scales(method, scales)
    levels = score_pyramid(network, image, scales, precision=scoring.precision, max_memory=scoring.max_memory,
                           backend=scoring.backend)
    peaks = torch.stack([level.score_map.probabilities().flatten(1).amax(dim=1) for level in levels]).amax(dim=0)
    class_indices = select_detection_classes(network.categories, classes, peak_probabilities=peaks, topk=topk)
    if saliency:
        fused = _saliency_probabilities(network, image, levels, class_indices, method, target_layer)
    else:
        fused = fuse_levels(levels, class_indices, mode=fuse)
    box_mode = "region" if saliency and options.box_mode == "auto" else resolve_box_mode(options.box_mode, network)
    candidates = detections_from_probabilities(fused, options, box_mode=box_mode)
    return Detections(non_max_suppression(candidates, options.nms_iou, options.classwise_nms, options.max_detections),
                      highest_peak(fused))


def _saliency_probabilities(network, image: np.ndarray, levels, class_indices: Sequence[int], method: str,
                            target_layer: str | None) -> FusedProbabilities:
    """Each class's saliency map (in [0, 1], peaking at 1) times the class's probability on its surest window:
    the hot region is the map's, a detection's score is what the classifier says (so ``min_score`` keeps working).
    Window boxes, if asked for, use the one score map's geometry."""
    selections = [ClassSelection(network.categories[index], (int(index),)) for index in class_indices]
    maps = saliency_maps(network, image, method, selections=selections, target_layer=target_layer)
    weights = np.asarray(maps.window_probabilities, dtype=np.float32)[:, None, None]
    return FusedProbabilities(probabilities=np.clip(maps.maps * weights, 0.0, 1.0),
                              best_level=np.zeros(maps.maps.shape, dtype=np.int64),
                              class_indices=list(class_indices), levels=list(levels))
