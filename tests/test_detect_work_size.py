"""``fcn-heatmap detect --work-size N``: the network sees a working-size copy, boxes, peaks, masks and COCO results
refer to the original pixels; the default stays ``native`` (the detections of before).

Runs use ``helpers_batch:spot_fcn``, whose answer is known (a red square filling one 8-px window is where the heat
peaks), so boxes are checked against where the squares were painted and against a run on the image at half size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn_app.detect import Detection, DetectOptions, detect_objects, detection_on_original
from fcn_app.io import load_image
from fcn_app.resolution import score_map_on_original
from fcn_app.scoring import ScoreMap, compute_score_map

from helpers import random_rgb
from helpers_batch import spot_fcn
from helpers_cli import run_in_process

pytestmark = pytest.mark.usefixtures("one_thread")

SPOT = "helpers_batch:spot_fcn"
SMALL = (96, 128)  # (height, width) of the scene; the photo is the scene enlarged 2×
SQUARES = ((24, 40), (64, 88))  # (top, left) of the 8×8 red squares in the scene: one spot_fcn window each
ARGS = ["--model", SPOT, "--class", "red spot", "--masks", "--device", "cpu"]


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> dict[str, Path]:
    pixels = np.full((*SMALL, 3), 120, np.uint8)
    for top, left in SQUARES:
        pixels[top : top + 8, left : left + 8] = (250, 10, 10)
    folder = tmp_path_factory.mktemp("scene")
    Image.fromarray(pixels).save(folder / "small.png")
    Image.fromarray(pixels.repeat(2, axis=0).repeat(2, axis=1)).save(folder / "photo.png")
    return {"small": folder / "small.png", "photo": folder / "photo.png"}


def detect_json(capsys, image: Path, out: Path, *args) -> dict:
    code, printed, err = run_in_process(capsys, "detect", image, *ARGS, "--out", out, *args)
    assert code == 0, err
    return dict(json.loads((out / f"{image.stem}.detections.json").read_text()), printed=" ".join(printed.split()))


def test_boxes_found_at_a_working_size_land_on_the_original_pixels(capsys, scene, tmp_path):
    native = detect_json(capsys, scene["small"], tmp_path / "native")
    work = detect_json(capsys, scene["photo"], tmp_path / "work", "--work-size", "128")
    assert "2 detections · network sees 128×96 (128 px)" in work["printed"]
    assert native["work_size"] == {"width": 128, "height": 96, "rule": "native"}
    assert work["image_size"] == {"width": 256, "height": 192}
    assert work["work_size"] == {"width": 128, "height": 96, "rule": "128 px"}
    assert len(native["detections"]) == len(work["detections"]) == len(SQUARES)
    by_x = sorted(native["detections"], key=lambda detection: detection["box"][0])
    for small, big, (top, left) in zip(by_x, sorted(work["detections"], key=lambda d: d["box"][0]), SQUARES):
        # The square's window in the scene, doubled: the photo's pixels (Lanczos makes the working copy ≈ scene).
        np.testing.assert_allclose(small["box"], [left, top, 8, 8], atol=1.0)
        np.testing.assert_allclose(big["box"], [2 * value for value in small["box"]], atol=2.0)
        assert abs(big["peak"]["x"] - (2 * left + 7.5)) <= 2 and abs(big["peak"]["y"] - (2 * top + 7.5)) <= 2
        assert big["mask"]["size"] == [192, 256]
    coco = json.loads((tmp_path / "work" / "detections.coco.json").read_text())
    assert sorted(entry["bbox"] for entry in coco) == sorted(d["box"] for d in work["detections"])


def test_native_default_gives_the_detections_of_before(capsys, scene, tmp_path):
    default = detect_json(capsys, scene["photo"], tmp_path)
    assert "network sees 256×192 (native)" in default["printed"]
    network = spot_fcn()
    before = detect_objects(network, load_image(scene["photo"]), classes=["red spot"],
                            options=DetectOptions(masks=True))
    assert default["detections"] == [detection.to_dict() for detection in before]
    assert default["work_size"] == {"width": 256, "height": 192, "rule": "native"}


@pytest.mark.parametrize("work, original", [((45, 61), (131, 177)), ((40, 40), (29, 33))])
def test_a_window_box_maps_as_the_score_geometry_does(work, original):
    """A detection's window box on the working pixels, mapped, is the window box of the score geometry placed on
    the original (``score_map_on_original``), and its peak is the working pixel centre times the exact factor."""
    score_map: ScoreMap = compute_score_map(spot_fcn(), random_rgb(*work, seed=1), precision="fp32")
    row, col = 2, 3
    box = score_map.geometry.window_box(row, col)
    peak = (29, 17)  # (x, y) working pixel
    mapped = detection_on_original(Detection("red spot", 0, 0.9, box, peak, 1.0), work, original)
    expected_box = score_map_on_original(score_map, original).geometry.window_box(row, col)
    np.testing.assert_allclose(mapped.box, expected_box, rtol=0, atol=1e-9)
    assert mapped.peak == (round((29 + 0.5) * original[1] / work[1] - 0.5),
                           round((17 + 0.5) * original[0] / work[0] - 0.5))


def test_format_jpg_writes_the_boxes_as_jpeg_with_the_photos_colour_profile(capsys, scene, tmp_path):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    photo = tmp_path / "photo.jpg"
    Image.open(scene["photo"]).save(photo, quality=95, icc_profile=srgb)
    png = detect_json(capsys, photo, tmp_path / "png", "--work-size", "128")
    jpg = detect_json(capsys, photo, tmp_path / "jpg", "--work-size", "128", "--format", "jpg")
    assert (tmp_path / "png" / "photo.detections.png").exists()
    assert not (tmp_path / "jpg" / "photo.detections.png").exists()
    with Image.open(tmp_path / "jpg" / "photo.detections.jpg") as picture:
        assert picture.format == "JPEG" and picture.size == (256, 192) and picture.info.get("icc_profile") == srgb
    assert {**png, "printed": None} == {**jpg, "printed": None} and len(jpg["detections"]) == len(SQUARES)


def test_bad_working_sizes_and_formats_are_one_line(capsys, scene, tmp_path):
    for option, value, message in (("--work-size", "big", "--work-size: 'big' is neither a number of pixels"),
                                   ("--work-size", "0", "--work-size: must be at least 1 pixel"),
                                   ("--format", "gif", "--format: unknown picture format 'gif'")):
        code, out, err = run_in_process(capsys, "detect", scene["small"], *ARGS, option, value, "--out",
                                        tmp_path / "out")
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err
    assert not (tmp_path / "out").exists()
