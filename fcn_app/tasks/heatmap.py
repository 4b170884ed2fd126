"""Classifier heatmaps as an image task: score map → class heatmaps → overlay, grid, JSON, raw scores.

An image processed alone and the same image inside a folder go through the same methods here, so their
outputs are the same files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import OptionError
from ..heatmaps import ClassHeatmap, class_heatmaps, resolve_classes
from ..io import DEFAULT_MAX_PIXELS, atomic_write_json, atomic_write_npz, atomic_write_png
from ..models.convert import FullyConvolutionalNet
from ..render import DEFAULT_COLORMAP, check_colormap, draw_legend, draw_marker, overlay, tile_panels
from ..scoring import ScoreMap, ScoringOptions, compute_score_maps
from ..text import check_font
from .base import DecodeLimitsFromOptions, ProgressCallback, Report, write_each

__all__ = ["HeatmapOptions", "HeatmapTask", "RenderedImage", "ScoreMapTask", "write_scores"]

OVERLAY_SUFFIX = ".heatmap.png"
GRID_SUFFIX = ".grid.png"
SCORES_SUFFIX = ".scores.npz"
JSON_SUFFIX = ".json"


@dataclass
class HeatmapOptions:
    """What to draw and write for each image (shared by classifier heatmaps and segmentation models).

    Attributes:
        classes: class names, words or indices (see :func:`~fcn_app.heatmaps.resolve_classes`); else the
            ``topk`` classes with the highest peak probability.
        colormap, alpha: heat colours and their opacity over the photo.
        grid: also a picture with one panel per class.
        save_scores: also the raw score grid with its geometry (``.scores.npz``).
        write_json: also the summary as JSON.
        normalize: colours span 0 → each class's own peak (the legend keeps the true peak).
        max_side, max_pixels: decode limits (downscale longer sides; refuse bigger files).
        font: TrueType/OpenType file for legends (default: the bundled DejaVu Sans).
    """

    classes: list[str] | None = None
    topk: int = 3
    colormap: str = DEFAULT_COLORMAP
    alpha: float = 0.5
    grid: bool = False
    save_scores: bool = False
    write_json: bool = False
    normalize: bool = False
    max_side: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    font: str | None = None

    def __post_init__(self) -> None:
        check_colormap(self.colormap)
        check_font(self.font)
        if self.topk < 1:
            raise OptionError("topk", f"must be at least 1, got {self.topk}")
        if not 0.0 <= self.alpha <= 1.0:
            raise OptionError("alpha", f"must be between 0 and 1, got {self.alpha}")
        if self.max_side is not None and self.max_side < 1:
            raise OptionError("max_side", f"must be at least 1, got {self.max_side}")
        if self.max_pixels < 1:
            raise OptionError("max_pixels", f"must be at least 1, got {self.max_pixels}")


@dataclass
class RenderedImage:
    """Everything computed for one image, ready to be written."""

    overlay: np.ndarray
    heatmaps: list[ClassHeatmap]
    score_map: ScoreMap
    grid: np.ndarray | None = None
    summary: dict = field(default_factory=dict)


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


def heat_panel(image: np.ndarray, heatmap: ClassHeatmap, options: HeatmapOptions, lines: list[str],
               marker: bool = True) -> np.ndarray:
    """One class's heat over ``image`` with a legend (and a cross at its peak)."""
    heat = heatmap.heatmap
    if options.normalize and heatmap.peak_probability > 0:
        heat = heat / heatmap.peak_probability  # colours span 0 → this class's peak (legend keeps the true peak)
    blended = overlay(image, heat, colormap=options.colormap, alpha=options.alpha)
    if marker:
        blended = draw_marker(blended, heatmap.peak_pixel)
    return draw_legend(blended, lines, colormap=options.colormap, font=options.font)


class ScoreMapTask(DecodeLimitsFromOptions):
    """Mixin for tasks that score ``self.network`` on the shared inference path, drawing by ``self.options``
    (:class:`HeatmapOptions`) and scoring by ``self.scoring`` (:class:`~fcn_app.scoring.ScoringOptions`)."""

    network: torch.nn.Module
    options: HeatmapOptions
    scoring: ScoringOptions

    def check(self) -> None:
        if self.options.classes:
            resolve_classes(self.options.classes, self.network.categories)

    def predict(self, images: list[np.ndarray], progress: ProgressCallback | None = None) -> list[ScoreMap]:
        return compute_score_maps(self.network, images, precision=self.scoring.precision,
                                  max_memory=self.scoring.max_memory, progress=progress)

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

    ``scoring`` says how :func:`~fcn_app.scoring.compute_score_maps` runs (precision, memory budget).
    """

    network: FullyConvolutionalNet
    options: HeatmapOptions = field(default_factory=HeatmapOptions)
    scoring: ScoringOptions = field(default_factory=ScoringOptions)

    def render(self, image: np.ndarray, prediction: ScoreMap, source: str | None) -> RenderedImage:
        options = self.options
        heatmaps = class_heatmaps(prediction, options.classes, options.topk)
        lines = [f"{rank}. {heat.selection.name}  {heat.peak_probability:.2f}"
                 for rank, heat in enumerate(heatmaps, start=1)]
        main = heat_panel(image, heatmaps[0], options, lines)
        grid = None
        if options.grid:
            grid = tile_panels([heat_panel(image, heat, options, [line]) for heat, line in zip(heatmaps, lines)])
        height, width = prediction.image_size
        geometry = prediction.geometry
        summary = {
            "image": source,
            "image_size": {"width": int(width), "height": int(height)},
            "map_size": {"rows": geometry.grid[0], "cols": geometry.grid[1]},
            "stride": list(geometry.stride),
            "geometry": geometry.to_dict(),
            "classes": [heat.to_dict() for heat in heatmaps],
        }
        return RenderedImage(main, heatmaps, prediction, grid, summary)

    def output_paths(self, stem: str | os.PathLike) -> dict[str, Path]:
        stem = str(stem)
        paths = {"overlay": Path(stem + OVERLAY_SUFFIX)}
        if self.options.grid:
            paths["grid"] = Path(stem + GRID_SUFFIX)
        return {**paths, **self.optional_paths(stem)}

    def write(self, rendered: RenderedImage, paths: dict[str, Path]) -> dict[str, Path]:
        return write_each({"overlay": lambda path: atomic_write_png(path, rendered.overlay),
                           "grid": lambda path: atomic_write_png(path, rendered.grid),
                           **self.optional_writers(rendered)}, paths)

    def row_fields(self, rendered: RenderedImage) -> dict:
        return {"top_classes": [
            {"name": heat.selection.name, "peak_probability": round(heat.peak_probability, 6)}
            for heat in rendered.heatmaps
        ]}

    def report(self, rendered: RenderedImage) -> Report:
        summary = rendered.summary
        title = (f"{summary['image']} · {summary['image_size']['width']}×{summary['image_size']['height']} px · map "
                 f"{summary['map_size']['rows']}×{summary['map_size']['cols']}")
        rows = [[str(rank), heat.selection.name, f"{heat.peak_probability:.3f}",
                 f"({heat.peak_pixel[0]}, {heat.peak_pixel[1]})"]
                for rank, heat in enumerate(rendered.heatmaps, start=1)]
        return Report(title, ["#", "class", "peak prob", "peak pixel (x, y)"], rows,
                      numeric=("#", "peak prob", "peak pixel (x, y)"))
