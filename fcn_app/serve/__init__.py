"""``fcn-heatmap serve``: a local web app and HTTP API over the same tasks as the command line.

Needs the optional extra (``pip install 'fcn-heatmap[serve]'``: FastAPI, uvicorn, python-multipart); importing
this package does not import them — :func:`require_extra` says in one line what to install.
"""

from __future__ import annotations

import tempfile
from typing import TYPE_CHECKING

from ..errors import FcnError

if TYPE_CHECKING:  # pragma: no cover
    from .app import ServeSettings

__all__ = ["LOCAL_HOSTS", "ExtraMissingError", "require_extra", "run_server"]

#: Host names that only this machine can reach.
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


class ExtraMissingError(FcnError):
    """An optional dependency group is not installed."""

    exit_code = 2


def require_extra() -> None:
    """Import the web stack, or :class:`ExtraMissingError` naming the extra to install."""
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401  (uploads)
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise ExtraMissingError(f"the web app needs the 'serve' extra ({error.name or error} is missing): "
                                "pip install 'fcn-heatmap[serve]'") from None


def run_server(settings: "ServeSettings", host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``settings`` until interrupted. The process's temporary folder becomes the app's private folder,
    so even the multipart parser's spooled uploads stay in it (and go with it)."""
    require_extra()
    import uvicorn

    from .app import create_app

    app = create_app(settings)
    tempfile.tempdir = str(app.state.server.private.path)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
    finally:
        tempfile.tempdir = None
        app.state.server.private.close()
