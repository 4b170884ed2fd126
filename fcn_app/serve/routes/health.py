"""``/healthz``: liveness, queue length, and the tiles done of the image being scored."""

from __future__ import annotations

from fastapi import APIRouter

from ..dependencies import ServerDependency

__all__ = ["router"]

router = APIRouter()


@router.get("/healthz", summary="Liveness, queue length, and the tiles done of the image being scored")
def healthz(server: ServerDependency) -> dict:
    progress = server.queue.progress
    return {"status": "ok", "queued": server.queue.pending, "capacity": server.queue.capacity,
            "progress": None if progress is None else {"done": progress[0], "total": progress[1]}}
