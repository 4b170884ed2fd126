"""``POST /api/heatmap``: class heatmaps, the JSON of ``fcn-heatmap IMAGE --json`` plus the pictures."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import JSONResponse

from ...render import DEFAULT_COLORMAP
from ...tasks import HeatmapOptions
from ..dependencies import ServerDependency
from ..fields import (ClassField, FlagField, FractionField, ImageField, MaxPixelsField, MaxSideField, MethodField,
                      NormalizeField, PathField, TargetLayerField, TextField, TopkField, WorkSizeField, format_field,
                      normalize_mode)
from ..service import Source, heatmap_job

__all__ = ["router"]

router = APIRouter()
_FormatField = format_field()


@router.post("/api/heatmap", summary="Class heatmaps: the JSON of `fcn-heatmap IMAGE --json` plus the pictures")
async def heatmap(
    server: ServerDependency, image: ImageField = None, path: PathField = None, classes: ClassField = None,
    topk: TopkField = 3, colormap: TextField = DEFAULT_COLORMAP, alpha: FractionField = 0.5, grid: FlagField = False,
    normalize: NormalizeField = "none", work_size: WorkSizeField = None, scales: TextField = "1",
    fuse: TextField = "max", image_format: _FormatField = "png", max_side: MaxSideField = None,
    max_pixels: MaxPixelsField = None, method: MethodField = None, target_layer: TargetLayerField = None,
    pixels: Annotated[bool, Form(description="Also what the page blends and hovers: the per-cell probabilities "
                                             "and interpolation matrices it reads any pixel's classes from, or "
                                             "for a saliency method each class's map (side ≤ 256).")] = False,
    pictures: Annotated[bool, Form(description="Draw and send the pictures (overlay, and grid with grid=true) "
                                               "as data URLs. false: nothing is drawn or encoded and "
                                               "`pictures` is {} — the JSON summary (and pixels) only, as the "
                                               "page asks, since it blends its own overlay.")] = True,
) -> JSONResponse:
    def job(source: Source, folder: Path, limit: int) -> dict:
        options = HeatmapOptions(classes=classes or None, topk=topk, colormap=colormap, alpha=alpha, grid=grid,
                                 normalize=normalize_mode(normalize), max_side=max_side, max_pixels=limit,
                                 work_size=work_size, scales=scales, fuse=fuse, image_format=image_format,
                                 method=method or server.settings.method, target_layer=target_layer or None)
        return heatmap_job(server.settings.network, options, server.settings.scoring, source, folder, pixels,
                           server.queue.score, with_pictures=pictures)

    if server.settings.segmentation:
        return JSONResponse({"detail": "this server runs a segmentation checkpoint: POST /api/segment"}, 409)
    return await server.answer(image, path, max_pixels, job)
