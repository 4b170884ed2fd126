"""What the server runs: ``/api/info`` (model, mode, limits, colormaps, methods) and ``/api/classes``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse

from ...choices import NORMALIZE_MODES
from ...errors import FcnError
from ...heatmaps import resolve_classes
from ...render import DEFAULT_COLORMAP
from ..dependencies import ServerDependency, one_line

__all__ = ["router"]

router = APIRouter()


@router.get("/api/info", summary="What this server runs: model, mode, limits, colormaps")
def info(server: ServerDependency) -> dict:
    settings = server.settings
    return {"model": settings.model, "mode": "segmentation" if settings.segmentation else "classifier",
            "classes": len(settings.network.categories), "root": server.root is not None,
            "max_upload_bytes": settings.max_upload_bytes, "max_pixels": settings.max_pixels,
            "default_colormap": DEFAULT_COLORMAP, "colormaps": server.colormaps,
            "normalize_modes": list(NORMALIZE_MODES),
            "methods": server.methods, "default_method": settings.method}


@router.get("/api/classes", summary="The model's class names, or what a --class value selects")
def classes(server: ServerDependency, query: Annotated[str | None, Query(
        description="A class name, word or index: answers the classes it selects (summed per pixel).")] = None
) -> JSONResponse:
    categories = list(server.settings.network.categories)
    if query is None:
        return JSONResponse({"classes": categories})
    try:
        selection = resolve_classes([query], categories)[0]
    except FcnError as error:
        return JSONResponse({"detail": one_line(str(error))}, 422)
    return JSONResponse({"name": selection.name, "indices": list(selection.indices),
                         "names": [categories[index] for index in selection.indices]})
