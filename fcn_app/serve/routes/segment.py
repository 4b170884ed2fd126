"""``POST /api/segment``: segmentation (``--checkpoint``), the JSON of ``fcn-heatmap IMAGE --checkpoint C --json``
plus the pictures and the palette's legend."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Form
from fastapi.responses import JSONResponse

from ...render import DEFAULT_COLORMAP
from ...tasks import HeatmapOptions
from ..dependencies import ServerDependency
from ..fields import (ClassField, FractionField, ImageField, MaxPixelsField, MaxSideField, NormalizeField, PathField,
                      TextField, TopkField, WorkSizeField, format_field, normalize_mode)
from ..service import Source, segment_job

__all__ = ["router"]

router = APIRouter()
_FormatField = format_field("Picture format of the overlay: png, jpg or webp (labels stay PNG).")


@router.post("/api/segment", summary="Segmentation (--checkpoint): the JSON of `fcn-heatmap IMAGE --checkpoint C "
                                     "--json` plus the pictures and the palette's legend")
async def segment(
    server: ServerDependency, image: ImageField = None, path: PathField = None, classes: ClassField = None,
    topk: TopkField = 3, colormap: TextField = DEFAULT_COLORMAP, alpha: FractionField = 0.5,
    normalize: NormalizeField = "none", work_size: WorkSizeField = None, scales: TextField = "1",
    fuse: Annotated[str | None, Form(description="Fuse pyramid levels: mean (of probabilities, the default for "
                                                 "segmentation) or max.")] = None,
    image_format: _FormatField = "png",
    max_side: MaxSideField = None, max_pixels: MaxPixelsField = None,
) -> JSONResponse:
    def job(source: Source, folder: Path, limit: int) -> dict:
        options = HeatmapOptions(classes=classes or None, topk=topk, colormap=colormap, alpha=alpha,
                                 normalize=normalize_mode(normalize), max_side=max_side, max_pixels=limit,
                                 work_size=work_size, scales=scales, fuse=fuse, image_format=image_format)
        return segment_job(server.settings.network, options, server.settings.scoring, source, folder,
                           server.queue.score)

    if not server.settings.segmentation:
        return JSONResponse({"detail": "this server runs a classifier; start it with --checkpoint to segment"}, 409)
    return await server.answer(image, path, max_pixels, job)
