"""The request-body limit (``--max-upload-mb``): ASGI middleware that answers 413 with one line."""

from __future__ import annotations

from fastapi.responses import JSONResponse

__all__ = ["BodySizeLimit"]


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
