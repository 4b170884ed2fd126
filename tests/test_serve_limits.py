"""What makes `fcn-heatmap serve` safe to leave running, proven at the edges: request bodies over
``--max-upload-mb`` are one-line 413s whether their size is declared (Content-Length) or only streamed
(``Transfer-Encoding: chunked``), for two limits, one byte either side; the limit is enforced while the body
streams in (the app never reads more than the limit plus one chunk); and ``--root`` confines reads to the root
itself — not its sibling ``root-x``, not through a symlink, not through ``..``."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import httpx
import pytest

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from fcn_app.cli import app as cli_app  # noqa: E402
from fcn_app.cli.app import load_command_network  # noqa: E402
from fcn_app.serve.app import ServeSettings, create_app  # noqa: E402
from helpers_serve import BOUNDARY, MULTIPART, TINY, in_chunks, multipart_body, png_bytes, threaded_server  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

MIB = 2**20
LIMITS = (1 * MIB, 2 * MIB)
UPLOAD_ROUTES = ("/api/heatmap", "/api/detect", "/api/segment")


def too_large_line(limit: int) -> str:
    return (f"the upload is larger than this server's limit of {limit / MIB:g} MiB; send a smaller file "
            "(or restart the server with a larger --max-upload-mb)")


@pytest.fixture(scope="module")
def network():
    return load_command_network(model=TINY, weights=None, checkpoint=None, device="cpu")


@pytest.fixture(scope="module", params=LIMITS, ids=lambda limit: f"{limit // MIB}MiB")
def limited(request, network):
    """(limit, TestClient) of a server whose --max-upload-mb is ``limit``."""
    app = create_app(ServeSettings(network, model=TINY, max_upload_bytes=request.param))
    with TestClient(app) as client:
        yield request.param, client


def _assert_413(answer: httpx.Response, limit: int) -> None:
    assert answer.status_code == 413, answer.text
    assert answer.json() == {"detail": too_large_line(limit)}


@pytest.mark.parametrize("route", UPLOAD_ROUTES)
@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_one_byte_over_the_limit_is_413_with_the_reason(limited, route, declared):
    limit, client = limited
    body = multipart_body(png_bytes(), limit + 1)
    answer = client.post(route, content=body if declared else in_chunks(body), headers=MULTIPART)
    assert ("content-length" in answer.request.headers) == declared
    _assert_413(answer, limit)
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_body_of_exactly_the_limit_is_scored(limited, declared):
    limit, client = limited
    body = multipart_body(png_bytes(), limit)
    answer = client.post("/api/heatmap", content=body if declared else in_chunks(body), headers=MULTIPART)
    assert answer.status_code == 200, answer.text
    assert answer.json()["image"] == "a.png"


def _post_scope(size_header: tuple[bytes, bytes]) -> dict:
    """The ASGI scope of a multipart POST /api/heatmap whose size is given by ``size_header``."""
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
            "path": "/api/heatmap", "raw_path": b"/api/heatmap", "query_string": b"", "root_path": "",
            "headers": [(b"host", b"test"), size_header, (b"content-type", MULTIPART["content-type"].encode())],
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 80), "state": {}}


@pytest.mark.parametrize("limit", LIMITS, ids=lambda limit: f"{limit // MIB}MiB")
def test_a_chunked_body_is_cut_off_once_it_crosses_the_limit(network, limit):
    """Driven at the ASGI level, where each chunk is one receive: a body that never ends (or 100 MiB) is
    refused after the app has pulled no more than the limit plus one chunk — memory stays bounded."""
    app = create_app(ServeSettings(network, model=TINY, max_upload_bytes=limit))
    chunk, pulled, sent = 64 * 1024, 0, []
    head = multipart_body(png_bytes(), 64 * 1024)[:-len(f"\r\n--{BOUNDARY}--\r\n")]  # the padding never ends

    async def receive():
        nonlocal pulled
        body = head if pulled == 0 else b"\0" * chunk
        pulled += len(body)
        return {"type": "http.request", "body": body, "more_body": pulled < 100 * MIB}

    async def send(message):
        sent.append(message)

    try:
        asyncio.run(app(_post_scope((b"transfer-encoding", b"chunked")), receive, send))
    finally:
        app.state.server.queue.close()
        app.state.server.private.close()
    assert limit < pulled <= limit + chunk
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 413 and too_large_line(limit).encode() in sent[1]["body"]


def test_a_declared_size_over_the_limit_is_refused_before_a_byte_is_read(network):
    app = create_app(ServeSettings(network, model=TINY, max_upload_bytes=LIMITS[0]))
    pulled, sent = 0, []

    async def receive():
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": b"\0" * 1024, "more_body": True}

    async def send(message):
        sent.append(message)

    try:
        asyncio.run(app(_post_scope((b"content-length", str(LIMITS[0] + 1).encode())), receive, send))
    finally:
        app.state.server.queue.close()
        app.state.server.private.close()
    assert pulled == 0 and sent[0]["status"] == 413 and too_large_line(LIMITS[0]).encode() in sent[1]["body"]


def test_over_a_real_socket_chunked_and_declared(network):
    """uvicorn on 127.0.0.1 decodes the chunked transfer encoding itself (TestClient hands the app one piece)."""
    limit = LIMITS[0]
    with threaded_server(create_app(ServeSettings(network, model=TINY, max_upload_bytes=limit))) as url:
        with httpx.Client(base_url=url, timeout=30) as client:
            for declared in (True, False):
                over = multipart_body(png_bytes(), limit + 1)
                answer = client.post("/api/heatmap", content=over if declared else in_chunks(over),
                                     headers=MULTIPART)
                assert answer.request.headers.get("transfer-encoding") == (None if declared else "chunked")
                _assert_413(answer, limit)
                at_limit = multipart_body(png_bytes(), limit)
                answer = client.post("/api/heatmap", content=at_limit if declared else in_chunks(at_limit),
                                     headers=MULTIPART)
                assert answer.status_code == 200, answer.text
            assert client.get("/healthz").status_code == 200


def test_after_the_413_the_server_reads_no_more_of_the_body(network):
    """A raw chunked upload that would be 1 GiB: the 413 says ``Connection: close`` and the server closes, so the
    client's sending fails long before the end (loopback socket buffers hold a few MiB, not a GiB). Kept as
    uvicorn does by default, the connection would read and discard the whole GiB."""
    limit, chunk, would_send = LIMITS[0], 256 * 1024, 1024 * MIB
    with threaded_server(create_app(ServeSettings(network, model=TINY, max_upload_bytes=limit))) as url:
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=30) as connection:
            connection.sendall(f"POST /api/heatmap HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n"
                               f"Content-Type: {MULTIPART['content-type']}\r\n\r\n".encode())
            head = multipart_body(png_bytes(), 64 * 1024)[:-len(f"\r\n--{BOUNDARY}--\r\n")]  # padding never ends
            connection.sendall(f"{len(head):x}\r\n".encode() + head + b"\r\n")
            sent, frame = len(head), f"{chunk:x}\r\n".encode() + b"\0" * chunk + b"\r\n"
            with contextlib.suppress(OSError):  # a broken pipe or a reset: the server has closed
                while sent < would_send:
                    connection.sendall(frame)
                    sent += chunk
            answer = b""
            with contextlib.suppress(OSError):
                while block := connection.recv(65536):
                    answer += block
    assert sent < would_send
    assert answer.startswith(b"HTTP/1.1 413 ") and b"connection: close" in answer.lower(), answer[:300]
    assert too_large_line(limit).encode() in answer


def test_max_upload_mb_is_the_limit_the_server_enforces(monkeypatch):
    started = {}
    monkeypatch.setattr("fcn_app.cli.serve.run_server", lambda settings, host, port: started.update(s=settings))
    result = CliRunner().invoke(cli_app, ["serve", "--model", TINY, "--max-upload-mb", "1.5"])
    assert result.exit_code == 0, result.output
    limit = int(1.5 * MIB)
    assert started["s"].max_upload_bytes == limit
    with TestClient(create_app(started["s"])) as client:
        _assert_413(client.post("/api/heatmap", content=in_chunks(multipart_body(png_bytes(), limit + 1)),
                                headers=MULTIPART), limit)
        assert client.post("/api/heatmap", content=multipart_body(png_bytes(), limit),
                           headers=MULTIPART).status_code == 200


# --- --root confinement -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def confined(network, tmp_path_factory):
    """A root named ``root`` beside ``root-x`` (whose name extends it), with symlinks out of the root into the
    sibling and up to the parent, and one symlink that stays inside."""
    base = tmp_path_factory.mktemp("confinement")
    root, sibling = base / "root", base / "root-x"
    (root / "sub").mkdir(parents=True)
    sibling.mkdir()
    (root / "sub" / "photo.png").write_bytes(png_bytes(40, 48, seed=3))
    (sibling / "secret.png").write_bytes(png_bytes(40, 40, seed=4))
    (root / "inside.png").symlink_to("sub/photo.png")
    (root / "sibling.png").symlink_to("../root-x/secret.png")
    (root / "sibling_dir").symlink_to(sibling, target_is_directory=True)
    (root / "parent").symlink_to(base, target_is_directory=True)
    app = create_app(ServeSettings(network, model=TINY, root=root))
    with TestClient(app) as client:
        client.sibling = sibling
        yield client


def _refused(answer: httpx.Response, text: str) -> None:
    assert answer.status_code == 403, answer.text
    assert text in answer.json()["detail"] and "\n" not in answer.json()["detail"]


@pytest.mark.parametrize(("path", "text"), [
    ("sibling.png", "points outside the root"),                 # symlink → root-x/secret.png
    ("sibling_dir/secret.png", "points outside the root"),      # through a symlinked folder into root-x
    ("parent/root-x/secret.png", "points outside the root"),    # up through a symlink, then into the sibling
    ("../root-x/secret.png", "without '..'"),
    ("sub/../../root-x/secret.png", "without '..'"),
    ("..\\root-x\\secret.png", "without '..'"),
    ("sub/..", "without '..'"),
    ("SIBLING_ABSOLUTE", "without '..'"),                        # the sibling's file by absolute path
])
def test_nothing_outside_the_root_is_served(confined, path, text):
    path = str(confined.sibling / "secret.png") if path == "SIBLING_ABSOLUTE" else path
    _refused(confined.get("/api/file", params={"path": path}), text)
    _refused(confined.post("/api/heatmap", data={"path": path}), text)


def test_listings_stay_inside_the_root(confined):
    assert confined.get("/api/files").json() == {"folder": "", "folders": ["sub"], "images": ["inside.png"]}
    for folder, text in (("sibling_dir", "points outside the root"), ("parent", "points outside the root"),
                         ("..", "without '..'"), ("sub/../..", "without '..'")):
        _refused(confined.get("/api/files", params={"folder": folder}), text)


def test_a_symlink_that_stays_inside_the_root_is_served(confined):
    assert confined.get("/api/file", params={"path": "inside.png"}).content == png_bytes(40, 48, seed=3)
    answer = confined.post("/api/heatmap", data={"path": "inside.png"})
    assert answer.status_code == 200 and answer.json()["image"] == "inside.png"
