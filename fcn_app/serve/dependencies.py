"""What the routes share, as FastAPI dependencies: the per-app server state (the one network, its queue, the
private folder, the limits) reached through the request — nothing global, nothing mutated per request — and the
path every POST takes: save the input, run a job on the queue, answer its JSON or one refusal line."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request, UploadFile
from fastapi.responses import JSONResponse

from ..errors import ClassSelectionError, FcnError, InputImageError, OptionError
from ..io import IMAGE_EXTENSIONS
from .files import ImageRoot, PrivateFolder, RootPathError
from .service import ModelQueue, QueueFull, RequestTimeout, Source, available_methods, colormap_tables
from .settings import ServeSettings

__all__ = ["Refusal", "ServerDependency", "ServerState", "below_root", "one_line", "refusal_of"]

logger = logging.getLogger(__name__)

#: Library option names whose request field is named otherwise (the CLI's flag without dashes).
_FIELD_NAMES = {"classes": "class", "image_format": "format", "write_json": "json", "inputs": "image"}


class Refusal(Exception):
    """A request refused with ``status`` and one line (``detail``), answered as ``{"detail": …}``."""

    def __init__(self, status: int, detail: str, headers: dict | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def one_line(text: str) -> str:
    """``text`` as one line of at most 500 characters: what every refusal sends."""
    return " ".join(str(text).split())[:500]


def _field_of(option: str | None) -> str | None:
    return _FIELD_NAMES.get(option, option) if option else None


def refusal_of(error: FcnError, private: Path, source_name: str) -> Refusal:
    """The status and the line for one of the program's own errors (the private upload path never shown)."""
    text = re.sub(re.escape(str(private)) + r"/request-[^/\s]+/upload(\.\w+)?", lambda _: source_name, str(error))
    field_name = _field_of(error.option)
    if isinstance(error, RootPathError):
        status = 404 if "no such" in text else 415 if "not an image" in text else 403
    elif isinstance(error, (OptionError, ClassSelectionError)):
        status = 422
    elif isinstance(error, InputImageError):
        status = 413 if error.option == "max_pixels" else 415
    else:
        status = 400
    if field_name and isinstance(error, OptionError):
        text = f"{field_name}: {text}"
    return Refusal(status, one_line(text))


class ServerState:
    """Per-app state shared by the routes (the one network, its queue, the private folder)."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.queue = ModelQueue(settings.queue_size, settings.timeout_s, settings.job_threads)
        self.private = PrivateFolder()
        self.root = ImageRoot(settings.root) if settings.root is not None else None
        self.colormaps = colormap_tables()
        self.methods = [] if settings.segmentation else available_methods(settings.network)

    def max_pixels(self, requested: int | None) -> int:
        if requested is None:
            return self.settings.max_pixels
        if requested > self.settings.max_pixels:
            raise Refusal(422, f"max_pixels: at most {self.settings.max_pixels:,} on this server")
        return requested

    async def answer(self, image: UploadFile | None, path: str | None, max_pixels: int | None, job) -> JSONResponse:
        """Save the input in a private request folder, run ``job(source, folder, max_pixels)`` on the queue
        (``max_pixels``: the request's decoded-pixel limit, never above the server's), answer."""
        folder, source_name = None, "image"
        try:
            limit = self.max_pixels(max_pixels)
            if (image is None) == (path is None or path == ""):
                raise Refusal(422, "give either an uploaded image (field 'image') or a path below --root "
                                   "(field 'path')")
            if image is not None:
                source_name = _upload_name(image.filename)
                folder = self.private.request_folder()
                suffix = Path(source_name).suffix.lower()
                target = folder / ("upload" + (suffix if suffix in IMAGE_EXTENSIONS else ""))
                with open(target, "wb") as handle:
                    while chunk := await image.read(1 << 20):
                        handle.write(chunk)
            else:
                if self.root is None:
                    raise Refusal(404, "this server has no --root; upload the image instead")
                source_name = path
                target = self.root.image(path)
                folder = self.private.request_folder()
            cleanup = (lambda kept=folder: self.private.remove(kept))
            folder_for_job, folder = folder, None  # the queue removes it once the job is over
            payload = await self.queue.run(lambda: job(Source(target, source_name), folder_for_job, limit), cleanup)
            return JSONResponse(payload)
        except Refusal as refusal:
            return JSONResponse({"detail": refusal.detail}, refusal.status, headers=refusal.headers)
        except QueueFull as busy:
            return JSONResponse({"detail": str(busy)}, 429, headers={"Retry-After": str(busy.retry_after)})
        except RequestTimeout as timeout:
            return JSONResponse({"detail": str(timeout)}, 503, headers={"Retry-After": "5"})
        except FcnError as error:
            refusal = refusal_of(error, self.private.path, source_name)
            return JSONResponse({"detail": refusal.detail}, refusal.status)
        except Exception as error:  # noqa: BLE001 — one line to the client, the traceback to the log, keep serving
            logger.exception("internal error on %s", source_name)
            return JSONResponse({"detail": one_line(f"internal error ({type(error).__name__}: {error}); this is a "
                                                    "bug — the server log has the traceback")}, 500)
        finally:
            if folder is not None:
                self.private.remove(folder)


def _upload_name(filename: str | None) -> str:
    name = Path((filename or "image").replace("\\", "/")).name
    name = "".join(character for character in name if character.isprintable())[:200]
    return name or "image"


def _server_state(request: Request) -> ServerState:
    # Through the request, not a module global: each app (the tests build several) has its own.
    return request.app.state.server


ServerDependency = Annotated[ServerState, Depends(_server_state)]


def below_root(server: ServerState, path: str, answer: Callable[[ImageRoot], Any]):
    """``answer(root)``, or the one-line refusal of a server without --root or of a path not below it."""
    if server.root is None:
        return JSONResponse({"detail": "this server has no --root"}, 404)
    try:
        return answer(server.root)
    except RootPathError as error:
        refusal = refusal_of(error, server.private.path, path)
        return JSONResponse({"detail": refusal.detail}, refusal.status)
