"""Heatmaps → boxes: thresholds, components, box modes, NMS, pyramids, COCO output/evaluation and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fcn_app.cli import app
from fcn_app.coco import evaluate_detections, to_coco_results
from fcn_app.detect import (
    Detection,
    DetectOptions,
    detections_from_probabilities,
    non_max_suppression,
    select_detection_classes,
    threshold_mask,
)
from fcn_app.render import draw_detections
from fcn_app.errors import OptionError, ClassSelectionError, DatasetError
from fcn_app.geometry import ScoreGeometry
from fcn_app.io import atomic_write_png
from fcn_app.models import to_fully_convolutional
from fcn_app.pyramid import PyramidLevel, fuse_levels, parse_scales, resize_image, score_pyramid
from fcn_app.scoring import ScoreMap, compute_score_map

from helpers_cli import assert_one_line_error, run_fcn_many
from helpers import random_rgb, random_state_dict, tiny_classifier

REPO = Path(__file__).resolve().parent.parent


def centres(geometry, axis: int) -> np.ndarray:
    """Pixel positions of the cell centres along ``axis`` (0 = rows/y, 1 = columns/x)."""
    return geometry.first_center[axis] + geometry.stride[axis] * np.arange(geometry.grid[axis], dtype=np.float64)


def _level(scale: float, probabilities: np.ndarray, window: float = 32.0) -> PyramidLevel:
    """A pyramid level whose cells are the pixels (stride 1, centre 0): logits = log-probabilities."""
    rows, cols = probabilities.shape[1:]
    geometry = ScoreGeometry(grid=(rows, cols), stride=(1.0, 1.0), first_center=(0.0, 0.0),
                             window=(window / scale, window / scale), receptive_field=(window, window))
    logits = torch.from_numpy(np.log(np.clip(probabilities, 1e-6, 1.0))).float()
    return PyramidLevel(scale, ScoreMap(logits, geometry, (rows, cols), ["a", "b", "background"]))


def _two_blobs(height: int = 60, width: int = 80) -> np.ndarray:
    """Class 0 hot in a 5×7 block peaking at (x=20, y=15); class 1 hot in a 4×4 block at x 50–53, y 40–43."""
    probabilities = np.zeros((3, height, width), dtype=np.float32)
    probabilities[0, 12:17, 17:24] = 0.7
    probabilities[0, 15, 20] = 0.9
    probabilities[1, 40:44, 50:54] = 0.8
    probabilities[2] = 1.0 - probabilities[0] - probabilities[1]
    return probabilities


# --- thresholds, components, box modes ---------------------------------------------------------------------------


def test_threshold_modes():
    heat = np.array([[0.0, 0.2, 0.4], [0.6, 0.8, 1.0]], dtype=np.float32) * 0.5
    assert threshold_mask(heat, "absolute", 0.3).tolist() == [[False, False, False], [True, True, True]]
    assert threshold_mask(heat, "relative", 0.7).tolist() == [[False, False, False], [False, True, True]]
    bimodal = np.array([[0.05, 0.1, 0.08], [0.9, 0.85, 0.95]], dtype=np.float32)
    assert threshold_mask(bimodal, "otsu", 0.0).tolist() == [[False] * 3, [True] * 3]
    assert not threshold_mask(np.full((2, 2), 0.4, np.float32), "otsu", 0.0).any()
    with pytest.raises(OptionError, match="unknown"):
        DetectOptions(threshold_mode="median")


def test_one_detection_per_component_with_window_and_region_boxes():
    fused = fuse_levels([_level(1.0, _two_blobs())], class_indices=[0, 1])
    options = DetectOptions(threshold_mode="absolute", threshold=0.5, min_score=0.5, masks=True)
    window = sorted(detections_from_probabilities(fused, options, box_mode="window"), key=lambda d: d.class_index)
    assert [(d.class_name, d.peak, round(d.score, 3)) for d in window] == [("a", (20, 15), 0.9), ("b", (50, 40), 0.8)]
    # 32-px window centred on pixel 20 spans [4.5, 36.5) in edge coordinates … clipped to the image's top edge
    assert window[0].box == pytest.approx((4.5, 0.0, 32.0, 31.5))
    assert window[0].mask.sum() == 35
    region = sorted(detections_from_probabilities(fused, options, box_mode="region"), key=lambda d: d.class_index)
    assert [d.box for d in region] == [(17.0, 12.0, 7.0, 5.0), (50.0, 40.0, 4.0, 4.0)]
    filled = detections_from_probabilities(fused, DetectOptions(threshold_mode="absolute", window_fill=0.5))
    assert sorted(d.box for d in filled)[0] == pytest.approx((12.5, 7.5, 16.0, 16.0))


def test_window_box_uses_the_scale_where_the_class_is_surest():
    weak, strong = _two_blobs(), _two_blobs()
    weak[0, 15, 20], weak[2, 15, 20] = 0.8, 0.2
    fused = fuse_levels([_level(1.0, weak), _level(2.0, strong)], class_indices=[0], mode="max")
    (detection,) = detections_from_probabilities(fused, DetectOptions(threshold_mode="absolute"))
    assert detection.scale == 2.0 and detection.box[2] == pytest.approx(16.0)
    mean = fuse_levels([_level(1.0, weak), _level(2.0, strong)], class_indices=[0], mode="mean")
    assert mean.probabilities[0, 15, 20] == pytest.approx(0.85)


def test_centroid_centre_follows_the_heat_shape():
    probabilities = np.zeros((3, 40, 40), dtype=np.float32)
    probabilities[0, 10:13, 10:16] = 0.8  # symmetric blob: centroid x = 12.5, y = 11
    probabilities[2] = 1 - probabilities[0]
    fused = fuse_levels([_level(1.0, probabilities)], class_indices=[0])
    (detection,) = detections_from_probabilities(
        fused, DetectOptions(threshold_mode="absolute", window_fill=0.25, center="centroid"))
    assert detection.box == pytest.approx((9.0, 7.5, 8.0, 8.0))


def test_window_box_stays_on_a_window_the_classifier_scored():
    """Heat left of the first cell centre is that cell's value carried outwards: the peak of the plateau is pixel
    x = 0, but the window that fired is centred on the first cell (x = 16), so the box is that whole window."""
    probabilities = np.full((3, 3, 8), 0.05, dtype=np.float32)
    probabilities[0, 1, 0] = 0.9
    probabilities[2] = 1.0 - probabilities[0] - probabilities[1]
    geometry = ScoreGeometry(grid=(3, 8), stride=(4.0, 4.0), first_center=(16.0, 16.0), window=(32.0, 32.0),
                             receptive_field=(32.0, 32.0))
    logits = torch.from_numpy(np.log(probabilities))
    level = PyramidLevel(1.0, ScoreMap(logits, geometry, (60, 80), ["a", "b", "background"]))
    (detection,) = detections_from_probabilities(fuse_levels([level], class_indices=[0]),
                                                 DetectOptions(threshold_mode="absolute"))
    assert detection.peak == (0, 20)
    assert detection.box == pytest.approx((0.5, 4.5, 32.0, 32.0))


def test_nms_is_class_agnostic_by_default():
    detections = [
        Detection("a", 0, 0.9, (0, 0, 10, 10), (5, 5), 1.0),
        Detection("b", 1, 0.8, (1, 1, 10, 10), (6, 6), 1.0),
        Detection("a", 0, 0.7, (30, 30, 10, 10), (35, 35), 1.0),
    ]
    assert [d.score for d in non_max_suppression(detections, 0.3)] == [0.9, 0.7]
    assert [d.score for d in non_max_suppression(detections, 0.3, classwise=True)] == [0.9, 0.8, 0.7]
    assert [d.score for d in non_max_suppression(detections, 0.3, max_detections=1)] == [0.9]
    assert non_max_suppression([], 0.3) == []


def test_detection_classes_skip_background_and_take_topk_of_big_label_sets():
    assert select_detection_classes(["cat", "dog", "background"]) == [0, 1]
    assert select_detection_classes(["cat", "hot dog", "dog sled"], ["dog"]) == [1, 2]
    names = [f"class {index}" for index in range(200)]
    peaks = torch.zeros(200)
    peaks[[7, 3, 150]] = torch.tensor([0.9, 0.5, 0.7])
    assert select_detection_classes(names, peak_probabilities=peaks, topk=2) == [7, 150]
    with pytest.raises(ClassSelectionError, match="no class named"):
        select_detection_classes(["cat", "dog"], ["zebra"])


def test_draw_detections_boxes_in_class_colours():
    image = np.zeros((50, 60, 3), np.uint8)
    drawn = draw_detections(image, [Detection("a", 0, 0.9, (10, 20, 30, 25), (25, 32), 1.0)])
    assert drawn.shape == image.shape and not image.any()
    assert tuple(drawn[44, 25]) == (230, 25, 75)  # bottom edge, class 0 colour (RGB)
    with pytest.raises(ValueError, match="uint8 RGB"):
        draw_detections(image[..., 0], [])


# --- pyramid --------------------------------------------------------------------------------------------------------


def test_parse_scales_and_resize():
    assert parse_scales("0.5, 1,2,1") == (0.5, 1.0, 2.0)
    for bad in ("", "0.5,x", "0", "-1", "nan"):
        with pytest.raises(OptionError, match="scale"):
            parse_scales(bad)
    image = random_rgb(30, 41)
    assert resize_image(image, 0.5).shape == (15, 20, 3)
    assert resize_image(image, 2).shape == (60, 82, 3)
    assert resize_image(image, 1.0) is image


def test_pyramid_levels_are_placed_on_the_original_image():
    """A level at scale 2 puts cell (0, 0) where scoring the enlarged image does, mapped back by the exact factor."""
    network = to_fully_convolutional(tiny_classifier().eval(), input_size=32)
    image = random_rgb(40, 53, seed=3)
    levels = score_pyramid(network, image, (1.0, 2.0))
    direct = compute_score_map(network, image)
    torch.testing.assert_close(levels[0].score_map.logits, direct.logits)
    enlarged = compute_score_map(network, resize_image(image, 2.0))  # 80 × 106
    level = levels[1].score_map
    assert level.image_size == (40, 53)
    torch.testing.assert_close(level.logits, enlarged.logits)
    # pixel centre p of the enlarged image is (p + 0.5) · H / H' − 0.5 in the original
    expected_x = (centres(enlarged.geometry, 1) + 0.5) * 53 / 106 - 0.5
    expected_y = (centres(enlarged.geometry, 0) + 0.5) * 40 / 80 - 0.5
    np.testing.assert_allclose(centres(level.geometry, 1), expected_x)
    np.testing.assert_allclose(centres(level.geometry, 0), expected_y)
    assert level.geometry.window == (16.0, 16.0)
    fused = fuse_levels(levels, [0, 1], mode="mean")
    assert fused.probabilities.shape == (2, 40, 53) and fused.best_level.max() <= 1


# --- COCO results and evaluation ------------------------------------------------------------------------------


def _ground_truth() -> dict:
    return {
        "images": [{"id": 10, "file_name": "one.png", "height": 100, "width": 100},
                   {"id": 11, "file_name": "two.png", "height": 100, "width": 100}],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 5, "bbox": [10, 10, 30, 30]},
            {"id": 2, "image_id": 11, "category_id": 6, "bbox": [50, 40, 20, 30]},
        ],
        "categories": [{"id": 5, "name": "a"}, {"id": 6, "name": "b"}],
    }


def test_evaluate_matches_images_and_classes_by_name():
    per_image = [
        (1, "one.png", [Detection("a", 0, 0.9, (10, 10, 30, 30), (25, 25), 1.0)]),
        (2, "two.png", [Detection("b", 1, 0.8, (50, 40, 20, 30), (60, 55), 1.0)]),
    ]
    results = to_coco_results(per_image)
    assert results[0]["category_id"] == 1 and results[0]["file_name"] == "one.png"
    metrics = evaluate_detections(results, _ground_truth())
    assert metrics["AP"] == pytest.approx(1.0) and metrics["AP50"] == pytest.approx(1.0)
    shifted = to_coco_results([(1, "one.png", [Detection("a", 0, 0.9, (25, 25, 30, 30), (40, 40), 1.0)]),
                               per_image[1]])
    half = evaluate_detections(shifted, _ground_truth())
    assert half["AP50"] == pytest.approx(0.5)  # IoU of the shifted box is 0.14: one of two classes found
    wrong_class = [dict(results[0], category_name="b"), results[1]]
    # class a: nothing found (0); class b: a false positive scored above the true one (precision 1/2 → AP 0.5)
    assert evaluate_detections(wrong_class, _ground_truth())["AP50"] == pytest.approx(0.25)


def test_evaluate_bad_inputs(tmp_path):
    assert evaluate_detections([], _ground_truth())["AP50"] == 0.0
    with pytest.raises(DatasetError, match="not found"):
        evaluate_detections(tmp_path / "missing.json", _ground_truth())
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(DatasetError, match="cannot read"):
        evaluate_detections([], tmp_path / "broken.json")
    with pytest.raises(DatasetError, match="COCO JSON"):
        evaluate_detections([], {"images": []})
    stray = [{"image_id": 99, "category_id": 5, "bbox": [0, 0, 1, 1], "score": 0.5}]
    with pytest.raises(DatasetError, match="not in the ground truth"):
        evaluate_detections(stray, _ground_truth())


# --- CLI --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("detect_images")
    atomic_write_png(folder / "first.png", random_rgb(224, 240, seed=1))
    atomic_write_png(folder / "second.png", random_rgb(230, 224, seed=2))
    (folder / "notes.txt").write_text("not an image")
    return folder


@pytest.fixture(scope="module")
def alexnet_weights(tmp_path_factory) -> Path:
    """Seeded random AlexNet weights: the CLI's real loading path with a model ~20× cheaper to run than VGG16."""
    path = tmp_path_factory.mktemp("weights") / "alexnet.pth"
    torch.save(random_state_dict("alexnet", seed=0), path)
    return path


def test_cli_detect_folder_writes_overlays_and_coco_results(image_folder, alexnet_weights, tmp_path):
    out = tmp_path / "boxes"
    result = CliRunner().invoke(app, [
        "detect", str(image_folder), "--out", str(out), "--model", "alexnet", "--weights", str(alexnet_weights),
        "--stride", "16", "--scales", "1,1.25",
        "--threshold-mode", "otsu", "--min-score", "0", "--topk", "2", "--masks", "--device", "cpu",
    ])
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.iterdir()) == [
        ".thumbs", "detections.coco.json", "first.detections.json", "first.detections.png", "gallery-index.js",
        "index.html", "second.detections.json", "second.detections.png", "summary.json",
    ]
    per_image = json.loads((out / "first.detections.json").read_text())
    assert per_image["stride"] == 16 and per_image["scales"] == [1.0, 1.25]
    assert per_image["detections"], "Otsu with min-score 0 finds components on any map"
    first = per_image["detections"][0]
    assert set(first) >= {"class_name", "class_index", "score", "box", "mask"}
    results = json.loads((out / "detections.coco.json").read_text())
    assert "first.png" in {entry["file_name"] for entry in results}
    # quality against ground truth the detector never saw: tests/test_detect_cli.py


@pytest.mark.slow
def test_cli_detect_bad_options_one_line_exit_2(image_folder, alexnet_weights, tmp_path):
    cases = [(["--scales", "1,zero"], "--scales"), (["--stride", "12"], "not reachable"),
             (["--fuse", "median"], "--fuse"), (["--box-mode", "mask"], "--box-mode")]
    commands = [["detect", image_folder / "first.png", "--out", tmp_path / str(number), "--model", "alexnet",
                 "--weights", alexnet_weights, *args] for number, (args, _) in enumerate(cases)]
    for (_, message), result in zip(cases, run_fcn_many(commands)):
        assert_one_line_error(result, 2, message)
    assert not list(tmp_path.iterdir())


@pytest.mark.slow  # a subprocess or a training run: kept out of the quick loop
def test_cli_evaluate_missing_file_in_a_subprocess(tmp_path):
    process = subprocess.run(
        [sys.executable, "-m", "fcn_app", "evaluate-detections", str(tmp_path / "nope.json"), str(tmp_path / "gt.json")],
        capture_output=True, text=True, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=120,
    )
    assert process.returncode == 2, process.stderr
    assert "not found" in process.stderr and "Traceback" not in process.stderr
    assert len(process.stderr.strip().splitlines()) == 1
