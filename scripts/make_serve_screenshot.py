#!/usr/bin/env python
"""Draw the web app's pictures in docs/images/: the `fcn-heatmap serve` page in headless Chromium, on a digit scene.

    PYTHONPATH=$PWD python scripts/make_serve_screenshot.py [--folder docs/images]

- serve.png: the page with the pointer on a digit (top-5 at that pixel, its score cell's window outlined) and the
  detection toggle on;
- serve-error.png: the same page after a file that is not an image was dropped on it: the one-line refusal, and
  nothing left of the previous picture;
- serve-docs-offline.png: /docs (Swagger UI) with every request to another host refused, as on a machine offline.

The model is the small digit classifier of the detection proof (tests/helpers_detect.py: trained here on
scikit-learn's bundled digits, converted, densified to stride 4); the page is the real one, served by the real
app on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from helpers_browser import block_outside_requests, launch_browser  # noqa: E402
from helpers_detect import make_scenes, trained_digit_fcn  # noqa: E402
from helpers_serve import threaded_server  # noqa: E402

from fcn_app.dense import densify  # noqa: E402
from fcn_app.scoring import prepare_network  # noqa: E402
from fcn_app.serve.app import ServeSettings, create_app  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=REPO / "docs" / "images")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    network = prepare_network(densify(trained_digit_fcn(seed=0), 4))
    scene = make_scenes(1, size=(128, 160), digits_per_scene=4, seed=5)[0]
    work = Path(tempfile.mkdtemp())
    image, not_an_image = work / "digits.png", work / "notes.png"
    Image.fromarray(scene.image).save(image)
    not_an_image.write_text("not an image")
    digit_x, digit_y, side, _ = scene.boxes[0]
    args.folder.mkdir(parents=True, exist_ok=True)
    app = create_app(ServeSettings(network, model="digits (trained here), stride 4", stride=4))
    with threaded_server(app) as url, sync_playwright() as playwright:
        browser = launch_browser(playwright)
        page = browser.new_page(viewport={"width": 1100, "height": 540})
        refused = block_outside_requests(page)
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        page.set_input_files("#file", str(image))
        page.wait_for_selector("#canvas[data-state='ready']", timeout=60_000)
        page.click(f"#classes li[data-name='{scene.labels[0]}']")
        page.check("#detections")
        page.wait_for_function("document.getElementById('status-text').textContent.includes('detections')")
        box = page.locator("#canvas").bounding_box()
        scale = box["width"] / scene.image.shape[1]
        page.mouse.move(box["x"] + (digit_x + side / 2) * scale, box["y"] + (digit_y + side / 2) * scale)
        page.screenshot(path=str(args.folder / "serve.png"))
        print(f"wrote {args.folder / 'serve.png'} (digits {scene.labels}; pointer on the {scene.labels[0]})")

        page.set_input_files("#file", str(not_an_image))
        page.wait_for_selector("#canvas[data-state='error']", state="attached", timeout=60_000)
        page.screenshot(path=str(args.folder / "serve-error.png"))
        print(f"wrote {args.folder / 'serve-error.png'} ({page.locator('#error').inner_text()})")

        page.click("header a[href='/docs']")
        page.wait_for_selector("#swagger-ui .opblock-summary-path[data-path='/api/heatmap']", timeout=60_000)
        page.screenshot(path=str(args.folder / "serve-docs-offline.png"))
        print(f"wrote {args.folder / 'serve-docs-offline.png'} ({len(refused)} requests to other hosts refused)")
        browser.close()

if __name__ == "__main__":
    main()
