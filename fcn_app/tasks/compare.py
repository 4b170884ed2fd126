"""Several heatmap methods side by side on one image, with how faithful each map is.

Every method explains the same class (named, or the ``fcn`` map's top class) on the same working-size image
(:class:`~fcn_app.tasks.heatmap.HeatmapTask`'s decode rule). Each map is measured by deletion and insertion AUC
(Petsiuk et al. 2018) and Average Drop / Increase in Confidence (Chattopadhay et al. 2018) against the class's
probability on its surest window (:func:`~fcn_app.methods.class_score_function`). The picture has one panel per
method — the same colour scale (0 → 1) in each, the class, the seconds and the metrics in its legend — and a JSON
beside it holds the table. Both are written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..choices import DEFAULT_METHODS, check_image_format
from ..errors import OptionError
from ..geometry import ScoreGeometry
from ..heatmaps import ClassHeatmap, ClassSelection, min_max_scaled, resolve_classes, top_classes
from ..io import InputImage, atomic_write_image, atomic_write_json
from ..method_plan import check_methods_usable, parse_methods
from ..method_registry import get_method
from ..methods import class_score_function, method_heatmap, require_grad_cam
from ..models.graph import has_free_window
from ..metrics import (average_drop, deletion_curve, explanation_map_scores, increase_in_confidence,
                       insertion_curve)
from ..render import tile_panels
from ..resolution import geometry_on_original
from ..scoring import compute_score_map, prepare_batch
from ..text import format_probability
from .base import Report, picture_of
from .heatmap import HeatmapOptions, _on_picture, heat_panel

__all__ = ["DEFAULT_METHODS", "CompareStep", "Comparison", "MethodScore", "compare_methods", "parse_methods",
           "picture_format", "write_comparison"]


@dataclass
class MethodScore:
    """One method's map of the class and how faithful it is."""

    method: str
    heat: np.ndarray  # H×W in [0, 1] on the network's input
    seconds: float
    cells: ScoreGeometry  # where the map's cells sit on the network's input (its peak is one's centre)
    deletion_auc: float
    insertion_auc: float
    average_drop: float
    increase_in_confidence: float

    def to_dict(self) -> dict:
        return {"method": self.method, "seconds": round(self.seconds, 4), "deletion_auc": round(self.deletion_auc, 4),
                "insertion_auc": round(self.insertion_auc, 4), "average_drop": round(self.average_drop, 2),
                "increase_in_confidence": round(self.increase_in_confidence, 1)}


@dataclass
class Comparison:
    """Every method's map of one class on one image."""

    selection: ClassSelection
    probability: float  # the class's probability on its surest window
    scores: list[MethodScore]
    image_size: tuple[int, int]  # the network input's (height, width)

    def to_dict(self, source: str | None = None) -> dict:
        return {"image": source, "class": self.selection.name, "class_indices": list(self.selection.indices),
                "window_probability": round(self.probability, 6),
                "work_size": {"height": self.image_size[0], "width": self.image_size[1]},
                "methods": [score.to_dict() for score in self.scores]}

    def report(self, source: str | None = None) -> Report:
        rows = [[score.method, f"{score.seconds:.2f}", f"{score.deletion_auc:.3f}", f"{score.insertion_auc:.3f}",
                 f"{score.average_drop:.1f}", f"{score.increase_in_confidence:.0f}"] for score in self.scores]
        columns = ["method", "seconds", "deletion AUC ↓", "insertion AUC ↑", "avg drop % ↓", "conf. increase % ↑"]
        probability = format_probability(self.probability)
        return Report(f"{source} · class {self.selection.name} (p {probability} on its surest window)",
                      columns, rows, numeric=tuple(columns[1:]))


class CompareStep(NamedTuple):
    """Where :func:`compare_methods` is: ``done`` of ``total`` units of work, in ``method``'s ``stage``.

    A method's units are one for its map, ``steps + 1`` images for each of the deletion and insertion curves and one
    for Average Drop / Increase in Confidence; the stage is ``"map"``, ``"deletion"``, ``"insertion"`` or
    ``"explanation map"``, or ``"done"`` once the method's measures are all in.
    """

    method: str
    stage: str
    done: int
    total: int


def compare_methods(network, image: np.ndarray, methods: list[str], *, classes: list[str] | None = None,
                    target_layer: str | None = None, steps: int = 50, batch_size: int = 16,
                    progress: Callable[[CompareStep], None] | None = None) -> Comparison:
    """Each of ``methods``' map of one class on ``image`` (``H×W×3`` uint8, the network's input) and its metrics.

    Every method is first checked against the network and the installed extras
    (:func:`~fcn_app.method_plan.check_methods_usable`; pytorch-grad-cam is imported), so a combination that
    cannot finish fails before anything is scored. The class is the first of ``classes`` or the ``fcn`` map's top
    class. Deletion/insertion use ``steps`` steps (zeros — the mean colour — replace deleted pixels; insertion
    starts from a blurred copy, as in RISE). Average Drop and Increase in Confidence weight the image by each map
    scaled to [0, 1] by its own min and max (as pytorch-grad-cam scales its maps), so a dim probability map is not
    penalised for its scale. ``progress`` is called with a :class:`CompareStep` as work gets done.
    """
    methods = check_methods_usable(parse_methods(methods), model=network.arch,
                                   pooled_head=has_free_window(network))
    for method in methods:
        if get_method(method).saliency:
            require_grad_cam(method)  # an installed but broken extra, too, fails before any work
    first = compute_score_map(network, image, precision="fp32")
    selection = resolve_classes(classes[:1], network.categories)[0] if classes else top_classes(first, 1)[0]
    score = class_score_function(network, selection)
    batch, (top, bottom, left, right) = prepare_batch(network, [image])
    tensor = batch[0].contiguous()
    probability = float(score(tensor[None])[0])
    per_method = 2 * (steps + 1) + 2
    total = len(methods) * per_method
    done = 0

    def advance(method: str, stage: str, units: int = 0) -> None:
        nonlocal done
        done += units
        if progress is not None:
            progress(CompareStep(method, stage, done, total))

    results = []
    for index, method in enumerate(methods):
        advance(method, "map")
        heat, seconds, cells = method_heatmap(network, image, method, selection, target_layer=target_layer)
        advance(method, "deletion", 1)
        padded = np.pad(heat, ((top, bottom), (left, right)))  # padding is the mean colour already: ranked last
        deletion = deletion_curve(score, tensor, padded, steps=steps, batch_size=batch_size,
                                  on_scored=lambda count, method=method: advance(method, "deletion", count))
        advance(method, "insertion")
        insertion = insertion_curve(score, tensor, padded, steps=steps, batch_size=batch_size,
                                    on_scored=lambda count, method=method: advance(method, "insertion", count))
        advance(method, "explanation map")
        full, masked = explanation_map_scores(score, [tensor], [min_max_scaled(padded)])
        drop = average_drop(full, masked) if full[0] > 0 else float("nan")
        results.append(MethodScore(method, heat.astype(np.float32), seconds, cells, deletion.auc, insertion.auc, drop,
                                   increase_in_confidence(full, masked)))
        done = (index + 1) * per_method - 1  # a curve has fewer images when the image has fewer pixels than steps
        advance(method, "done", 1)
    return Comparison(selection, probability, results, tuple(image.shape[:2]))


def comparison_picture(comparison: Comparison, image: np.ndarray | InputImage,
                       options: HeatmapOptions | None = None) -> np.ndarray:
    """One panel per method on the picture: the same 0 → 1 colour scale, a legend with class, seconds, metrics."""
    options = options or HeatmapOptions()
    picture, _ = picture_of(image)
    panels = []
    for score in comparison.scores:
        cells = geometry_on_original(score.cells, comparison.image_size, picture.shape[:2])
        heatmap = ClassHeatmap.from_pixels(comparison.selection, _on_picture(score.heat, picture.shape[:2]), [cells])
        lines = [f"{score.method}: {comparison.selection.name}  {score.seconds:.2f} s",
                 f"del {score.deletion_auc:.2f}  ins {score.insertion_auc:.2f}",
                 f"AD {score.average_drop:.0f}%  IC {score.increase_in_confidence:.0f}%"]
        panels.append(heat_panel(picture, heatmap, options, lines))
    return tile_panels(panels, columns=min(4, len(panels)))


def picture_format(path: str | os.PathLike) -> str:
    """The picture format of a comparison written at ``path``, from its extension (checked before any work)."""
    path = Path(path)
    try:
        return check_image_format(path.suffix.lstrip(".") or path.name)
    except OptionError:
        raise OptionError("out", f"{path.name}: give a .png, .jpg or .webp file name") from None


def write_comparison(path: str | os.PathLike, comparison: Comparison, image: np.ndarray | InputImage,
                     source: str | None = None, options: HeatmapOptions | None = None) -> dict[str, Path]:
    """The picture at ``path`` (format from its extension) and the table beside it (``<path>.json``), atomically."""
    path = Path(path)
    image_format = picture_format(path)
    picture, icc_profile = picture_of(image)
    written = {"picture": atomic_write_image(path, comparison_picture(comparison, picture, options),
                                             format=image_format, icc_profile=icc_profile)}
    written["json"] = atomic_write_json(path.with_name(path.name + ".json"), comparison.to_dict(source))
    return written
