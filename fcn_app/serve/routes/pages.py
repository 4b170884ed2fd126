"""The HTML pages: the web app (``/``) and the API docs (``/docs``: Swagger UI, ``/redoc``), all self-contained."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

__all__ = ["STATIC", "router"]

STATIC = Path(__file__).resolve().parent.parent / "static"
#: Swagger UI and ReDoc as shipped in the package (static/vendor/NOTICE.md: versions, licences).
VENDOR_URL = "/static/vendor"
_ICON = f"{VENDOR_URL}/swagger-ui-favicon-32x32.png"
#: The API docs pages load nothing from another host. ReDoc's bundle itself asks cdn.redoc.ly for its logo (and
#: hides it when that fails): this keeps the browser from even trying. Inline: Swagger UI's start script and
#: ReDoc's styled-components; blob: ReDoc's search worker.
_DOCS_POLICY = "default-src 'self' 'unsafe-inline' data: blob:"

router = APIRouter(include_in_schema=False)


def _self_contained(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = _DOCS_POLICY
    return page


# /docs and /redoc with their scripts, styles and icon served by this app: FastAPI's own pages load them from CDNs
# (and ReDoc's fonts from Google), which leaves both blank on a machine offline. The app is reached through the
# request: FastAPI keeps endpoints in caches that outlive an app, and one holding it would keep its server alive.
@router.get("/docs")
def swagger_ui(request: Request) -> HTMLResponse:
    """Swagger UI on this app's OpenAPI schema."""
    return _self_contained(get_swagger_ui_html(
        openapi_url=request.app.openapi_url, title=f"{request.app.title} API",
        swagger_js_url=f"{VENDOR_URL}/swagger-ui-bundle.js", swagger_css_url=f"{VENDOR_URL}/swagger-ui.css",
        swagger_favicon_url=_ICON))


@router.get("/redoc")
def redoc(request: Request) -> HTMLResponse:
    """ReDoc on this app's OpenAPI schema."""
    return _self_contained(get_redoc_html(
        openapi_url=request.app.openapi_url, title=f"{request.app.title} API",
        redoc_js_url=f"{VENDOR_URL}/redoc.standalone.js", redoc_favicon_url=_ICON, with_google_fonts=False))


@router.get("/")
def page() -> FileResponse:
    """The web app's one page."""
    return FileResponse(STATIC / "index.html")
