"""Draw docs/images/detect_digits.png: detections (coloured, with labels) and true boxes (white) on digit scenes.

    PYTHONPATH=$PWD python scripts/make_detect_figure.py [--out docs/images/detect_digits.png]

Same recipe as the proof test (tests/test_detect_digits.py): train the small digit classifier, convert it,
densify to stride 4, three pyramid scales, window boxes at the surest scale. Left column: the fused heat of the
best class per pixel (background excluded); right: boxes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers_detect import BACKGROUND, CATEGORIES, WINDOW, make_scenes, train_digit_classifier  # noqa: E402

from fcn_app.dense import densify  # noqa: E402
from fcn_app.detect import DetectOptions, detect_objects  # noqa: E402
from fcn_app.render import draw_detections  # noqa: E402
from fcn_app.io import atomic_write_png, ensure_output_dir  # noqa: E402
from fcn_app.models import to_fully_convolutional  # noqa: E402
from fcn_app.pyramid import fuse_levels, score_pyramid  # noqa: E402
from fcn_app.render import overlay, tile_panels  # noqa: E402

SCALES = (0.9, 1.0, 1.1)
ZOOM = 3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("docs/images/detect_digits.png"))
    parser.add_argument("--scenes", type=int, default=2)
    args = parser.parse_args()

    network = densify(to_fully_convolutional(train_digit_classifier(seed=0), input_size=WINDOW,
                                             categories=CATEGORIES), stride=4)
    options = DetectOptions(threshold_mode="absolute", threshold=0.5, min_score=0.5, window_fill=26 / WINDOW)
    panels = []
    for scene in make_scenes(count=args.scenes, seed=11):
        image = scene.image
        digits = [index for index in range(len(CATEGORIES)) if index != BACKGROUND]
        heat = fuse_levels(score_pyramid(network, image, SCALES), digits).probabilities.max(axis=0)
        big = lambda picture: cv2.resize(picture, None, fx=ZOOM, fy=ZOOM, interpolation=cv2.INTER_NEAREST)  # noqa: E731
        heat_panel = overlay(big(image), big(heat), alpha=0.55)
        detections = detect_objects(network, image, scales=SCALES, options=options)
        boxes_panel = big(image)
        for x, y, w, h in scene.boxes:  # ground truth in white
            cv2.rectangle(boxes_panel, (x * ZOOM, y * ZOOM), ((x + w) * ZOOM - 1, (y + h) * ZOOM - 1),
                          (255, 255, 255), 1)
        for detection in detections:
            detection.box = tuple(value * ZOOM for value in detection.box)
        boxes_panel = draw_detections(boxes_panel, detections, thickness=2)
        panels += [heat_panel, boxes_panel]
    ensure_output_dir(args.out.parent)
    atomic_write_png(args.out, tile_panels(panels, columns=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
