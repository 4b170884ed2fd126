"""The ASGI application: one static page and the HTTP API behind it (FastAPI; OpenAPI at ``/docs``).

Requests never reach the model directly: each becomes a job on :class:`~fcn_app.serve.service.ModelQueue`
(one model, one image scored at a time while another job decodes or draws, a bounded queue → 429 with
``Retry-After``, a per-request timeout). Every refusal is one readable line in ``{"detail": …}`` with a 4xx
status; an unexpected error is a 500 with one line and the server keeps serving.

Layout (FastAPI's "Bigger Applications"): the routes are one router per resource in ``routes/``, what they share
(the server state, its limits, the POST path) is a dependency in ``dependencies.py``, their form fields are the
aliases of ``fields.py``; :func:`create_app` only wires them.
"""

from __future__ import annotations

import contextlib

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .. import __version__
from .dependencies import ServerState
from .handlers import EXCEPTION_HANDLERS
from .limits import BodySizeLimit
from .routes import ROUTERS
from .routes.pages import STATIC
from .settings import ServeSettings

__all__ = ["BodySizeLimit", "ServeSettings", "create_app"]

_DESCRIPTION = ("Class heatmaps, detections and segmentation of a fully convolutional network. Every POST takes a "
                "multipart image (or a path below --root) and the CLI's options, and answers the command's --json "
                "summary plus its pictures as data URLs (/api/heatmap with pictures=false: none drawn).")


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI):
    yield
    app.state.server.queue.close()
    app.state.server.private.close()


def create_app(settings: ServeSettings) -> FastAPI:
    """The web app and API for ``settings.network``."""
    app = FastAPI(lifespan=_lifespan, title="fcn-heatmap", version=__version__, docs_url=None, redoc_url=None,
                  description=_DESCRIPTION, exception_handlers=EXCEPTION_HANDLERS)
    app.state.server = ServerState(settings)
    app.add_middleware(BodySizeLimit, limit=settings.max_upload_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    for router in ROUTERS:
        app.include_router(router)
    return app
