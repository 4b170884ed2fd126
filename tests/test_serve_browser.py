"""The web page of `fcn-heatmap serve` in a real headless Chromium (Debian's, driven by Playwright): an upload
shows the overlay, the pointer reads the pixel's classes (checked against the CLI's per-pixel map computed in
torch), and the sliders repaint without asking the server; the page's states (a result after progress, an error
after a result, another method under a still pointer); the API docs with every outside request refused. All are
slow: Chromium's start alone takes seconds. docs/images/serve*.png: scripts/make_serve_screenshot.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("fastapi", reason="the 'serve' extra is not installed")
from fcn_app.choices import NORMALIZE_MODES  # noqa: E402
from fcn_app.cli.app import load_command_network  # noqa: E402
from fcn_app.geometry import interpolation_matrix, upsample_to_pixels  # noqa: E402
from fcn_app.io import decode_input  # noqa: E402
from fcn_app.resolution import score_map_on_original  # noqa: E402
from fcn_app.render import normalize_heat  # noqa: E402
from fcn_app.serve.app import ServeSettings, create_app  # noqa: E402
from fcn_app.serve.service import colormap_tables  # noqa: E402
from fcn_app.tasks import HeatmapOptions, HeatmapTask  # noqa: E402
from fcn_app.text import format_probability  # noqa: E402
from helpers_browser import block_outside_requests  # noqa: E402
from helpers_serve import TINY, png_bytes, threaded_server  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

CANVAS_SUM = "(() => { const c = document.getElementById('canvas'); const d = c.getContext('2d')" \
             ".getImageData(0, 0, c.width, c.height).data; let s = 0; for (let i = 0; i < d.length; i++) " \
             "s = (s * 31 + d[i]) % 1000000007; return s; })()"


@pytest.fixture(scope="module")
def network():
    return load_command_network(model=TINY, weights=None, checkpoint=None, device="cpu")


@pytest.fixture(scope="module")
def app(network):
    return create_app(ServeSettings(network, model=TINY))


@pytest.fixture(scope="module")
def server_url(app):
    with threaded_server(app) as url:
        yield url


def cli_probabilities_at(network, image_path, x: int, y: int) -> torch.Tensor:
    """Every class's probability at pixel (x, y) as the CLI computes its heatmaps: score, place on the picture,
    softmax per cell, then geometry.upsample_to_pixels (torch, all pixels)."""
    task = HeatmapTask(network, HeatmapOptions())
    decoded = decode_input(image_path, task.decode_request)
    score_map = score_map_on_original(task.predict([decoded.network_pixels])[0], decoded.picture_size)
    return upsample_to_pixels(score_map.probabilities(), score_map.geometry, score_map.image_size)[:, y, x]


@pytest.mark.slow
def test_upload_hover_and_sliders(browser, server_url, network, tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(180, 240, seed=5))
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.goto(server_url)
    page.wait_for_selector("body[data-ready='1']")

    page.set_input_files("#file", str(image))  # upload → overlay
    page.wait_for_selector("#canvas[data-state='ready']", timeout=20_000)
    assert page.evaluate("[document.getElementById('canvas').width, document.getElementById('canvas').height]") \
        == [240, 180]
    assert page.evaluate("state.heat !== null") and page.locator("#classes li").count() == 5
    assert page.evaluate(CANVAS_SUM) != page.evaluate(
        "(() => { const d = state.base.data; let s = 0; for (let i = 0; i < d.length; i++) "
        "s = (s * 31 + d[i]) % 1000000007; return s; })()")  # heat is blended over the photo

    box = page.locator("#canvas").bounding_box()  # hover → the pixel's top-5
    page.mouse.move(box["x"] + box["width"] * 0.61, box["y"] + box["height"] * 0.37)
    pixel = page.locator("#hover-pixel")
    x, y = int(pixel.get_attribute("data-x")), int(pixel.get_attribute("data-y"))
    rows = page.locator("#hover tr")
    assert rows.count() == 5
    shown = [(int(rows.nth(i).get_attribute("data-index")), float(rows.nth(i).get_attribute("data-probability")))
             for i in range(5)]
    expected = cli_probabilities_at(network, image, x, y)
    order = torch.argsort(expected, descending=True)[:5].tolist()
    assert [index for index, _ in shown] == order
    torch.testing.assert_close(torch.tensor([p for _, p in shown]), expected[order], rtol=0, atol=1e-5)
    assert page.locator("#marks rect.window").count() == 1  # the score cell's window is outlined

    before, asked = page.evaluate(CANVAS_SUM), len(requests)  # sliders → new pixels, no request
    page.locator("#opacity").fill("90")
    after_opacity = page.evaluate(CANVAS_SUM)
    page.select_option("#colormap", "jet")
    after_colormap = page.evaluate(CANVAS_SUM)
    page.select_option("#normalize", "peak")
    after_normalize = page.evaluate(CANVAS_SUM)
    page.select_option("#normalize", "none")
    assert len({before, after_opacity, after_colormap, after_normalize}) == 4
    assert len(requests) == asked

    page.fill("#query", "cat")  # a class by the CLI's rules (summed tabby + tiger cat)
    page.click("#search button")
    page.wait_for_selector("#classes li.selected[data-name='cat']")
    page.check("#detections")
    page.wait_for_function("document.getElementById('status-text').textContent.includes('detections')")
    assert page.locator("#marks rect.box").count() == page.evaluate("state.detections.length")
    page.locator("#opacity").fill("50")
    page.select_option("#colormap", "turbo")
    page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] * 0.35)
    shown = page.evaluate(CANVAS_SUM)  # another method: the page asks again and blends that method's map
    page.select_option("#method", "gradcam")
    page.wait_for_function("state.saliency === 'gradcam' && "
                           "document.getElementById('canvas').dataset.state === 'ready'")
    assert page.evaluate(CANVAS_SUM) != shown and page.locator("#classes li").count() == 5
    placed = torch.zeros(450, 192, dtype=torch.float64)  # how the page puts a shrunk map back on 450 pixels
    for pixel, pairs in enumerate(page.evaluate("bilinearRows(450, 192)")):
        for cell, weight in zip(pairs[::2], pairs[1::2]):
            placed[pixel, cell] += weight
    torch.testing.assert_close(placed, interpolation_matrix(450, 192, (450 / 192 - 1) / 2, 450 / 192).double(),
                               rtol=0, atol=1e-6)  # = the bilinear rule saliency_pixels documents
    (tmp_path / "notes.png").write_text("not an image")  # errors: one readable line
    page.set_input_files("#file", str(tmp_path / "notes.png"))
    page.wait_for_selector("#canvas[data-state='error']", state="attached")  # hidden: no picture
    assert page.locator("#error").inner_text() == "notes.png: not a recognised image format (corrupt, or not an image)"
    page.close()


@pytest.fixture
def photo(tmp_path) -> Path:
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(120, 160, seed=7))
    return image


@pytest.fixture
def page(browser, server_url):
    """The page, loaded and ready for an image."""
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    page.goto(server_url)
    page.wait_for_selector("body[data-ready='1']")
    yield page
    page.close()


def show(page, image: Path, outcome: str = "ready") -> None:
    """Upload ``image`` and wait until the canvas says ``outcome`` (ready or error)."""
    page.set_input_files("#file", str(image))
    page.wait_for_selector(f"#canvas[data-state='{outcome}']", state="attached", timeout=20_000)


def point_at(page, x_fraction: float, y_fraction: float, where: str = "#canvas") -> None:
    box = page.locator(where).bounding_box()
    page.mouse.move(box["x"] + box["width"] * x_fraction, box["y"] + box["height"] * y_fraction)


def hover_rows(page) -> list[tuple[str, float]]:
    """The hover panel's rows: (class name, value) as shown."""
    return [(row.locator("td").first.inner_text(), float(row.get_attribute("data-probability")))
            for row in page.locator("#hover tr").all()]


@pytest.mark.slow
def test_the_progress_line_goes_when_the_result_arrives(page, photo, app, monkeypatch):
    """A progress poll (/healthz) still on its way when the result arrives must not write "scoring… N s" after
    it. The network pass waits until the page has a poll in flight; that poll is answered after the result."""
    gate, polls, score = threading.Event(), [], app.state.server.queue.score
    monkeypatch.setattr(app.state.server.queue, "score", lambda network_pass: gate.wait(30) and score(network_pass))
    page.route("**/healthz", lambda route: polls.append(route))
    with page.expect_request("**/healthz", timeout=20_000):  # uploaded; the page asks how far the server is
        page.set_input_files("#file", str(photo))
    gate.set()
    page.wait_for_selector("#canvas[data-state='ready']", timeout=20_000)
    assert page.locator("#status-text").inner_text() == "" and polls
    for poll in polls:
        poll.fulfill(json={"status": "ok", "queued": 1, "capacity": 8, "progress": None})
    page.wait_for_timeout(500)  # the late answers reach the page's timer callbacks
    assert page.locator("#status-text").inner_text() == "" and page.locator("#progress").is_hidden()


@pytest.mark.slow
def test_an_error_after_a_result_clears_the_picture_and_the_hover(page, photo, tmp_path):
    show(page, photo)
    point_at(page, 0.5, 0.5)
    assert len(hover_rows(page)) == 5 and page.locator("#marks rect.window").count() == 1
    (tmp_path / "notes.png").write_text("not an image")
    show(page, tmp_path / "notes.png", "error")
    assert page.locator("#error").inner_text().startswith("notes.png: ")
    assert page.evaluate("(() => { const c = document.getElementById('canvas'); return Array.from(c.getContext('2d')"
                         ".getImageData(0, 0, c.width, c.height).data).every((v) => v === 0); })()")  # nothing drawn
    assert page.locator("#canvas").is_hidden()
    assert hover_rows(page) == [] and page.locator("#classes li").count() == 0
    point_at(page, 0.4, 0.1, where="#view")  # the pointer where the picture was: no classes, no window
    assert hover_rows(page) == [] and page.locator("#marks rect").count() == 0


@pytest.mark.slow
def test_switching_method_updates_the_hover_under_a_still_pointer(page, photo):
    show(page, photo)
    point_at(page, 0.6, 0.4)
    before, pixel = hover_rows(page), page.locator("#hover-pixel")
    x, y = int(pixel.get_attribute("data-x")), int(pixel.get_attribute("data-y"))
    page.select_option("#method", "gradcam")  # the pointer does not move
    page.wait_for_function("state.saliency === 'gradcam' && "
                           "document.getElementById('canvas').dataset.state === 'ready'", timeout=60_000)
    assert "gradcam map values" in pixel.inner_text()
    assert (int(pixel.get_attribute("data-x")), int(pixel.get_attribute("data-y"))) == (x, y)
    expected = page.evaluate(f"(() => {{ const v = probabilitiesAt({x}, {y}); return Array.from(v.keys())"
                             ".sort((a, b) => v[b] - v[a]).slice(0, 5)"
                             ".map((k) => [state.result.classes[k].name, v[k]]); })()")  # the gradcam maps there
    shown = hover_rows(page)
    assert [name for name, _ in shown] == [name for name, _ in expected] and shown != before
    torch.testing.assert_close(torch.tensor([v for _, v in shown]), torch.tensor([v for _, v in expected]),
                               rtol=0, atol=1e-6)


#: Probabilities the page may format: ties of three decimals (odd sixteenths: Python rounds them to even, JS's
#: toFixed up), both sides of 0.0005 and of a rounding that adds a digit, exponents below 1e-4, float32 values, a
#: hair outside [0, 1] (clamped), and values refused by both.
PROBABILITIES = [0.0, 1.0, 0.5, 0.912, 0.0625, 0.1875, 0.9375, 0.9995, 0.99949, 0.0035, 0.003, 0.0005, 0.000499999,
                 0.00042, 0.000995, 9.96e-05, 9.949e-05, 1.2e-05, 1.25e-05, 1e-05, 5e-07, 1e-12, 5e-324, 1.0000005,
                 -5e-07, *np.float32([0.0123456, 0.8765432, 3.3e-4, 7.7e-6]).tolist(),
                 *(10.0 ** np.random.default_rng(0).uniform(-7, 0, 40)).tolist(), 1.5, -0.1, float("nan")]


def python_text(value: float) -> str:
    try:
        return format_probability(value)
    except ValueError:
        return "refused"


@pytest.mark.slow
def test_the_page_writes_probabilities_as_the_cli_does(page, photo):
    """Every probability the page shows reads as text.format_probability writes it: its JS port agrees value for
    value; class and box labels are the server's strings; the hover's values are formatted by the port."""
    shown = page.evaluate("(values) => values.map((value) => { try { return formatProbability(value); } "
                          "catch (error) { return error instanceof RangeError ? 'refused' : String(error); } })",
                          PROBABILITIES)
    assert shown == [python_text(value) for value in PROBABILITIES]

    show(page, photo)
    result = page.evaluate("state.result")
    assert [item.text_content() for item in page.locator("#classes li").all()] == [
        f"{heat['name']}  {label}" for heat, label in zip(result["classes"], result["labels"]["classes"])]
    point_at(page, 0.5, 0.5)
    assert [row.locator("td.p").text_content() for row in page.locator("#hover tr").all()] == [
        format_probability(float(row.get_attribute("data-probability"))) for row in page.locator("#hover tr").all()]
    boxes = [{"class_name": "cat", "score": 0.003, "box": [4, 4, 40, 30]},
             {"class_name": "dog", "score": 0.00042, "box": [50, 40, 30, 30]}]  # peaks the page once drew as 0.00
    page.route("**/api/detect", lambda route: route.fulfill(json={
        "detections": boxes, "labels": {"detections": [format_probability(box["score"]) for box in boxes]}}))
    page.check("#detections")
    page.wait_for_selector("#marks text")
    assert [text.text_content() for text in page.locator("#marks text").all()] == ["cat 0.003", "dog 0.00042"]


@pytest.mark.slow
def test_each_normalize_mode_colours_the_map_as_normalize_heat(page, photo):
    """At full opacity each pixel is the colormap's colour of its level: the map under none, peak and minmax must
    give render.normalize_heat's levels (a level that rounds either way within 1e-3 is left out: the page rounds
    in float64, colorize in float32)."""
    show(page, photo)
    assert page.evaluate("Array.from(document.getElementById('normalize').options, (o) => o.value)") == \
        list(NORMALIZE_MODES)
    page.locator("#opacity").fill("100")
    heat = np.asarray(page.evaluate("Array.from(state.heat)"), dtype=np.float32)
    table = np.asarray(colormap_tables()["turbo"], dtype=np.uint8)
    drawn = {}
    for mode in NORMALIZE_MODES:
        page.select_option("#normalize", mode)
        drawn[mode] = np.asarray(page.evaluate(
            "(() => { const c = document.getElementById('canvas'); return Array.from(c.getContext('2d')"
            ".getImageData(0, 0, c.width, c.height).data); })()"), dtype=np.uint8).reshape(-1, 4)[:, :3]
        levels = np.clip(normalize_heat(heat, mode).astype(np.float64), 0, 1) * 255
        exact = np.abs(levels - np.floor(levels) - 0.5) > 1e-3
        np.testing.assert_array_equal(drawn[mode][exact], table[np.rint(levels[exact]).astype(int)])
        assert exact.mean() > 0.99
    assert not np.array_equal(drawn["none"], drawn["minmax"]) and not np.array_equal(drawn["peak"], drawn["minmax"])
    lowest, highest = int(heat.argmin()), int(heat.argmax())  # minmax: the map's extremes get the table's ends
    assert (drawn["minmax"][lowest] == table[0]).all() and (drawn["minmax"][highest] == table[255]).all()
    assert page.evaluate("(() => { const n = normalization('minmax', 0.25, 0.25); "
                         "return (0.25 - n.offset) * n.scale; })()") == 0  # a flat map: all 0, never NaN


@pytest.mark.slow
@pytest.mark.parametrize(("docs", "operation"), [
    ("/docs", "#swagger-ui .opblock-summary-path[data-path='/api/heatmap']"),
    ("/redoc", "span.http-verb.post + span:text-is('/api/heatmap')"),
], ids=["swagger-ui", "redoc"])
def test_api_docs_render_offline(browser, server_url, docs, operation):
    """/docs (reached as a user does, by the page's "API" link) and /redoc render their operations with every
    outside request refused: Swagger UI and ReDoc come from this server (fcn_app/serve/static/vendor/)."""
    page = browser.new_page()
    refused = block_outside_requests(page)
    page.goto(server_url)
    if docs == "/docs":
        page.click("header a[href='/docs']")
    else:
        page.goto(server_url + docs)
    page.wait_for_selector(operation, timeout=20_000)
    assert refused == []
    page.close()


@pytest.mark.slow
@pytest.mark.parametrize(("ci", "outcome", "reason"), [
    ("true", "1 error", "BROWSER TESTS FAILED (CI=true): no Chromium on PATH; apt-get install -y chromium"),
    ("", "1 skipped", "BROWSER TESTS SKIPPED: no Chromium on PATH; apt-get install -y chromium"),
], ids=["ci", "local"])
def test_without_a_browser_ci_fails_and_elsewhere_skips_with_the_reason(tmp_path, ci, outcome, reason):
    """The browser test above in a pytest of its own whose PATH holds no Chromium (as when `.ci/run` could not
    install one): under CI=true it errors with the reason (exit 1), elsewhere it is skipped with it (exit 0)."""
    env = {name: value for name, value in os.environ.items() if name not in ("CI", "FCN_TEST_CHROMIUM")}
    env.update(CI=ci, PATH=str(tmp_path))
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             f"{Path(__file__).name}::test_upload_hover_and_sliders"],
                            cwd=Path(__file__).parent, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == (1 if "error" in outcome else 0), result.stdout[-3000:]
    assert reason in result.stdout and outcome in result.stdout.splitlines()[-1], result.stdout[-3000:]
