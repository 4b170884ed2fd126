"""Classifier heatmaps as an image task: score map → class heatmaps → overlay, grid, JSON, raw scores.

The network sees the image at a *working size* (:mod:`fcn_app.resolution`: by default its longer side is
:data:`~fcn_app.resolution.DEFAULT_WORK_WINDOWS` windows, never enlarged), optionally at several scales of it (a
pyramid, fused per pixel); the heat is then placed on the pixels of the picture — the image as decoded, at its own
size — so the overlay, grid, peak pixels and geometry refer to the original image. An image processed alone and
the same image inside a folder go through the same methods here, so their outputs are the same files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import cv2
import numpy as np
import torch

from ..choices import IMAGE_FORMATS, NATIVE, check_image_format, check_normalize, check_work_size
from ..errors import OptionError
from ..heatmaps import (ClassHeatmap, class_heatmaps, heatmap_for_class, resolve_classes, selection_probabilities,
                        top_classes)
from ..io import (DEFAULT_MAX_PIXELS, DecodeRequest, InputImage, atomic_write_image, atomic_write_json,
                  atomic_write_npz)
from ..method_registry import MethodKind, get_method
from ..methods import FCN, SaliencyMaps, class_activation_maps, method_network, saliency_maps
from ..models.convert import FullyConvolutionalNet
from ..pyramid import FUSE_MODES, PyramidLevel, fuse_maps, parse_scales, score_pyramid
from ..render import DEFAULT_COLORMAP, check_colormap, draw_legend_and_marker, normalize_heat, overlay, tile_panels
from ..resolution import DEFAULT_WORK_WINDOWS, default_work_size, geometry_on_original, score_map_on_original
from ..scoring import ScoreMap, ScoringOptions, compute_score_maps
from ..text import check_font, format_probability
from .base import DecodeLimitsFromOptions, ProgressCallback, Report, picture_of, write_each

__all__ = ["IMAGE_FORMATS", "NATIVE", "HeatmapOptions", "HeatmapTask", "RenderedImage", "ScoreMapTask",
           "check_image_format", "check_work_size", "native_unless_given", "native_unless_given_rule",
           "reported_probabilities", "write_scores"]

OVERLAY_SUFFIX = ".heatmap"
GRID_SUFFIX = ".grid"
SCORES_SUFFIX = ".scores.npz"
JSON_SUFFIX = ".json"
#: How classifier heatmaps fuse pyramid levels when ``fuse`` is not given: a class counts where any scale sees it.
HEATMAP_FUSE = "max"


def native_unless_given(work_size: int | str | None, max_side: int | None, max_pixels: int) -> DecodeRequest:
    """The decode request of a task whose network sees the picture itself (``None`` or ``native``) unless a
    working size in pixels is given (then the picture is resized to it, enlarged if need be)."""
    return DecodeRequest(max_side=max_side, max_pixels=max_pixels,
                         work_size=None if work_size in (None, NATIVE) else work_size, enlarge=True)


def native_unless_given_rule(work_size: int | str | None) -> str:
    """How :func:`native_unless_given` chose the working size, as printed: ``"native"`` or ``"520 px"``."""
    return NATIVE if work_size in (None, NATIVE) else f"{work_size} px"


@dataclass
class HeatmapOptions:
    """What to draw and write for each image (shared by classifier heatmaps and segmentation models).

    Attributes:
        classes: class names, words or indices (see :func:`~fcn_app.heatmaps.resolve_classes`); else the
            ``topk`` classes with the highest peak probability.
        colormap, alpha: heat colours and their opacity over the photo.
        grid: also a picture with one panel per class.
        save_scores: also the raw score grid with its geometry (``.scores.npz``; one scale only).
        write_json: also the summary as JSON.
        normalize: how each class's map becomes colours (:func:`~fcn_app.render.normalize_heat`): ``"none"``
            (probabilities 0 → 1), ``"peak"`` (0 → the map's peak) or ``"minmax"`` (its minimum → its maximum);
            ``True``/``False`` read as ``"peak"``/``"none"``. The legend keeps the true probabilities.
        max_side, max_pixels: decode limits (downscale longer sides; refuse bigger files). The outputs have the
            size of the decoded image.
        work_size: longer side in pixels of the image the network sees (enlarged if smaller), ``"native"`` (the
            image as decoded), or ``None``: the task's rule (classifier heatmaps: ``DEFAULT_WORK_WINDOWS``
            windows, never enlarged; segmentation: native).
        scales, fuse: score the working-size image at each scale (``"0.5,1,2"`` or numbers) and fuse the
            per-pixel probabilities by ``max`` or ``mean``; ``fuse=None``: the task's rule (classifier heatmaps:
            ``max``; segmentation: ``mean``).
        image_format: ``png``, ``jpg`` or ``webp`` for overlays and grids (the input's ICC profile is kept).
        font: TrueType/OpenType file for legends (default: the bundled DejaVu Sans).
        method: how the map is made (:mod:`fcn_app.methods`): ``fcn`` (the classifier's window scores), ``cam``
            (class activation mapping) or a pytorch-grad-cam method (``gradcam``, ``scorecam``, …).
        target_layer: the layer a pytorch-grad-cam method reads (default: the body's output, ``features``).
    """

    classes: list[str] | None = None
    topk: int = 3
    colormap: str = DEFAULT_COLORMAP
    alpha: float = 0.5
    grid: bool = False
    save_scores: bool = False
    write_json: bool = False
    normalize: str = "none"
    max_side: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    font: str | None = None
    work_size: int | str | None = None
    scales: tuple[float, ...] | str = (1.0,)
    fuse: str | None = None
    image_format: str = "png"
    method: str = FCN
    target_layer: str | None = None

    def __post_init__(self) -> None:
        check_colormap(self.colormap)
        check_font(self.font)
        self.normalize = check_normalize(self.normalize)
        if self.topk < 1:
            raise OptionError("topk", f"must be at least 1, got {self.topk}")
        if not 0.0 <= self.alpha <= 1.0:
            raise OptionError("alpha", f"must be between 0 and 1, got {self.alpha}")
        if self.max_side is not None and self.max_side < 1:
            raise OptionError("max_side", f"must be at least 1, got {self.max_side}")
        if self.max_pixels < 1:
            raise OptionError("max_pixels", f"must be at least 1, got {self.max_pixels}")
        self.work_size = check_work_size(self.work_size)
        self.scales = parse_scales(self.scales)
        if self.fuse is not None and self.fuse not in FUSE_MODES:
            raise OptionError("fuse", f"unknown fuse mode {self.fuse!r}; choose one of {', '.join(FUSE_MODES)}")
        self.image_format = check_image_format(self.image_format)
        if self.save_scores and self.is_pyramid:
            raise OptionError("save_scores", "raw scores are saved for one scale; a pyramid of several scales "
                                             "has one score grid per scale")
        method = get_method(self.method)
        self.method = method.name
        if self.target_layer is not None and not method.saliency:
            raise OptionError("target_layer", f"applies to pytorch-grad-cam methods; {self.method} reads no layer")
        for option, given in (("save_scores", self.save_scores), ("scales", self.is_pyramid)):
            if given and option in method.refuses:
                raise OptionError(option, method.refuses[option])

    @property
    def is_pyramid(self) -> bool:
        return self.scales != (1.0,)

    @property
    def is_saliency(self) -> bool:
        return get_method(self.method).saliency


@dataclass
class RenderedImage:
    """Everything computed for one image, ready to be written."""

    overlay: np.ndarray | None  # None when rendered with ``draw=False``
    heatmaps: list[ClassHeatmap]
    score_map: ScoreMap | None  # on the picture's pixels; None for a pyramid (see ``levels``)
    grid: np.ndarray | None = None
    summary: dict = field(default_factory=dict)
    icc_profile: bytes | None = None  # the input's colour profile, written into the pictures
    levels: list[PyramidLevel] = field(default_factory=list)


def write_scores(path: str | os.PathLike, score_map: ScoreMap) -> Path:
    """The raw score grid (logits) with everything that places its cells on the image, as ``.npz`` (atomic)."""
    geometry = score_map.geometry
    return atomic_write_npz(
        path,
        logits=score_map.logits.numpy(),
        image_size=np.asarray(score_map.image_size),
        grid=np.asarray(geometry.grid),
        stride=np.asarray(geometry.stride),
        first_center=np.asarray(geometry.first_center),
        window=np.asarray(geometry.window),
        receptive_field=np.asarray(geometry.receptive_field),
        categories=np.asarray(score_map.categories),
    )


def reported_probabilities(rendered: RenderedImage) -> list[float]:
    """The probability each class of ``rendered`` is reported with (the table, the web page's labels): its peak
    probability, or for a map scaled per class (cam, a saliency method: its peak is 1 by construction) what the
    classifier gives the window."""
    saliency = get_method(rendered.summary["method"]).min_max_scaled
    return [entry["window_probability"] if saliency else heat.peak_probability
            for entry, heat in zip(rendered.summary["classes"], rendered.heatmaps)]


def heat_panel(image: np.ndarray, heatmap: ClassHeatmap, options: HeatmapOptions, lines: list[str],
               marker: bool = True) -> np.ndarray:
    """One class's heat over ``image`` with a legend (and a cross at its peak, never under the legend)."""
    heat = normalize_heat(heatmap.heatmap, options.normalize)  # the legend keeps the true probabilities
    blended = overlay(image, heat, colormap=options.colormap, alpha=options.alpha)
    return draw_legend_and_marker(blended, lines, heatmap.peak_pixel if marker else None, colormap=options.colormap,
                                  font=options.font)


def pyramid_heatmaps(levels: list[PyramidLevel], options: HeatmapOptions, fuse: str = HEATMAP_FUSE
                     ) -> list[ClassHeatmap]:
    """Heatmaps of the named classes (or the ``topk`` classes with the highest peak over all levels), each
    level's per-pixel map fused by ``fuse`` (``max`` or ``mean``); every level must already be on the picture's
    pixels."""
    probabilities = [level.score_map.probabilities() for level in levels]
    first = levels[0].score_map
    if options.classes:
        selections = resolve_classes(options.classes, first.categories)
    else:  # a class's peak over the pyramid is its highest cell of any level
        selections = top_classes(first, options.topk, torch.cat([cells.flatten(1) for cells in probabilities], 1))
    heatmaps = []
    for selection in selections:
        per_level = [torch.from_numpy(heatmap_for_class(level.score_map, selection, cells).heatmap)
                     for level, cells in zip(levels, probabilities)]
        level_cells = [selection_probabilities(cells, selection) for cells in probabilities]
        heatmaps.append(ClassHeatmap.from_pixels(selection, fuse_maps(torch.stack(per_level), fuse).numpy(),
                                                 [level.score_map.geometry for level in levels], level_cells))
    return heatmaps


def _on_picture(saliency: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A saliency map of the network's input, resized (bilinear) onto the picture's ``size = (height, width)``."""
    if saliency.shape == tuple(size):
        return saliency
    return np.clip(cv2.resize(saliency, (int(size[1]), int(size[0])), interpolation=cv2.INTER_LINEAR), 0.0, 1.0)


def _map_summary(score_map: ScoreMap) -> dict:
    geometry = score_map.geometry
    return {"map_size": {"rows": geometry.grid[0], "cols": geometry.grid[1]}, "stride": list(geometry.stride),
            "geometry": geometry.to_dict()}


class ScoreMapTask(DecodeLimitsFromOptions):
    """Mixin for tasks that score ``self.network`` on the shared inference path, drawing by ``self.options``
    (:class:`HeatmapOptions`) and scoring by ``self.scoring`` (:class:`~fcn_app.scoring.ScoringOptions`)."""

    network: torch.nn.Module
    options: HeatmapOptions
    scoring: ScoringOptions
    #: How pyramid levels are fused when ``options.fuse`` is not given (each task's rule).
    default_fuse: ClassVar[str] = HEATMAP_FUSE

    @property
    def fuse(self) -> str:
        """``options.fuse``, or the task's :attr:`default_fuse`."""
        return self.options.fuse or self.default_fuse

    def check(self) -> None:
        if self.options.classes:
            resolve_classes(self.options.classes, self.network.categories)

    def predict(self, images: list[np.ndarray], progress: ProgressCallback | None = None
                ) -> list[ScoreMap] | list[list[PyramidLevel]]:
        """Each image's score map, or with several ``options.scales`` its pyramid levels."""
        scoring = self.scoring
        if not self.options.is_pyramid:
            return compute_score_maps(self.network, images, precision=scoring.precision,
                                      max_memory=scoring.max_memory, progress=progress, backend=scoring.backend)
        return [score_pyramid(self.network, image, self.options.scales, precision=scoring.precision,
                              max_memory=scoring.max_memory, progress=progress, backend=scoring.backend)
                for image in images]

    def optional_paths(self, stem: str) -> dict[str, Path]:
        """The outputs every scored task can add: the raw scores and the JSON summary, when asked for."""
        paths = {}
        if self.options.save_scores:
            paths["scores"] = Path(stem + SCORES_SUFFIX)
        if self.options.write_json:
            paths["json"] = Path(stem + JSON_SUFFIX)
        return paths

    @staticmethod
    def optional_writers(rendered) -> dict:
        """Writers of :meth:`optional_paths` for a rendered result with ``score_map`` and ``summary``."""
        return {"scores": lambda path: write_scores(path, rendered.score_map),
                "json": lambda path: atomic_write_json(path, rendered.summary)}


@dataclass
class HeatmapTask(ScoreMapTask):
    """Classifier heatmaps of ``network``: overlay of the first class with a legend of all, optional grid/JSON/scores.

    ``scoring`` says how :func:`~fcn_app.scoring.compute_score_maps` runs (precision, memory budget). The
    network sees each image at ``options.work_size`` (see :class:`HeatmapOptions`); with several
    ``options.scales`` the prediction of an image is its pyramid levels rather than one score map.
    """

    network: FullyConvolutionalNet
    options: HeatmapOptions = field(default_factory=HeatmapOptions)
    scoring: ScoringOptions = field(default_factory=ScoringOptions)

    def __post_init__(self) -> None:
        self.network = method_network(self.network, self.options.method)  # cam: one feature cell per window

    @property
    def work_size_rule(self) -> str:
        """How the working size was chosen, as printed: ``"4 windows, never enlarged"``, ``"896 px"``, ``"native"``."""
        work_size = self.options.work_size
        if work_size is None:
            return f"{DEFAULT_WORK_WINDOWS} windows, never enlarged"
        return NATIVE if work_size == NATIVE else f"{work_size} px"

    @property
    def decode_request(self) -> DecodeRequest:
        work_size = self.options.work_size
        if work_size is None:
            # the rule is in windows of the size the classifier was trained at (a CAM window is one cell)
            work_size = default_work_size(self.network.training_size)
        return DecodeRequest(max_side=self.max_side, max_pixels=self.max_pixels,
                             work_size=None if work_size == NATIVE else work_size,
                             enlarge=self.options.work_size is not None)

    def predict(self, images: list[np.ndarray], progress: ProgressCallback | None = None
                ) -> list[ScoreMap] | list[list[PyramidLevel]] | list[SaliencyMaps]:
        options = self.options
        if options.is_saliency:
            return [saliency_maps(self.network, image, options.method, classes=options.classes, topk=options.topk,
                                  target_layer=options.target_layer) for image in images]
        return super().predict(images, progress)

    def render(self, image: np.ndarray | InputImage, prediction: ScoreMap | list[PyramidLevel],
               source: str | None, *, draw: bool = True) -> RenderedImage:
        """The heatmaps and summary of one image, and with ``draw`` its overlay (and grid); ``draw=False`` leaves
        ``overlay`` and ``grid`` None and skips the picture's decode and drawing (a caller that only needs the
        numbers, such as the web app's page, which blends its own overlay)."""
        options = self.options
        if draw:
            picture, icc_profile = picture_of(image)
            size = picture.shape[:2]
        else:
            picture, icc_profile = None, getattr(image, "icc_profile", None)
            size = tuple(image.picture_size) if isinstance(image, InputImage) else image.shape[:2]
        probabilities = None
        if isinstance(prediction, SaliencyMaps):
            work_height, work_width = prediction.image_size
            score_map, levels = None, []
            cells = [geometry_on_original(prediction.cells, prediction.image_size, size)]
            heatmaps = [ClassHeatmap.from_pixels(selection, _on_picture(saliency, size), cells)
                        for selection, saliency in zip(prediction.selections, prediction.maps)]
            probabilities = prediction.window_probabilities
            maps = {"target_layer": prediction.target_layer, "seconds": round(prediction.seconds, 4)}
        elif isinstance(prediction, ScoreMap):
            work_height, work_width = prediction.image_size
            score_map, levels = score_map_on_original(prediction, size), []
            if get_method(options.method).kind is MethodKind.CAM:
                heatmaps, probabilities = class_activation_maps(score_map, options.classes, options.topk)
            else:
                heatmaps = class_heatmaps(score_map, options.classes, options.topk)
            maps = _map_summary(score_map)
        else:
            work_height, work_width = prediction[0].score_map.image_size
            score_map = None
            levels = [replace(level, score_map=score_map_on_original(level.score_map, size)) for level in prediction]
            heatmaps = pyramid_heatmaps(levels, options, self.fuse)
            maps = {"scales": list(options.scales), "fuse": self.fuse,
                    "levels": [{"scale": level.scale, **_map_summary(level.score_map)} for level in levels]}
        if probabilities is None:
            lines = [f"{rank}. {heat.selection.name}  {format_probability(heat.peak_probability)}"
                     for rank, heat in enumerate(heatmaps, start=1)]
        else:  # a saliency map peaks at 1 by construction: the legend gives what the classifier says instead
            lines = [f"{rank}. {heat.selection.name}  p {format_probability(probability)} ({options.method})"
                     for rank, (heat, probability) in enumerate(zip(heatmaps, probabilities), start=1)]
        main = heat_panel(picture, heatmaps[0], options, lines) if draw else None
        grid = None
        if options.grid and draw:
            grid = tile_panels([heat_panel(picture, heat, options, [line]) for heat, line in zip(heatmaps, lines)])
        height, width = size
        summary = {
            "image": source,
            "image_size": {"width": int(width), "height": int(height)},
            "work_size": {"width": int(work_width), "height": int(work_height), "rule": self.work_size_rule},
            "method": options.method,
            **maps,
            "classes": [heat.to_dict() if probabilities is None else
                        {**heat.to_dict(), "window_probability": round(probability, 6)}
                        for heat, probability in zip(heatmaps, probabilities or [None] * len(heatmaps))],
            "runtime": self.scoring.summary(self.network),
        }
        return RenderedImage(main, heatmaps, score_map, grid, summary, icc_profile, levels)

    def output_paths(self, stem: str | os.PathLike) -> dict[str, Path]:
        stem, extension = str(stem), "." + self.options.image_format
        paths = {"overlay": Path(stem + OVERLAY_SUFFIX + extension)}
        if self.options.grid:
            paths["grid"] = Path(stem + GRID_SUFFIX + extension)
        return {**paths, **self.optional_paths(stem)}

    def write(self, rendered: RenderedImage, paths: dict[str, Path]) -> dict[str, Path]:
        def picture(pixels: np.ndarray):
            return lambda path: atomic_write_image(path, pixels, format=self.options.image_format,
                                                   icc_profile=rendered.icc_profile)

        return write_each({"overlay": picture(rendered.overlay), "grid": picture(rendered.grid),
                           **self.optional_writers(rendered)}, paths)

    def row_fields(self, rendered: RenderedImage) -> dict:
        return {"top_classes": [
            {"name": heat.selection.name, "peak_probability": round(heat.peak_probability, 6),
             **({"window_probability": entry["window_probability"]} if "window_probability" in entry else {})}
            for heat, entry in zip(rendered.heatmaps, rendered.summary["classes"])
        ]}

    def report(self, rendered: RenderedImage) -> Report:
        summary = rendered.summary
        work = summary["work_size"]
        if "levels" in summary:
            scales = ", ".join(f"{scale:g}" for scale in summary["scales"])
            maps = f"scales {scales} ({summary['fuse']})"
        elif "target_layer" in summary:
            maps = f"{summary['method']} on {summary['target_layer']}, {summary['seconds']:.2f} s"
        else:
            maps = f"map {summary['map_size']['rows']}×{summary['map_size']['cols']}"
        title = (f"{summary['image']} · {summary['image_size']['width']}×{summary['image_size']['height']} px · "
                 f"network sees {work['width']}×{work['height']} ({work['rule']}) · {maps}")
        saliency = get_method(summary["method"]).min_max_scaled
        values = reported_probabilities(rendered)
        rows = [[str(rank), heat.selection.name, format_probability(value),
                 f"({heat.peak_pixel[0]}, {heat.peak_pixel[1]})"]
                for rank, (heat, value) in enumerate(zip(rendered.heatmaps, values), start=1)]
        value_column = "window prob" if saliency else "peak prob"  # a saliency map's own peak is 1 by construction
        return Report(title, ["#", "class", value_column, "peak pixel (x, y)"], rows,
                      numeric=("#", value_column, "peak pixel (x, y)"))
