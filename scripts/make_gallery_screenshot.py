"""Draw docs/images/gallery.png: the gallery of a real folder run, opened from disk in headless Chromium.

    PYTHONPATH=$PWD python scripts/make_gallery_screenshot.py [--out docs/images/gallery.png] [--keep DIR]

The run is the one `fcn-heatmap photos/ --out results/` does (fcn_app.batch.run_job), with a classifier that
knows what it sees: the small digit classifier of the detection proof (tests/helpers_detect.py), trained here on
scikit-learn's digits, converted and densified to stride 4. The inputs are held-out digit scenes enlarged 3× (the
network sees them at their own size, `work_size` 160) and one corrupt file, so the failures panel shows. The page
is then filtered to one digit and sorted by peak probability, as a user would, and photographed.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers_browser import launch_browser  # noqa: E402
from helpers_detect import CATEGORIES, WINDOW, make_scenes, train_digit_classifier  # noqa: E402

from fcn_app.batch import collect_inputs, run_job  # noqa: E402
from fcn_app.dense import densify  # noqa: E402
from fcn_app.io import atomic_write_png, ensure_output_dir  # noqa: E402
from fcn_app.models import to_fully_convolutional  # noqa: E402
from fcn_app.tasks import HeatmapOptions, HeatmapTask  # noqa: E402

ZOOM = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/images/gallery.png"))
    parser.add_argument("--scenes", type=int, default=30)
    parser.add_argument("--digit", default="3", help="the class the page is filtered to")
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it (default: a temporary one)")
    args = parser.parse_args()

    network = densify(to_fully_convolutional(train_digit_classifier(seed=0), input_size=WINDOW,
                                             categories=CATEGORIES), stride=4)
    with tempfile.TemporaryDirectory() as temporary:
        root = args.keep or Path(temporary)
        photos = ensure_output_dir(root / "scenes")
        for number, scene in enumerate(make_scenes(count=args.scenes, digits_per_scene=2, seed=5)):
            big = cv2.resize(scene.image, None, fx=ZOOM, fy=ZOOM, interpolation=cv2.INTER_NEAREST)
            atomic_write_png(photos / f"scene_{number:03d}.png", big)
        (photos / "scan_0417.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated by a full disk")
        items, _ = collect_inputs([photos])
        task = HeatmapTask(network, HeatmapOptions(topk=3, work_size=160))  # the scene's own size
        job = run_job(task, items, root / "results", num_workers=0)
        print(f"gallery: {job.gallery_path} ({job.result.counts})")

        from playwright.sync_api import sync_playwright

        with sync_playwright() as playwright:
            browser = launch_browser(playwright)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(job.gallery_path.resolve().as_uri())
            chosen = page.evaluate("name => String(window.FCN_GALLERY.classes.indexOf(name))", args.digit)
            page.select_option("#class-filter", chosen)
            page.wait_for_function("[...document.querySelectorAll('#grid img')].every(image => image.complete)")
            ensure_output_dir(args.out.parent)
            page.screenshot(path=str(args.out))
            browser.close()
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
