"""The one-line answers to requests FastAPI refuses before a route runs (a bad field, an unknown path)."""

from __future__ import annotations

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .dependencies import one_line

__all__ = ["EXCEPTION_HANDLERS"]


async def _invalid(request: Request, error: RequestValidationError) -> JSONResponse:
    problem = error.errors()[0] if error.errors() else {}
    where = [str(part) for part in problem.get("loc", ()) if part not in ("body", "query")]
    line = f"{'.'.join(where) + ': ' if where else ''}{problem.get('msg', 'invalid request')}"
    return JSONResponse({"detail": one_line(line)}, 422)


async def _http(request: Request, error: StarletteHTTPException) -> JSONResponse:
    return JSONResponse({"detail": one_line(error.detail)}, error.status_code, headers=error.headers)


#: For ``FastAPI(exception_handlers=...)``: they replace FastAPI's own, whose ``detail`` is a list or free text.
EXCEPTION_HANDLERS = {RequestValidationError: _invalid, StarletteHTTPException: _http}
