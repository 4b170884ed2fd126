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
