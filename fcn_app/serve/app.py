"""The ASGI application: one static page and the HTTP API behind it (FastAPI; OpenAPI at ``/docs``).

Requests never reach the model directly: each becomes a job on :class:`~fcn_app.serve.service.ModelQueue`
(one model, one image scored at a time while another job decodes or draws, a bounded queue → 429 with
``Retry-After``, a per-request timeout). Every refusal is one readable line in ``{"detail": …}`` with a 4xx
status; an unexpected error is a 500 with one line and the server keeps serving.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import Depends, FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..choices import NORMALIZE_MODES
from ..detect import DetectOptions
from ..errors import ClassSelectionError, FcnError, InputImageError, OptionError
from ..heatmaps import resolve_classes
from ..io import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS
from ..methods import FCN, METHODS
from ..pyramid import parse_scales
from ..render import DEFAULT_COLORMAP
from ..scoring import ScoringOptions
from ..tasks import HeatmapOptions
from .files import ImageRoot, PrivateFolder, RootPathError
from .service import (ModelQueue, QueueFull, RequestTimeout, Source, available_methods, colormap_tables, detect_job,
                      heatmap_job, segment_job)

__all__ = ["BodySizeLimit", "ServeSettings", "create_app"]

logger = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
#: Swagger UI and ReDoc as shipped in the package (static/vendor/NOTICE.md: versions, licences).
VENDOR_URL = "/static/vendor"
DEFAULT_MAX_UPLOAD_BYTES = 32 * 1024 * 1024

#: Library option names whose request field is named otherwise (the CLI's flag without dashes).
_FIELD_NAMES = {"classes": "class", "image_format": "format", "write_json": "json", "inputs": "image"}


@dataclass
class ServeSettings:
    """What one server runs: ``network`` (loaded once), and its limits.

    ``segmentation``: the network is a segmentation checkpoint's (``/api/segment``; ``/api/heatmap`` refuses);
    ``model`` and ``stride`` are reported in detection JSON as ``fcn-heatmap detect`` reports them;
    ``method`` is the heatmap method of requests that name none (``serve --method``);
    ``job_threads``: jobs in progress at once — one runs the network, the others decode, draw and encode.
    """

    network: torch.nn.Module
    segmentation: bool = False
    model: str = "vgg16"
    stride: int | None = None
    scoring: ScoringOptions = field(default_factory=ScoringOptions)
    root: Path | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    queue_size: int = 8
    timeout_s: float = 120.0
    method: str = FCN
    job_threads: int = 2


class BodySizeLimit:
    """ASGI middleware: refuse request bodies above ``limit`` bytes with 413 and one line.

    A declared Content-Length above the limit is refused before a byte of the body is read. A body without one
    (``Transfer-Encoding: chunked``) is counted as it streams in: the read that crosses the limit raises instead of
    returning, so the app (the multipart parser) never gets more than ``limit`` bytes, and whatever the app answers
    to that broken read (FastAPI makes it ``400 There was an error parsing the body``) is replaced by the 413 —
    unless its response had already started, in which case it is left alone."""

    class _TooLarge(Exception):
        pass

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def refuse(self, send) -> None:
        """The 413 with its one line, and ``Connection: close``: the server then stops reading, so the rest of a
        refused body is never received (uvicorn would otherwise read and discard it to keep the connection)."""
        await _send_json(send, 413, {"detail": f"the upload is larger than this server's limit of "
                                               f"{self.limit / 2**20:g} MiB; send a smaller file (or restart the "
                                               "server with a larger --max-upload-mb)"}, {"connection": "close"})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self.refuse(send)
        received, started, too_large, refused = 0, False, False, False

        async def counting_receive():
            nonlocal received, too_large
            event = await receive()
            if event["type"] == "http.request":
                received += len(event.get("body", b""))
                if received > self.limit:
                    too_large = too_large or not started
                    raise self._TooLarge
            return event

        async def refuse_once():
            nonlocal refused
            if not refused:
                refused = True
                await self.refuse(send)

        async def guarded_send(event):
            nonlocal started
            if too_large:  # the app's answer to a body it could not read whole: the 413 goes out instead
                return await refuse_once()
            started = started or event["type"] == "http.response.start"
            await send(event)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except self._TooLarge:  # not caught by the app: nothing was sent, or a started response stays cut short
            pass
        if too_large:
            await refuse_once()


async def _send_json(send, status: int, payload: dict, headers: dict | None = None) -> None:
    response = JSONResponse(payload, status_code=status, headers=headers)
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class _Refusal(Exception):
    def __init__(self, status: int, detail: str, headers: dict | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:500]


def _field_of(option: str | None) -> str | None:
    return _FIELD_NAMES.get(option, option) if option else None


def _refusal_of(error: FcnError, private: Path, source_name: str) -> _Refusal:
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
    return _Refusal(status, _one_line(text))


class _Server:
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
            raise _Refusal(422, f"max_pixels: at most {self.settings.max_pixels:,} on this server")
        return requested

    async def answer(self, image: UploadFile | None, path: str | None, max_pixels: int | None, job) -> JSONResponse:
        """Save the input in a private request folder, run ``job(source, folder, max_pixels)`` on the queue
        (``max_pixels``: the request's decoded-pixel limit, never above the server's), answer."""
        folder, source_name = None, "image"
        try:
            limit = self.max_pixels(max_pixels)
            if (image is None) == (path is None or path == ""):
                raise _Refusal(422, "give either an uploaded image (field 'image') or a path below --root "
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
                    raise _Refusal(404, "this server has no --root; upload the image instead")
                source_name = path
                target = self.root.image(path)
                folder = self.private.request_folder()
            cleanup = (lambda kept=folder: self.private.remove(kept))
            folder_for_job, folder = folder, None  # the queue removes it once the job is over
            payload = await self.queue.run(lambda: job(Source(target, source_name), folder_for_job, limit), cleanup)
            return JSONResponse(payload)
        except _Refusal as refusal:
            return JSONResponse({"detail": refusal.detail}, refusal.status, headers=refusal.headers)
        except QueueFull as busy:
            return JSONResponse({"detail": str(busy)}, 429, headers={"Retry-After": str(busy.retry_after)})
        except RequestTimeout as timeout:
            return JSONResponse({"detail": str(timeout)}, 503, headers={"Retry-After": "5"})
        except FcnError as error:
            refusal = _refusal_of(error, self.private.path, source_name)
            return JSONResponse({"detail": refusal.detail}, refusal.status)
        except Exception as error:  # noqa: BLE001 — one line to the client, the traceback to the log, keep serving
            logger.exception("internal error on %s", source_name)
            return JSONResponse({"detail": _one_line(f"internal error ({type(error).__name__}: {error}); this is a "
                                                     "bug — the server log has the traceback")}, 500)
        finally:
            if folder is not None:
                self.private.remove(folder)


def _upload_name(filename: str | None) -> str:
    name = Path((filename or "image").replace("\\", "/")).name
    name = "".join(character for character in name if character.isprintable())[:200]
    return name or "image"


def _server(request: Request) -> _Server:
    return request.app.state.server


ServerDependency = Annotated[_Server, Depends(_server)]


def _below_root(server: _Server, path: str, answer: Callable[[ImageRoot], Any]):
    """``answer(root)``, or the one-line refusal of a server without --root or of a path not below it."""
    if server.root is None:
        return JSONResponse({"detail": "this server has no --root"}, 404)
    try:
        return answer(server.root)
    except RootPathError as error:
        refusal = _refusal_of(error, server.private.path, path)
        return JSONResponse({"detail": refusal.detail}, refusal.status)


ImageField = Annotated[UploadFile | None, File(description="The image (jpg, png, bmp, webp, tif, gif).")]
PathField = Annotated[str | None, Form(description="Instead of an upload: an image path relative to --root.")]
ClassField = Annotated[list[str] | None, Form(alias="class", description="Class name, word or index (repeatable); "
                                               "the CLI's --class rules.")]
MaxSideField = Annotated[int | None, Form(ge=1, description="Downscale so the longer side is at most this.")]
MaxPixelsField = Annotated[int | None, Form(ge=1, description="Refuse images declaring more pixels (at most the "
                                                              "server's limit, which is the default).")]
WorkSizeField = Annotated[str | None, Form(description="Longer side (px) of the image the network sees, or native "
                                                    "(the CLI's --work-size); results refer to the image's own pixels.")]
MethodField = Annotated[str | None, Form(description=f"How the map is made: {', '.join(METHODS)} (the CLI's --method; "
                                                     "default: the server's --method). /api/info lists those this "
                                                     "server can run.")]
TargetLayerField = Annotated[str | None, Form(description="The layer a pytorch-grad-cam method reads (the CLI's "
                                                          "--target-layer).")]
NormalizeField = Annotated[str, Form(description=f"How each class's map becomes colours: {', '.join(NORMALIZE_MODES)} "
                                                 "(the CLI's --normalize). true/false, what the former on/off field "
                                                 "sent, read as peak/none.")]

#: The former on/off field's values (every spelling FastAPI read as a bool) → the mode it meant.
_NORMALIZE_SWITCH = {**dict.fromkeys(("true", "t", "on", "yes", "y", "1"), "peak"),
                     **dict.fromkeys(("false", "f", "off", "no", "n", "0"), "none")}


def _normalize_mode(value: str) -> str:
    """The ``normalize`` field as :class:`~fcn_app.tasks.HeatmapOptions` takes it (it checks the mode: an unknown
    one is a 422 with one line)."""
    return _NORMALIZE_SWITCH.get(value.strip().lower(), value)


#: The API docs pages load nothing from another host. ReDoc's bundle itself asks cdn.redoc.ly for its logo (and
#: hides it when that fails): this keeps the browser from even trying. Inline: Swagger UI's start script and
#: ReDoc's styled-components; blob: ReDoc's search worker.
_DOCS_POLICY = "default-src 'self' 'unsafe-inline' data: blob:"


def _add_api_docs(app: FastAPI) -> None:
    """/docs (Swagger UI) and /redoc with their scripts, styles and icon served by this app: FastAPI's own pages
    load them from CDNs (and ReDoc's fonts from Google), which leaves both blank on a machine offline."""
    icon = f"{VENDOR_URL}/swagger-ui-favicon-32x32.png"

    def self_contained(page: HTMLResponse) -> HTMLResponse:
        page.headers["Content-Security-Policy"] = _DOCS_POLICY
        return page

    # The app reached through the request, not closed over: FastAPI keeps endpoints in caches that outlive the
    # app, and an endpoint holding the app would keep its server (and private folder) alive.
    @app.get("/docs", include_in_schema=False)
    def swagger_ui(request: Request) -> HTMLResponse:
        return self_contained(get_swagger_ui_html(
            openapi_url=request.app.openapi_url, title=f"{request.app.title} API",
            swagger_js_url=f"{VENDOR_URL}/swagger-ui-bundle.js", swagger_css_url=f"{VENDOR_URL}/swagger-ui.css",
            swagger_favicon_url=icon))

    @app.get("/redoc", include_in_schema=False)
    def redoc(request: Request) -> HTMLResponse:
        return self_contained(get_redoc_html(
            openapi_url=request.app.openapi_url, title=f"{request.app.title} API",
            redoc_js_url=f"{VENDOR_URL}/redoc.standalone.js", redoc_favicon_url=icon, with_google_fonts=False))


def create_app(settings: ServeSettings) -> FastAPI:
    """The web app and API for ``settings.network``."""
    server = _Server(settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        server.queue.close()
        server.private.close()

    app = FastAPI(lifespan=lifespan, title="fcn-heatmap", version=__version__, docs_url=None, redoc_url=None,
                  description="Class heatmaps, detections and segmentation of a fully convolutional network. "
                              "Every POST takes a multipart image (or a path below --root) and the CLI's options, "
                              "and answers the command's --json summary plus its pictures as data URLs (/api/heatmap "
                              "with pictures=false: none drawn).")
    app.state.server = server
    app.add_middleware(BodySizeLimit, limit=settings.max_upload_bytes)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _add_api_docs(app)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, error: RequestValidationError):
        problem = error.errors()[0] if error.errors() else {}
        where = [str(part) for part in problem.get("loc", ()) if part not in ("body", "query")]
        line = f"{'.'.join(where) + ': ' if where else ''}{problem.get('msg', 'invalid request')}"
        return JSONResponse({"detail": _one_line(line)}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, error: StarletteHTTPException):
        return JSONResponse({"detail": _one_line(error.detail)}, error.status_code, headers=error.headers)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", summary="Liveness, queue length, and the tiles done of the image being scored")
    def healthz(server: ServerDependency) -> dict:
        progress = server.queue.progress
        return {"status": "ok", "queued": server.queue.pending, "capacity": server.queue.capacity,
                "progress": None if progress is None else {"done": progress[0], "total": progress[1]}}

    @app.get("/api/info", summary="What this server runs: model, mode, limits, colormaps")
    def info(server: ServerDependency) -> dict:
        settings = server.settings
        return {"model": settings.model, "mode": "segmentation" if settings.segmentation else "classifier",
                "classes": len(settings.network.categories), "root": server.root is not None,
                "max_upload_bytes": settings.max_upload_bytes, "max_pixels": settings.max_pixels,
                "default_colormap": DEFAULT_COLORMAP, "colormaps": server.colormaps,
                "normalize_modes": list(NORMALIZE_MODES),
                "methods": server.methods, "default_method": settings.method}

    @app.get("/api/classes", summary="The model's class names, or what a --class value selects")
    def classes(server: ServerDependency, query: Annotated[str | None, Query(
            description="A class name, word or index: answers the classes it selects (summed per pixel).")] = None
    ) -> JSONResponse:
        categories = list(server.settings.network.categories)
        if query is None:
            return JSONResponse({"classes": categories})
        try:
            selection = resolve_classes([query], categories)[0]
        except FcnError as error:
            return JSONResponse({"detail": _one_line(str(error))}, 422)
        return JSONResponse({"name": selection.name, "indices": list(selection.indices),
                             "names": [categories[index] for index in selection.indices]})

    @app.get("/api/files", summary="Sub-folders and images of a folder below --root")
    def files(server: ServerDependency, folder: str = "") -> JSONResponse:
        return _below_root(server, folder, lambda root: JSONResponse(root.listing(folder)))

    @app.get("/api/file", summary="An image below --root, as stored")
    def file(server: ServerDependency, path: str):
        return _below_root(server, path, lambda root: FileResponse(root.image(path)))

    @app.post("/api/heatmap", summary="Class heatmaps: the JSON of `fcn-heatmap IMAGE --json` plus the pictures")
    async def heatmap(
        server: ServerDependency, image: ImageField = None, path: PathField = None, classes: ClassField = None,
        topk: Annotated[int, Form(ge=1)] = 3, colormap: Annotated[str, Form()] = DEFAULT_COLORMAP,
        alpha: Annotated[float, Form(ge=0.0, le=1.0)] = 0.5, grid: Annotated[bool, Form()] = False,
        normalize: NormalizeField = "none", work_size: WorkSizeField = None,
        scales: Annotated[str, Form()] = "1", fuse: Annotated[str, Form()] = "max",
        image_format: Annotated[str, Form(alias="format")] = "png", max_side: MaxSideField = None,
        max_pixels: MaxPixelsField = None, method: MethodField = None, target_layer: TargetLayerField = None,
        pixels: Annotated[bool, Form(description="Also what the page blends and hovers: the per-cell probabilities "
                                                 "and interpolation matrices it reads any pixel's classes from, or "
                                                 "for a saliency method each class's map (side ≤ 256).")] = False,
        pictures: Annotated[bool, Form(description="Draw and send the pictures (overlay, and grid with grid=true) "
                                                   "as data URLs. false: nothing is drawn or encoded and "
                                                   "`pictures` is {} — the JSON summary (and pixels) only, as the "
                                                   "page asks, since it blends its own overlay.")] = True,
    ) -> JSONResponse:
        def job(source: Source, folder: Path, limit: int) -> dict:
            options = HeatmapOptions(classes=classes or None, topk=topk, colormap=colormap, alpha=alpha, grid=grid,
                                     normalize=_normalize_mode(normalize), max_side=max_side, max_pixels=limit,
                                     work_size=work_size, scales=scales, fuse=fuse, image_format=image_format,
                                     method=method or server.settings.method, target_layer=target_layer or None)
            return heatmap_job(server.settings.network, options, server.settings.scoring, source, folder, pixels,
                               server.queue.score, with_pictures=pictures)

        if server.settings.segmentation:
            return JSONResponse({"detail": "this server runs a segmentation checkpoint: POST /api/segment"}, 409)
        return await server.answer(image, path, max_pixels, job)

    @app.post("/api/segment", summary="Segmentation (--checkpoint): the JSON of `fcn-heatmap IMAGE --checkpoint C "
                                      "--json` plus the pictures and the palette's legend")
    async def segment(
        server: ServerDependency, image: ImageField = None, path: PathField = None, classes: ClassField = None,
        topk: Annotated[int, Form(ge=1)] = 3, colormap: Annotated[str, Form()] = DEFAULT_COLORMAP,
        alpha: Annotated[float, Form(ge=0.0, le=1.0)] = 0.5, normalize: NormalizeField = "none",
        work_size: WorkSizeField = None, scales: Annotated[str, Form()] = "1",
        fuse: Annotated[str | None, Form(description="Fuse pyramid levels: mean (of probabilities, the default for "
                                                     "segmentation) or max.")] = None,
        image_format: Annotated[str, Form(alias="format", description="Picture format of the overlay: png, jpg or "
                                                                      "webp (labels stay PNG).")] = "png",
        max_side: MaxSideField = None, max_pixels: MaxPixelsField = None,
    ) -> JSONResponse:
        def job(source: Source, folder: Path, limit: int) -> dict:
            options = HeatmapOptions(classes=classes or None, topk=topk, colormap=colormap, alpha=alpha,
                                     normalize=_normalize_mode(normalize), max_side=max_side, max_pixels=limit,
                                     work_size=work_size, scales=scales, fuse=fuse, image_format=image_format)
            return segment_job(server.settings.network, options, server.settings.scoring, source, folder,
                               server.queue.score)

        if not server.settings.segmentation:
            return JSONResponse({"detail": "this server runs a classifier; start it with --checkpoint to segment"},
                                409)
        return await server.answer(image, path, max_pixels, job)

    @app.post("/api/detect", summary="Detections: the `<name>.detections.json` of `fcn-heatmap detect IMAGE` plus "
                                     "the boxes' picture")
    async def detect(
        server: ServerDependency, image: ImageField = None, path: PathField = None, classes: ClassField = None,
        topk: Annotated[int, Form(ge=1)] = 5, scales: Annotated[str, Form()] = "1",
        fuse: Annotated[str, Form()] = "max", threshold_mode: Annotated[str, Form()] = "relative",
        threshold: Annotated[float, Form(ge=0.0, le=1.0)] = 0.5,
        min_score: Annotated[float, Form(ge=0.0, le=1.0)] = 0.3, box_mode: Annotated[str, Form()] = "auto",
        window_fill: Annotated[float, Form()] = 1.0, center: Annotated[str, Form()] = "peak",
        nms_iou: Annotated[float, Form(ge=0.0, le=1.0)] = 0.3, classwise_nms: Annotated[bool, Form()] = False,
        masks: Annotated[bool, Form()] = False, max_side: MaxSideField = None, max_pixels: MaxPixelsField = None,
        method: MethodField = None, target_layer: TargetLayerField = None, work_size: WorkSizeField = None,
        image_format: Annotated[str, Form(alias="format", description="Picture format of the boxes: png, jpg or "
                                                                      "webp.")] = "png",
    ) -> JSONResponse:
        def job(source: Source, folder: Path, limit: int) -> dict:
            options = DetectOptions(threshold_mode=threshold_mode, threshold=threshold, min_score=min_score,
                                    box_mode=box_mode, window_fill=window_fill, center=center, nms_iou=nms_iou,
                                    classwise_nms=classwise_nms, masks=masks)
            settings = {"scales": parse_scales(scales), "classes": classes or None, "fuse": fuse, "topk": topk,
                        "max_side": max_side, "max_pixels": limit, "method": method or server.settings.method,
                        "target_layer": target_layer or None, "work_size": work_size,
                        "image_format": image_format,
                        "description": {"model": server.settings.model, "stride": server.settings.stride}}
            return detect_job(server.settings.network, options, settings, source, folder, server.queue.score)

        return await server.answer(image, path, max_pixels, job)

    return app
