"""`fcn-heatmap serve`'s HTTP API: the CLI's numbers, the one-line refusals, and the limits that make it safe to
leave running. The model is the tiny 32×32-window network of ``helpers_batch`` (milliseconds per image)."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")
from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from fcn_app.cli import app as cli_app  # noqa: E402
from fcn_app.choices import NORMALIZE_MODES  # noqa: E402
from fcn_app.cli.app import load_command_network  # noqa: E402
from fcn_app.serve.app import ServeSettings, create_app  # noqa: E402
from fcn_app.text import format_probability  # noqa: E402
from helpers_serve import TINY, png_bytes, threaded_server  # noqa: E402
from hostile_corpus import bomb_png, build_corpus  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def network():
    return load_command_network(model=TINY, weights=None, checkpoint=None, device="cpu")


@pytest.fixture(scope="module")
def client(network, tmp_path_factory):
    root = tmp_path_factory.mktemp("root")
    (root / "sub").mkdir()
    (root / "sub" / "photo.png").write_bytes(png_bytes(40, 48, seed=3))
    (root / "notes.txt").write_text("not an image")
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.png").write_bytes(png_bytes(40, 40, seed=4))
    (root / "escape.png").symlink_to(outside / "secret.png")
    (root / "escape_dir").symlink_to(outside, target_is_directory=True)
    app = create_app(ServeSettings(network, model=TINY, root=root, max_upload_bytes=4_000_000))
    with TestClient(app) as test_client:
        test_client.private = app.state.server.private.path
        yield test_client


def _cli_json(*args) -> dict:
    result = CliRunner().invoke(cli_app, [*map(str, args)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _pixels(data_url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def test_heatmap_answers_the_cli_json_and_picture(client, tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes())
    options = {"class": "cat", "alpha": "0.3", "colormap": "viridis", "max_side": "64"}
    expected = _cli_json("heatmap", image, "--model", TINY, "--json", "--out", tmp_path / "cli", "--class", "cat",
                         "--class", "3", "--alpha", "0.3", "--colormap", "viridis", "--max-side", "64")
    answer = client.post("/api/heatmap", files={"image": ("photo.png", image.read_bytes(), "image/png")},
                         data={**options, "class": ["cat", "3"]})
    assert answer.status_code == 200, answer.text
    payload = answer.json()
    pictures, outputs = payload.pop("pictures"), expected.pop("outputs")
    assert payload.pop("image") == "photo.png" and expected.pop("image") == str(image)
    assert payload.pop("labels") == {"classes": [format_probability(heat["peak_probability"])
                                                 for heat in expected["classes"]]}  # the page's text
    assert payload == expected
    np.testing.assert_array_equal(_pixels(pictures["overlay"]), np.asarray(Image.open(outputs["overlay"])))
    assert os.listdir(client.private) == []  # the request's folder went with it
    # pictures=false (what the page asks): nothing drawn, the same summary
    bare = client.post("/api/heatmap", files={"image": ("photo.png", image.read_bytes(), "image/png")},
                       data={**options, "class": ["cat", "3"], "pictures": "false"}).json()
    assert bare.pop("pictures") == {} and bare.pop("image") == "photo.png" and "labels" in bare
    bare.pop("labels")
    assert bare == expected


@pytest.mark.parametrize("flags, form", [
    ([], {}), (["--work-size", "40", "--format", "jpg"], {"work_size": "40", "format": "jpg"}),
], ids=["native", "work-size-jpg"])
def test_detect_answers_the_cli_detections(client, tmp_path, flags, form):
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(seed=2))
    result = CliRunner().invoke(cli_app, ["detect", str(image), "--model", TINY, "--out", str(tmp_path / "cli"),
                                          "--min-score", "0", "--topk", "2", *flags], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    expected = json.loads((tmp_path / "cli" / "photo.detections.json").read_text())
    answer = client.post("/api/detect", files={"image": ("photo.png", image.read_bytes())},
                         data={"min_score": "0", "topk": "2", **form})
    assert answer.status_code == 200, answer.text
    payload = answer.json()
    picture = _pixels(payload.pop("pictures")["detections"])
    assert payload.pop("image") == "photo.png" and expected.pop("image") == str(image)
    assert payload.pop("labels") == {"detections": [format_probability(detection["score"])
                                                    for detection in expected["detections"]]}  # the page's text
    assert payload == expected and len(payload["detections"]) > 0
    if form:  # the network saw the working size; the boxes are in the photo's pixels (as the CLI's)
        assert max(payload["work_size"]["width"], payload["work_size"]["height"]) == 40
    extension = form.get("format", "png")
    np.testing.assert_array_equal(picture, np.asarray(Image.open(tmp_path / "cli" / f"photo.detections.{extension}")))


def test_the_pages_data_rebuild_the_clis_heatmap(client):
    """The per-cell probabilities and interpolation matrices the page reads reproduce each class's peak."""
    answer = client.post("/api/heatmap", files={"image": ("a.png", png_bytes())}, data={"pixels": "true", "topk": "5"})
    payload = answer.json()
    grid = payload["pixels"]

    def array(key, shape):
        return np.frombuffer(base64.b64decode(grid[key]), "<f4").reshape(shape)

    cells = array("cells", (grid["classes"], grid["rows"], grid["cols"])).astype(np.float64)
    along_y = array("along_y", (grid["height"], grid["rows"])).astype(np.float64)
    along_x = array("along_x", (grid["width"], grid["cols"])).astype(np.float64)
    for heat in payload["classes"]:
        per_pixel = along_y @ cells[heat["indices"]].sum(0) @ along_x.T  # float64: a second path to float32 torch
        y, x = divmod(int(per_pixel.argmax()), per_pixel.shape[1])
        assert per_pixel[y, x] == pytest.approx(heat["peak_probability"], abs=1e-5)
        assert per_pixel[heat["peak_pixel"]["y"], heat["peak_pixel"]["x"]] == pytest.approx(per_pixel[y, x], abs=1e-6)
    assert len(grid["windows"]) == grid["rows"] * grid["cols"]


def test_normalize_takes_none_peak_minmax_and_the_former_switch(client, tmp_path):
    """The form's normalize is the CLI's --normalize; true/false (the former on/off field) still read as peak/none."""
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes())

    def overlay(normalize: str) -> np.ndarray:
        answer = client.post("/api/heatmap", files={"image": ("photo.png", image.read_bytes())},
                             data={"normalize": normalize})
        assert answer.status_code == 200, answer.text
        return _pixels(answer.json()["pictures"]["overlay"])

    assert client.get("/api/info").json()["normalize_modes"] == list(NORMALIZE_MODES)  # the page's menu
    drawn = {mode: overlay(mode) for mode in NORMALIZE_MODES}
    cli = _cli_json("heatmap", image, "--model", TINY, "--json", "--out", tmp_path / "cli", "--normalize", "minmax")
    np.testing.assert_array_equal(drawn["minmax"], np.asarray(Image.open(cli["outputs"]["overlay"])))
    assert not any(np.array_equal(drawn[a], drawn[b]) for a, b in [("none", "peak"), ("none", "minmax"),
                                                                    ("peak", "minmax")])
    for sent, mode in [("true", "peak"), ("false", "none"), (" MinMax ", "minmax")]:
        np.testing.assert_array_equal(overlay(sent), drawn[mode])


def test_classes_search_follows_the_cli_rules(client):
    assert client.get("/api/classes").json()["classes"][:2] == ["tabby cat", "tiger cat"]
    assert client.get("/api/classes", params={"query": "cat"}).json()["indices"] == [0, 1]
    refused = client.get("/api/classes", params={"query": "giraffe"})
    assert refused.status_code == 422 and "no class named 'giraffe'" in refused.json()["detail"]
    assert client.get("/healthz").json()["status"] == "ok"
    assert "/api/heatmap" in client.get("/openapi.json").json()["paths"]


def _assert_one_line(answer, status: int, text: str) -> None:
    detail = answer.json()["detail"]
    assert answer.status_code == status, answer.text
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail and text in detail, detail


@pytest.mark.parametrize(("data", "status", "text"), [
    ({"topk": "0"}, 422, "topk:"),
    ({"colormap": "rainbow"}, 422, "colormap: unknown colormap 'rainbow'"),
    ({"class": "giraffe"}, 422, "no class named 'giraffe'"),
    ({"alpha": "2"}, 422, "alpha:"),
    ({"fuse": "median"}, 422, "fuse: unknown fuse mode"),
    ({"normalize": "auto"}, 422, "normalize: unknown value 'auto'; choose none, peak or minmax"),
    ({"max_pixels": "10"}, 413, "a.png: declares more than 10 pixels"),
    ({"max_pixels": str(10**12)}, 422, "max_pixels: at most"),
])
def test_bad_options_are_one_line_4xx(client, data, status, text):
    _assert_one_line(client.post("/api/heatmap", files={"image": ("a.png", png_bytes())}, data=data), status, text)


@pytest.mark.slow
def test_the_hostile_corpus_is_one_line_4xx_and_the_server_stays_up(client, tmp_path):
    for case in build_corpus(tmp_path / "corpus"):
        answer = client.post("/api/heatmap", files={"image": (case.name, (tmp_path / "corpus" / case.name).read_bytes())},
                             data={"max_side": "64"})
        if case.ok:
            assert answer.status_code == 200, (case.name, answer.text)
        else:
            detail = answer.json()["detail"]
            assert 400 <= answer.status_code < 500 and "\n" not in detail and str(client.private) not in detail, \
                (case.name, answer.status_code, detail)
    assert client.get("/healthz").status_code == 200
    assert os.listdir(client.private) == []


def test_hostile_requests_are_one_line_4xx(client):
    _assert_one_line(client.post("/api/heatmap", files={"image": ("bomb.png", bomb_png())}), 413,
                     "bomb.png: declares more than 300,000,000 pixels")
    _assert_one_line(client.post("/api/heatmap", files={"image": ("big.png", b"\0" * 4_100_000)}), 413,
                     "larger than this server's limit")
    _assert_one_line(client.post("/api/heatmap"), 422, "give either an uploaded image")
    _assert_one_line(client.post("/api/heatmap", content=b"--x\r\nbroken", headers={
        "content-type": "multipart/form-data; boundary=x"}), 422, "give either an uploaded image")
    assert client.get("/healthz").status_code == 200
    assert os.listdir(client.private) == []


@pytest.mark.parametrize(("path", "status", "text"), [
    ("../outside/secret.png", 403, "without '..'"),
    ("/etc/passwd", 403, "without '..'"),
    ("escape.png", 403, "points outside the root"),
    ("escape_dir/secret.png", 403, "points outside the root"),
    ("notes.txt", 415, "not an image file"),
    ("missing.png", 404, "no such file"),
])
def test_root_is_confined(client, path, status, text):
    _assert_one_line(client.post("/api/heatmap", data={"path": path}), status, text)
    _assert_one_line(client.get("/api/file", params={"path": path}), status, text)


def test_root_lists_only_its_images_and_serves_them(client):
    assert client.get("/api/files").json() == {"folder": "", "folders": ["sub"], "images": []}
    assert client.get("/api/files", params={"folder": "sub"}).json()["images"] == ["photo.png"]
    _assert_one_line(client.get("/api/files", params={"folder": "escape_dir"}), 403, "points outside the root")
    answer = client.post("/api/heatmap", data={"path": "sub/photo.png"})
    assert answer.status_code == 200 and answer.json()["image"] == "sub/photo.png"
    assert client.get("/api/file", params={"path": "sub/photo.png"}).content == png_bytes(40, 48, seed=3)


@pytest.mark.parametrize("docs", ["/docs", "/redoc"])
def test_api_docs_load_every_asset_from_this_server(client, docs):
    """/docs and /redoc name no other host (FastAPI's defaults load Swagger UI, ReDoc, a favicon and Google Fonts
    from CDNs: a blank page offline), and every file they name is served here. The browser proof, with every
    outside request blocked: test_serve_browser.py::test_api_docs_render_offline."""
    answer = client.get(docs)
    html = answer.text
    assert not re.findall(r"(?:https?:)?//[\w.-]+", html), html
    assert answer.headers["content-security-policy"].startswith("default-src 'self'")  # nor does what they load
    assets = re.findall(r"(?:src|href)=\"(/[^\"]+)\"", html)
    assert len(assets) >= 2 and all(client.get(asset).status_code == 200 for asset in assets), assets
    assert client.get(client.app.openapi_url).json()["paths"]["/api/heatmap"]


@pytest.mark.slow
def test_full_queue_is_429_with_retry_after_progress_and_timeout(network):
    from helpers_batch import tiny_fcn
    from fcn_app.scoring import ScoringOptions, prepare_network

    gated = prepare_network(tiny_fcn())
    entered, release, calls = threading.Event(), threading.Event(), []

    def hold(module, args):  # the second tile's pass waits until released, so the test can fill the queue
        calls.append(1)
        if len(calls) == 2:
            entered.set()
            release.wait(30)

    gated.features.register_forward_pre_hook(hold)
    app = create_app(ServeSettings(gated, model=TINY, queue_size=1, timeout_s=0.5,
                                   scoring=ScoringOptions(max_memory="800K")))  # a 120×128 image → many tiles
    with threaded_server(app) as url:
        first = {}
        sender = threading.Thread(target=lambda: first.update(answer=httpx.post(
            url + "/api/heatmap", files={"image": ("a.png", png_bytes(120, 128))}, timeout=30)))
        sender.start()
        assert entered.wait(10), first
        health = httpx.get(url + "/healthz").json()
        assert health["queued"] == 1 and health["progress"]["done"] == 1 and health["progress"]["total"] > 1
        busy = httpx.post(url + "/api/heatmap", files={"image": ("b.png", png_bytes())}, timeout=30)
        _assert_one_line(busy, 429, "the server is busy")
        assert int(busy.headers["Retry-After"]) >= 1
        sender.join(10)
        _assert_one_line(first["answer"], 503, "took longer than the server's limit of 0.5 s")
        release.set()
        deadline = time.monotonic() + 10
        while httpx.get(url + "/healthz").json()["queued"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert httpx.post(url + "/api/heatmap", files={"image": ("c.png", png_bytes())}, timeout=30).status_code == 200


def test_serve_without_the_extra_is_one_line_exit_2(monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi → ImportError
    result = CliRunner().invoke(cli_app, ["serve", "--model", TINY])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'fcn-heatmap[serve]'" in lines[0], result.stderr


def test_serve_warns_when_other_machines_can_reach_it(monkeypatch):
    started = {}
    monkeypatch.setattr("fcn_app.cli.serve.run_server", lambda settings, host, port: started.update(host=host))
    result = CliRunner().invoke(cli_app, ["serve", "--model", TINY, "--host", "0.0.0.0"])
    assert result.exit_code == 0 and started == {"host": "0.0.0.0"}, result.output
    assert "warning: listening on 0.0.0.0" in result.stderr
    quiet = CliRunner().invoke(cli_app, ["serve", "--model", TINY])
    assert quiet.exit_code == 0 and "warning" not in quiet.stderr


@pytest.mark.slow
@pytest.mark.parametrize("flags, form", [
    ([], {}),
    (["--work-size", "40", "--scales", "0.5,1", "--format", "jpg"], {"work_size": "40", "scales": "0.5,1", "format": "jpg"}),
], ids=["native", "work-size-pyramid-jpg"])
def test_segment_answers_the_cli_json_and_legend(tmp_path, flags, form):
    from helpers_batch import tiny_segmentation_checkpoint

    checkpoint = tiny_segmentation_checkpoint(tmp_path / "tiny.pt")
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(48, 64, seed=6))
    expected = _cli_json("heatmap", image, "--checkpoint", checkpoint, "--json", "--out", tmp_path / "cli",
                         "--topk", "2", *flags)
    network = load_command_network(model=TINY, weights=None, checkpoint=checkpoint, device="cpu")
    app = create_app(ServeSettings(network, segmentation=True, model=str(checkpoint)))
    with TestClient(app) as client:
        answer = client.post("/api/segment", files={"image": ("photo.png", image.read_bytes())},
                             data={"topk": "2", **form})
        _assert_one_line(client.post("/api/heatmap", files={"image": ("photo.png", image.read_bytes())}), 409,
                         "POST /api/segment")
        assert client.get("/api/info").json()["mode"] == "segmentation"
    assert answer.status_code == 200, answer.text
    payload = answer.json()
    pictures, legend, outputs = payload.pop("pictures"), payload.pop("legend"), expected.pop("outputs")
    assert payload.pop("image") == "photo.png" and expected.pop("image") == str(image)
    assert payload == expected
    if form:
        assert max(payload["work_size"]["width"], payload["work_size"]["height"]) == 40
        assert outputs["segmentation"].endswith(".jpg") and outputs["labels"].endswith(".png")
    labels = np.asarray(Image.open(outputs["labels"]))
    np.testing.assert_array_equal(_pixels(pictures["segmentation"]), np.asarray(Image.open(outputs["segmentation"])))
    assert {entry["index"]: entry["pixel_fraction"] for entry in legend} == pytest.approx(
        {int(label): float(np.mean(labels == label)) for label in np.unique(labels)}, abs=1e-6)


POOLED = "helpers_methods:tiny_pooled_fcn"  # a pooled head: every method, cam included


@pytest.fixture(scope="module")
def pooled_client():
    network = load_command_network(model=POOLED, weights=None, checkpoint=None, device="cpu")
    with TestClient(create_app(ServeSettings(network, model=POOLED))) as test_client:
        yield test_client


@pytest.mark.slow  # pytorch-grad-cam through the API (~1.3 s); cam and fcn stay quick
def test_a_saliency_method_answers_the_cli_json_picture_and_maps(pooled_client, tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes())
    expected = _cli_json("heatmap", image, "--model", POOLED, "--json", "--out", tmp_path / "cli", "--method",
                         "gradcam", "--topk", "2", "--target-layer", "features")
    answer = pooled_client.post("/api/heatmap", files={"image": ("photo.png", image.read_bytes())},
                                data={"method": "GradCAM", "topk": "2", "target_layer": "features", "pixels": "true"})
    assert answer.status_code == 200, answer.text
    payload = answer.json()
    pictures, grid, outputs = payload.pop("pictures"), payload.pop("pixels"), expected.pop("outputs")
    assert payload.pop("image") == "photo.png" and expected.pop("image") == str(image)
    assert payload.pop("seconds") >= 0 and expected.pop("seconds") >= 0  # the time each run took
    assert payload.pop("labels") == {"classes": [format_probability(heat["window_probability"])
                                                 for heat in expected["classes"]]}
    assert payload == expected and payload["method"] == "gradcam"
    np.testing.assert_array_equal(_pixels(pictures["overlay"]), np.asarray(Image.open(outputs["overlay"])))
    # a picture under 256 px: the page gets each class's map at the picture's own size
    assert grid["kind"] == "saliency" and (grid["rows"], grid["cols"]) == (grid["height"], grid["width"]) == (80, 96)
    maps = np.frombuffer(base64.b64decode(grid["cells"]), "<f4").reshape(grid["classes"], 80, 96)
    for rank, heat in enumerate(payload["classes"]):
        assert maps[rank].max() == pytest.approx(heat["peak_probability"], abs=1e-6)
        assert maps[rank][heat["peak_pixel"]["y"], heat["peak_pixel"]["x"]] == pytest.approx(maps[rank].max(), abs=1e-6)


def test_the_saliency_maps_sent_small_are_put_back_on_the_picture_bilinearly():
    """A smooth 600×450 map sent at 256×192 and put back as the page does (documented in saliency_pixels, here with
    geometry.interpolation_matrix in float64) is within 0.01 of the map."""
    from fcn_app.geometry import interpolation_matrix
    from fcn_app.heatmaps import ClassHeatmap, ClassSelection
    from fcn_app.serve.service import saliency_pixels

    y, x = np.mgrid[0:450, 0:600].astype(np.float32)
    heat = np.exp(-((x - 380) ** 2 + (y - 150) ** 2) / (2 * 70.0 ** 2)).astype(np.float32)
    grid = saliency_pixels([ClassHeatmap(ClassSelection("a", (0,)), heat, 1.0, (380, 150))])  # the map is what counts
    rows, cols = grid["rows"], grid["cols"]
    assert (rows, cols, grid["height"], grid["width"]) == (192, 256, 450, 600)
    small = np.frombuffer(base64.b64decode(grid["cells"]), "<f4").reshape(rows, cols).astype(np.float64)
    along_y = interpolation_matrix(450, rows, (450 / rows - 1) / 2, 450 / rows).double().numpy()
    along_x = interpolation_matrix(600, cols, (600 / cols - 1) / 2, 600 / cols).double().numpy()
    assert np.abs(along_y @ small @ along_x.T - heat).max() < 0.01


def test_cam_detect_and_the_methods_on_offer(pooled_client, network, monkeypatch, tmp_path):
    info = pooled_client.get("/api/info").json()
    assert info["methods"][:3] == ["fcn", "cam", "gradcam"] and info["default_method"] == "fcn"
    cam = pooled_client.post("/api/heatmap", files={"image": ("a.png", png_bytes())},
                             data={"method": "cam", "pixels": "true"}).json()
    fcn = pooled_client.post("/api/heatmap", files={"image": ("a.png", png_bytes())}).json()
    # CAM is scaled per class like a saliency map: the page gets each class's map, not the cells' probabilities
    assert cam["method"] == "cam" and cam["pixels"]["kind"] == "saliency" and "window_probability" in cam["classes"][0]
    # its labels give what the classifier says in the window, as the CLI's legend and table (the map peaks at 1)
    assert cam["labels"]["classes"] == [format_probability(heat["window_probability"]) for heat in cam["classes"]]
    assert cam["map_size"]["rows"] > fcn["map_size"]["rows"]  # one feature cell per window: a finer map
    boxes = pooled_client.post("/api/detect", files={"image": ("a.png", png_bytes())},
                               data={"method": "gradcam", "min_score": "0"})
    assert boxes.status_code == 200 and boxes.json()["method"] == "gradcam", boxes.text
    image = tmp_path / "a.png"
    image.write_bytes(png_bytes())
    result = CliRunner().invoke(cli_app, ["detect", str(image), "--model", POOLED, "--out", str(tmp_path / "cli"),
                                          "--min-score", "0", "--method", "gradcam"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    expected = json.loads((tmp_path / "cli" / "a.detections.json").read_text())
    payload = boxes.json()
    payload.pop("pictures"), payload.pop("image"), payload.pop("labels"), expected.pop("image")
    assert payload == expected and len(payload["detections"]) > 0  # detect --method gradcam's JSON
    assert "cam" not in create_app(ServeSettings(network)).state.server.methods  # no pooled head
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)  # import → ImportError
    assert create_app(ServeSettings(network)).state.server.methods == ["fcn"]
    _assert_one_line(pooled_client.post("/api/heatmap", files={"image": ("a.png", png_bytes())},
                                        data={"method": "scorecam"}),
                     400, "the scorecam method needs pytorch-grad-cam, an optional extra: "
                          "pip install 'fcn-heatmap[cam]'")


@pytest.mark.parametrize(("data", "status", "text"), [
    ({"method": "gradcan"}, 422, "method: unknown method 'gradcan'; choose one of fcn, cam, gradcam"),
    ({"method": "cam"}, 422, "method: cam: "),
    ({"target_layer": "features"}, 422, "target_layer: applies to pytorch-grad-cam methods"),
    ({"method": "gradcam", "target_layer": "nope"}, 422, "target_layer: the network has no layer 'nope'"),
])
def test_bad_methods_are_one_line_4xx(client, data, status, text):
    _assert_one_line(client.post("/api/heatmap", files={"image": ("a.png", png_bytes())}, data=data), status, text)


def test_serve_method_sets_the_default_and_is_checked_at_start(monkeypatch):
    started = {}
    monkeypatch.setattr("fcn_app.cli.serve.run_server", lambda settings, host, port: started.update(m=settings.method))
    result = CliRunner().invoke(cli_app, ["serve", "--model", POOLED, "--method", "cam"])
    assert result.exit_code == 0 and started == {"m": "cam"}, result.output
    refused = CliRunner().invoke(cli_app, ["serve", "--model", TINY, "--method", "cam"])
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "--method: cam:" in refused.stderr, refused.stderr


def test_one_job_scores_while_another_decodes_and_never_two_at_once():
    """ModelQueue with two job threads: job B's steps outside the network run while job A's pass runs on the model
    thread, no two passes ever run together, and (Linux) the job threads run at a lower priority than the model's."""
    import asyncio

    from fcn_app.serve.service import JOB_NICENESS, ModelQueue

    queue = ModelQueue(capacity=4, timeout_s=10, job_threads=2)
    inside, most, lock, nice = [0], [0], threading.Lock(), {}
    a_scoring, b_decoded = threading.Event(), threading.Event()

    def niceness():
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) if sys.platform == "linux" else 0

    def network_pass(name):
        nice["model"] = niceness()
        with lock:
            inside[0] += 1
            most[0] = max(most[0], inside[0])
        if name == "a":
            a_scoring.set()
            assert b_decoded.wait(5)  # A's pass goes on until B's "decode" has happened
        time.sleep(0.01)
        with lock:
            inside[0] -= 1
        return name

    def job(name):
        nice["job"] = niceness()
        if name == "b":
            assert a_scoring.wait(5)
            b_decoded.set()  # B's "decode" runs while A's pass runs
        return queue.score(lambda progress: network_pass(name))

    async def both():
        return await asyncio.gather(*(queue.run(lambda name=name: job(name)) for name in ("a", "b", "a", "b")))

    try:
        # on a thread of its own: Playwright's sync API (the browser tests) keeps an event loop in the main thread
        answers = []
        runner = threading.Thread(target=lambda: answers.append(asyncio.run(both())))
        runner.start()
        runner.join(30)
        assert answers == [["a", "b", "a", "b"]]
    finally:
        queue.close()
    assert most[0] == 1 and queue.pending == 0
    if sys.platform == "linux" and nice["model"] + JOB_NICENESS <= 19:
        assert nice["job"] == nice["model"] + JOB_NICENESS


def test_the_private_folder_goes_with_the_server_even_when_it_never_served(network):
    import gc
    import subprocess
    from pathlib import Path

    app = create_app(ServeSettings(network, model=TINY))
    private = app.state.server.private.path
    assert private.is_dir() and oct(private.stat().st_mode & 0o777) == "0o700"
    del app
    gc.collect()
    assert not private.exists()  # collected: removed without a shutdown
    # a process that ends with a folder still open (a server stopped before its shutdown ran) removes it too
    code = ("from fcn_app.serve.files import PrivateFolder; folder = PrivateFolder(); print(folder.path)")
    from helpers_cli import cli_environment

    made = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          env=cli_environment()).stdout.strip()
    assert made and not Path(made).exists()


def test_apps_share_the_routers_but_each_answers_with_its_own_server(network):
    """The routes are module-level routers included in every app: each app must still reach its own state."""
    classifier = create_app(ServeSettings(network, model="first", max_pixels=1000))
    segmenter = create_app(ServeSettings(network, model="second", segmentation=True))
    with TestClient(classifier) as first, TestClient(segmenter) as second:
        assert (first.get("/api/info").json()["model"], second.get("/api/info").json()["model"]) == ("first", "second")
        assert first.get("/api/info").json()["max_pixels"] == 1000
        assert second.post("/api/heatmap").status_code == 409 and first.post("/api/segment").status_code == 409
