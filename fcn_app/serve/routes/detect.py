"""``POST /api/detect``: detections, the ``<name>.detections.json`` of ``fcn-heatmap detect IMAGE`` plus the boxes'
picture."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from ...detect import DetectOptions
from ...pyramid import parse_scales
from ..dependencies import ServerDependency
from ..fields import (ClassField, FlagField, FractionField, ImageField, MaxPixelsField, MaxSideField, MethodField,
                      NumberField, PathField, TargetLayerField, TextField, TopkField, WorkSizeField, format_field)
from ..service import Source, detect_job

__all__ = ["router"]

router = APIRouter()
_FormatField = format_field("Picture format of the boxes: png, jpg or webp.")


@router.post("/api/detect", summary="Detections: the `<name>.detections.json` of `fcn-heatmap detect IMAGE` plus "
                                    "the boxes' picture")
async def detect(
    server: ServerDependency, image: ImageField = None, path: PathField = None, classes: ClassField = None,
    topk: TopkField = 5, scales: TextField = "1", fuse: TextField = "max", threshold_mode: TextField = "relative",
    threshold: FractionField = 0.5, min_score: FractionField = 0.3, box_mode: TextField = "auto",
    window_fill: NumberField = 1.0, center: TextField = "peak", nms_iou: FractionField = 0.3,
    classwise_nms: FlagField = False, masks: FlagField = False, max_side: MaxSideField = None,
    max_pixels: MaxPixelsField = None, method: MethodField = None, target_layer: TargetLayerField = None,
    work_size: WorkSizeField = None, image_format: _FormatField = "png",
) -> JSONResponse:
    def job(source: Source, folder: Path, limit: int) -> dict:
        options = DetectOptions(threshold_mode=threshold_mode, threshold=threshold, min_score=min_score,
                                box_mode=box_mode, window_fill=window_fill, center=center, nms_iou=nms_iou,
                                classwise_nms=classwise_nms, masks=masks)
        settings = {"scales": parse_scales(scales), "classes": classes or None, "fuse": fuse, "topk": topk,
                    "max_side": max_side, "max_pixels": limit, "method": method or server.settings.method,
                    "target_layer": target_layer or None, "work_size": work_size, "image_format": image_format,
                    "description": {"model": server.settings.model, "stride": server.settings.stride}}
        return detect_job(server.settings.network, options, settings, source, folder, server.queue.score)

    return await server.answer(image, path, max_pixels, job)
