#!/usr/bin/env python
"""Draw docs/images/serve.png: the `fcn-heatmap serve` page in headless Chromium, on a digit scene.

    PYTHONPATH=$PWD python scripts/make_serve_screenshot.py [--out docs/images/serve.png]

The model is the small digit classifier of the detection proof (tests/helpers_detect.py: trained here on
scikit-learn's bundled digits, converted, densified to stride 4); the page is the real one, served by the real
app on 127.0.0.1, with the pointer on a digit (top-5 at that pixel, its score cell's window outlined) and the
detection toggle on.
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

from helpers_browser import launch_browser  # noqa: E402
from helpers_detect import make_scenes, trained_digit_fcn  # noqa: E402
from helpers_serve import threaded_server  # noqa: E402

from fcn_app.dense import densify  # noqa: E402
from fcn_app.scoring import prepare_network  # noqa: E402
from fcn_app.serve.app import ServeSettings, create_app  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "serve.png")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    network = prepare_network(densify(trained_digit_fcn(seed=0), 4))
    scene = make_scenes(1, size=(128, 160), digits_per_scene=4, seed=5)[0]
    image = Path(tempfile.mkdtemp()) / "digits.png"
    Image.fromarray(scene.image).save(image)
    digit_x, digit_y, side, _ = scene.boxes[0]
    with threaded_server(create_app(ServeSettings(network, model="digits (trained here), stride 4", stride=4))) as url, \
            sync_playwright() as playwright:
        browser = launch_browser(playwright)
        page = browser.new_page(viewport={"width": 1100, "height": 540})
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
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out))
        browser.close()
    print(f"wrote {args.out} (digits {scene.labels}; pointer on the {scene.labels[0]})")


if __name__ == "__main__":
    main()
