"""The app's routes, one :class:`fastapi.APIRouter` per resource (FastAPI's "Bigger Applications" layout).

:data:`ROUTERS` is the order ``create_app`` includes them in, which is the order of ``/docs``. The endpoints of
the API have no docstrings on purpose: FastAPI would publish one as the operation's description in the schema."""

from __future__ import annotations

from . import detect, files, health, heatmap, model, pages, segment

__all__ = ["ROUTERS"]

ROUTERS = (pages.router, health.router, model.router, files.router, heatmap.router, segment.router, detect.router)
