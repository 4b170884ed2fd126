"""Browsing ``--root``: ``/api/files`` lists a folder, ``/api/file`` sends an image (checks: ``serve/files.py``)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse

from ..dependencies import ServerDependency, below_root

__all__ = ["router"]

router = APIRouter()


@router.get("/api/files", summary="Sub-folders and images of a folder below --root")
def files(server: ServerDependency, folder: str = "") -> JSONResponse:
    return below_root(server, folder, lambda root: JSONResponse(root.listing(folder)))


@router.get("/api/file", summary="An image below --root, as stored")
def file(server: ServerDependency, path: str):
    return below_root(server, path, lambda root: FileResponse(root.image(path)))
