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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import OptionError
from ..geometry import ScoreGeometry
from ..heatmaps import ClassHeatmap, ClassSelection, min_max_scaled, resolve_classes, top_classes
from ..io import InputImage, atomic_write_image, atomic_write_json
from ..methods import check_method, class_score_function, method_heatmap
from ..metrics import (average_drop, deletion_curve, explanation_map_scores, increase_in_confidence,
                       insertion_curve)
from ..render import tile_panels
from ..resolution import geometry_on_original
from ..scoring import compute_score_map, prepare_batch
from ..text import format_probability
from .base import Report, picture_of
from .heatmap import HeatmapOptions, _on_picture, heat_panel

__all__ = ["Comparison", "MethodScore", "compare_methods", "parse_methods", "write_comparison"]

DEFAULT_METHODS = ("fcn", "cam", "gradcam", "scorecam")


def parse_methods(methods: str | list[str]) -> list[str]:
    """``"fcn,cam,gradcam"`` (or a list) → checked, de-duplicated method names in order."""
    names = [name for name in (methods.split(",") if isinstance(methods, str) else methods) if str(name).strip()]
    if not names:
        raise OptionError("methods", "name at least one method, e.g. fcn,gradcam")
    try:
        return list(dict.fromkeys(check_method(name) for name in names))
    except OptionError as error:
        raise OptionError("methods", str(error)) from None


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


def compare_methods(network, image: np.ndarray, methods: list[str], *, classes: list[str] | None = None,
                    target_layer: str | None = None, steps: int = 50, batch_size: int = 16) -> Comparison:
    """Each of ``methods``' map of one class on ``image`` (``H×W×3`` uint8, the network's input) and its metrics.

    The class is the first of ``classes`` or the ``fcn`` map's top class. Deletion/insertion use ``steps`` steps
    (zeros — the mean colour — replace deleted pixels; insertion starts from a blurred copy, as in RISE). Average
    Drop and Increase in Confidence weight the image by each map scaled to [0, 1] by its own min and max (as
    pytorch-grad-cam scales its maps), so a dim probability map is not penalised for its scale.
    """
    methods = parse_methods(methods)
    first = compute_score_map(network, image, precision="fp32")
    selection = resolve_classes(classes[:1], network.categories)[0] if classes else top_classes(first, 1)[0]
    score = class_score_function(network, selection)
    batch, (top, bottom, left, right) = prepare_batch(network, [image])
    tensor = batch[0].contiguous()
    probability = float(score(tensor[None])[0])
    results = []
    for method in methods:
        heat, seconds, cells = method_heatmap(network, image, method, selection, target_layer=target_layer)
        padded = np.pad(heat, ((top, bottom), (left, right)))  # padding is the mean colour already: ranked last
        deletion = deletion_curve(score, tensor, padded, steps=steps, batch_size=batch_size)
        insertion = insertion_curve(score, tensor, padded, steps=steps, batch_size=batch_size)
        full, masked = explanation_map_scores(score, [tensor], [min_max_scaled(padded)])
        drop = average_drop(full, masked) if full[0] > 0 else float("nan")
        results.append(MethodScore(method, heat.astype(np.float32), seconds, cells, deletion.auc, insertion.auc, drop,
                                   increase_in_confidence(full, masked)))
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


def write_comparison(path: str | os.PathLike, comparison: Comparison, image: np.ndarray | InputImage,
                     source: str | None = None, options: HeatmapOptions | None = None) -> dict[str, Path]:
    """The picture at ``path`` (format from its extension) and the table beside it (``<path>.json``), atomically."""
    path = Path(path)
    picture, icc_profile = picture_of(image)
    extension = path.suffix.lower().lstrip(".")
    image_format = {"jpeg": "jpg"}.get(extension, extension)
    if image_format not in ("png", "jpg", "webp"):
        raise OptionError("out", f"{path.name}: give a .png, .jpg or .webp file name")
    written = {"picture": atomic_write_image(path, comparison_picture(comparison, picture, options),
                                             format=image_format, icc_profile=icc_profile)}
    written["json"] = atomic_write_json(path.with_name(path.name + ".json"), comparison.to_dict(source))
    return written
