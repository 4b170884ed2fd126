"""A real `fcn-heatmap serve` for the tests: the app on a uvicorn server in a thread (port chosen by the OS), or
the command itself in a subprocess; and small images to send it."""

from __future__ import annotations

import contextlib
import io
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
from PIL import Image

from helpers import random_rgb
from helpers_cli import cli_environment

TINY = "helpers_batch:tiny_fcn"


def png_bytes(height: int = 80, width: int = 96, seed: int = 1) -> bytes:
    """A small RGB PNG with some structure (a bright square on noise), so heatmaps are not flat."""
    pixels = random_rgb(height, width, seed=seed) // 2
    pixels[height // 4: height // 2, width // 3: width // 2] = np.array([250, 40, 40], np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


BOUNDARY = "fcn-test-boundary"
MULTIPART = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}


def multipart_body(image: bytes, total_bytes: int, name: str = "a.png") -> bytes:
    """A multipart body of exactly ``total_bytes`` bytes: the field ``image`` (``image``'s bytes) and a field
    ``padding`` of zeros that the routes ignore, so a body at a byte-exact size still carries a readable image.
    Send it with :data:`MULTIPART` as the content type."""
    def part(field: str, filename: str, content: bytes) -> bytes:
        return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
                "Content-Type: application/octet-stream\r\n\r\n").encode() + content + b"\r\n"

    head = part("image", name, image)
    tail = f"--{BOUNDARY}--\r\n".encode()
    padding = total_bytes - len(head) - len(part("padding", "padding.bin", b"")) - len(tail)
    if padding < 0:
        raise ValueError(f"a body of {total_bytes} bytes cannot hold this image")
    body = head + part("padding", "padding.bin", b"\0" * padding) + tail
    assert len(body) == total_bytes
    return body


def in_chunks(body: bytes, size: int = 64 * 1024):
    """``body`` as a generator: httpx sends it ``Transfer-Encoding: chunked``, with no Content-Length."""
    for start in range(0, len(body), size):
        yield body[start: start + size]


@contextlib.contextmanager
def threaded_server(app):
    """``app`` served by uvicorn on 127.0.0.1 in a daemon thread; yields the base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def serve_subprocess(*args: str, env: dict | None = None):
    """``fcn-heatmap serve ARGS --port P`` in a subprocess; yields ``(base_url, process)`` once /healthz answers."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "fcn_app", "serve", "--port", str(port), *args],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_environment(env))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"serve exited with {process.returncode}: {process.stderr.read()}")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("serve did not answer within 60 s")
            time.sleep(0.1)
        yield url, process
    finally:
        process.terminate()
        try:
            process.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.communicate()
