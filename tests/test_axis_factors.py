"""Unequal scale factors per axis, end to end: what the network finds on a working-size copy lands on the right
original pixels along each axis.

A working size keeps the aspect ratio up to whole pixels, so the two factors differ only by rounding — by 4 % for a
97×203 photo at ``work_size=24`` (11×24 px: 11/97 down, 24/203 across). Every other end-to-end test resizes by
equal factors, so factors swapped between the axes pass them. Here the photo has a red square on one cell of a
2-px-window network, and the second path maps by hand: a working pixel centre ``p`` is original pixel
``(p + 0.5) · original / working − 0.5`` along its axis, a working edge ``e`` is ``e · original / working``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fcn_app.detect import DetectOptions, detect_objects
from fcn_app.io import decode_input
from fcn_app.models.convert import FullyConvolutionalNet
from fcn_app.models.preprocess import normalize_pixels
from fcn_app.scoring import ScoringOptions
from fcn_app.segmentation.checkpoint import load_segmentation_model
from fcn_app.tasks import DetectionTask, HeatmapOptions, HeatmapTask, SegmentationTask, process_input

from helpers import assert_labels_where_decided
from helpers_batch import tiny_segmentation_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

ORIGINAL = (97, 203)  # (height, width)
WORK_SIZE = 24
WORKING = (11, 24)  # what WORK_SIZE makes of ORIGINAL: 97·24/203 = 11.47 rounds to 11
FACTORS = (WORKING[0] / ORIGINAL[0], WORKING[1] / ORIGINAL[1])  # (0.1134, 0.1182): 4 % apart
HOT_CELL = (2, 8)  # (row, col) of the 2-px cell the red square covers: working rows 4–5, columns 16–17


def two_pixel_spot_net() -> FullyConvolutionalNet:
    """2×2-px windows at stride 2 (cell ``(i, j)`` centred on working pixel ``(2i + 0.5, 2j + 0.5)``); class
    ``"red spot"`` scores ``40·(R − G) − 20`` per window (pixels in [0, 1]), class ``"other"`` scores 0."""
    head = nn.Conv2d(3, 2, 1)
    with torch.no_grad():
        head.weight.zero_()
        head.bias.zero_()
        head.weight[0, 0, 0, 0], head.weight[0, 1, 0, 0], head.bias[0] = 40.0, -40.0, -20.0
    return FullyConvolutionalNet(nn.Sequential(nn.AvgPool2d(2, stride=2)), nn.Sequential(head), input_size=(2, 2),
                                 num_classes=2, categories=["red spot", "other"])


def to_original(position: float, axis: int, working: tuple[int, int] = WORKING) -> float:
    """A pixel-centre coordinate of a ``working``-size copy along ``axis`` (0: y, 1: x), in original pixels."""
    return (position + 0.5) * ORIGINAL[axis] / working[axis] - 0.5


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """Grey, with a red rectangle over the original pixels whose centres fall in the hot cell's working pixels."""
    pixels = np.full((*ORIGINAL, 3), 120, np.uint8)
    rows = [row for row in range(ORIGINAL[0]) if 4 <= (row + 0.5) * FACTORS[0] < 6]
    cols = [col for col in range(ORIGINAL[1]) if 16 <= (col + 0.5) * FACTORS[1] < 18]
    pixels[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1] = (250, 10, 10)
    path = tmp_path_factory.mktemp("axis_factors") / "photo.png"
    Image.fromarray(pixels).save(path)
    return path


def red_spot_cells(network, pixels: np.ndarray) -> torch.Tensor:
    """The network's own forward on ``pixels``: the red-spot probability of every cell."""
    with torch.no_grad():
        logits = network(normalize_pixels(pixels[None], network.mean, network.std))[0]
    return torch.softmax(logits, dim=0)[0]


def test_the_working_copy_has_unequal_factors(photo):
    image = decode_input(photo, HeatmapTask(two_pixel_spot_net(), HeatmapOptions(work_size=WORK_SIZE)).decode_request)
    assert image.network_pixels.shape[:2] == WORKING and tuple(image.picture_size) == ORIGINAL
    assert abs(FACTORS[0] - FACTORS[1]) > 0.04 * FACTORS[0]


def test_heatmap_geometry_scores_and_peak_land_on_the_original_pixels_per_axis(photo, tmp_path):
    network = two_pixel_spot_net()
    task = HeatmapTask(network, HeatmapOptions(work_size=WORK_SIZE, classes=["red spot"], write_json=True,
                                               save_scores=True), ScoringOptions("fp32"))
    image = decode_input(photo, task.decode_request)
    rendered, written = process_input(task, image, tmp_path / "photo", source="photo.png")
    summary = rendered.summary
    assert summary["image_size"] == {"width": ORIGINAL[1], "height": ORIGINAL[0]}
    assert (summary["work_size"]["height"], summary["work_size"]["width"]) == WORKING
    expected = {"stride": [2 / FACTORS[0], 2 / FACTORS[1]], "window": [2 / FACTORS[0], 2 / FACTORS[1]],
                "first_center": [to_original(0.5, 0), to_original(0.5, 1)]}
    scores = np.load(written["scores"])
    for name, values in expected.items():
        np.testing.assert_allclose(summary["geometry"][name], values, rtol=1e-12)
        np.testing.assert_allclose(scores[name], values, rtol=1e-12)
    assert tuple(scores["image_size"]) == ORIGINAL and tuple(scores["grid"]) == (5, 12)
    assert json.loads(written["json"].read_text())["geometry"] == summary["geometry"]
    # the hottest cell, found by the network's own forward on the pixels it saw, and its centre on the original
    cells = red_spot_cells(network, image.network_pixels)
    assert divmod(int(cells.argmax()), cells.shape[1]) == HOT_CELL
    center_x, center_y = to_original(2 * HOT_CELL[1] + 0.5, 1), to_original(2 * HOT_CELL[0] + 0.5, 0)
    peak = next(entry for entry in summary["classes"] if entry["name"] == "red spot")["peak_pixel"]
    assert abs(peak["x"] - center_x) <= 0.5 and abs(peak["y"] - center_y) <= 0.5, (peak, center_x, center_y)


def test_pyramid_levels_land_on_the_original_pixels_per_axis(photo, tmp_path):
    """Scale 1.5 of the 11×24 working copy is 16×36 (16.5 rounds to even): a level with factors of its own."""
    options = HeatmapOptions(work_size=WORK_SIZE, scales=(1, 1.5), classes=["red spot"], write_json=True)
    task = HeatmapTask(two_pixel_spot_net(), options, ScoringOptions("fp32"))
    rendered, _ = process_input(task, decode_input(photo, task.decode_request), tmp_path / "photo")
    levels = rendered.summary["levels"]
    for level, size in zip(levels, [WORKING, (16, 36)]):
        geometry = level["geometry"]
        assert tuple(geometry["grid"]) == (size[0] // 2, size[1] // 2)
        np.testing.assert_allclose(geometry["stride"], [2 * ORIGINAL[0] / size[0], 2 * ORIGINAL[1] / size[1]],
                                   rtol=1e-12)
        np.testing.assert_allclose(geometry["first_center"], [to_original(0.5, 0, size), to_original(0.5, 1, size)],
                                   rtol=1e-12)
    peak = rendered.summary["classes"][0]["peak_pixel"]
    assert rendered.summary["classes"][0]["name"] == "red spot"
    # the square spans original rows 35–52 and columns 135–151; every level's hottest cell is centred inside it
    assert 135 <= peak["x"] <= 151 and 35 <= peak["y"] <= 52, peak


def test_detections_land_on_the_original_pixels_per_axis(photo, tmp_path):
    """The task's boxes and peaks against detect_objects on the working pixels, mapped by hand."""
    network = two_pixel_spot_net()
    options = DetectOptions(masks=True)
    task = DetectionTask(network, options=options, classes=["red spot"], work_size=WORK_SIZE,
                         scoring=ScoringOptions("fp32"))
    image = decode_input(photo, task.decode_request)
    rendered, _ = process_input(task, image, tmp_path / "photo")
    found = detect_objects(two_pixel_spot_net(), image.network_pixels, classes=["red spot"], options=options)
    assert len(rendered.detections) == len(found) == 1
    (mapped,), (working,) = rendered.detections, found
    x, y, width, height = working.box
    # the window of the hottest cell: 2 working pixels along each axis, around the peak
    assert (width, height) == (2.0, 2.0)
    expected_box = (x / FACTORS[1], y / FACTORS[0], width / FACTORS[1], height / FACTORS[0])
    np.testing.assert_allclose(mapped.box, expected_box, rtol=1e-12)
    assert mapped.peak == (round(to_original(working.peak[0], 1)), round(to_original(working.peak[1], 0)))
    assert mapped.mask.shape == ORIGINAL
    np.testing.assert_allclose(rendered.summary["detections"][0]["box"], expected_box, rtol=0, atol=0.005)  # JSON: 2 dp


def test_segmentation_labels_land_on_the_original_pixels_per_axis(photo, tmp_path):
    """The per-pixel logits of the working copy, resized bilinearly onto the original (``F.interpolate`` here)."""
    model = load_segmentation_model(tiny_segmentation_checkpoint(tmp_path / "fcn8s.pt", seed=2))[0]
    colours = np.asarray(Image.fromarray(np.random.default_rng(3).integers(0, 256, (6, 12, 3), dtype=np.uint8))
                         .resize(ORIGINAL[::-1], Image.BICUBIC))
    Image.fromarray(colours).save(tmp_path / "colours.png")
    task = SegmentationTask(model, HeatmapOptions(work_size=WORK_SIZE, save_scores=True), ScoringOptions("fp32"))
    image = decode_input(tmp_path / "colours.png", task.decode_request)
    assert image.network_pixels.shape[:2] == WORKING
    rendered, written = process_input(task, image, tmp_path / "colours")
    with torch.no_grad():
        logits = model(normalize_pixels(image.network_pixels[None], model.mean, model.std).contiguous())
    expected = F.interpolate(logits, size=ORIGINAL, mode="bilinear", align_corners=False)[0].argmax(0)
    labels = torch.from_numpy(np.asarray(Image.open(written["labels"])).astype(np.int64))
    assert labels.shape == ORIGINAL and len(labels.unique()) >= 2
    assert torch.equal(labels, expected)
    np.testing.assert_allclose(np.load(written["scores"])["stride"], [1 / FACTORS[0], 1 / FACTORS[1]], rtol=1e-12)
