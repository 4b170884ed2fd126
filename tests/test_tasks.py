"""The middle layer: one inference path for classifier and segmentation FCNs, tasks behind one protocol, and
the CLI turning library errors into one line naming the flag (only the program's own errors are exit 2)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fcn_app.errors import OptionError
from fcn_app.models.preprocess import normalize_pixels
from fcn_app.scoring import ScoringOptions, compute_score_map
from fcn_app.segmentation.checkpoint import load_segmentation_model
from fcn_app.tasks import HeatmapOptions, SegmentationTask, process_image

from helpers import assert_close_scaled, random_rgb
from helpers_batch import tiny_segmentation_checkpoint

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"


@pytest.fixture(scope="module")
def segmentation_checkpoint(tmp_path_factory) -> Path:
    return tiny_segmentation_checkpoint(tmp_path_factory.mktemp("seg") / "fcn8s.pt")


@pytest.fixture(scope="module")
def segmentation_model(segmentation_checkpoint):
    return load_segmentation_model(segmentation_checkpoint)[0]


@pytest.mark.parametrize("size", [(37, 50), (96, 131)])
def test_segmentation_scores_through_the_shared_path_equal_the_model_itself(segmentation_model, size):
    image = random_rgb(*size, seed=size[0])
    score_map = compute_score_map(segmentation_model, image, precision="fp32")
    with torch.no_grad():  # the second path: the model's own forward on an NCHW batch
        expected = segmentation_model(normalize_pixels(image[None], segmentation_model.mean,
                                                       segmentation_model.std).contiguous())[0]
    assert score_map.geometry.is_pixel_grid and score_map.geometry.grid == size
    assert_close_scaled(score_map.logits, expected, rtol=1e-5)


@pytest.mark.slow  # ~4 s on an AVX2 CPU; classifier tiles stay in the quick loop (test_tiling)
def test_segmentation_tiles_are_exact(segmentation_model):
    image = random_rgb(600, 640, seed=3)  # ~38 MB of activations whole; tiles need a 222-px receptive field
    whole = compute_score_map(segmentation_model, image, precision="fp32", max_memory="1G")
    calls = []
    tiled = compute_score_map(segmentation_model, image, precision="fp32", max_memory="12M",
                              progress=lambda done, total: calls.append((done, total)))
    assert calls and calls[-1][1] > 1, "the small budget must split the image into several tiles"
    assert_close_scaled(tiled.logits, whole.logits, rtol=1e-5)


def test_segmentation_task_refuses_a_grid_naming_the_option(segmentation_model):
    with pytest.raises(OptionError) as refused:
        SegmentationTask(segmentation_model, HeatmapOptions(grid=True)).check()
    assert refused.value.option == "grid"


def test_segmentation_task_writes_scores_with_their_geometry(segmentation_model, tmp_path):
    image = random_rgb(40, 52, seed=5)
    task = SegmentationTask(segmentation_model, HeatmapOptions(save_scores=True, normalize=True),
                            ScoringOptions("fp32"))
    rendered, written = process_image(task, image, tmp_path / "img")
    scores = np.load(written["scores"])
    assert scores["logits"].shape == (3, 40, 52) and tuple(scores["stride"]) == (1.0, 1.0)
    np.testing.assert_array_equal(scores["logits"].argmax(axis=0), rendered.labels)
    assert task.report(rendered).rows  # one row per shown class


@pytest.mark.parametrize("values, option", [
    ({"colormap": "rainbow"}, "colormap"), ({"topk": 0}, "topk"), ({"alpha": 2.0}, "alpha"),
])
def test_options_validate_when_made(values, option):
    with pytest.raises(OptionError) as refused:
        HeatmapOptions(**values)
    assert refused.value.option == option and "--" not in str(refused.value)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]))
    return subprocess.run([sys.executable, "-m", "fcn_app", *args], capture_output=True, text=True,
                           env=environment, timeout=300)


def assert_one_line(result: subprocess.CompletedProcess, code: int, *fragments: str) -> str:
    lines = result.stderr.splitlines()
    assert result.returncode == code, result.stderr
    assert len(lines) == 1 and not result.stdout and "Traceback" not in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.slow
def test_cli_one_line_errors_name_the_flag_and_bugs_are_internal_errors(tmp_path, segmentation_checkpoint):
    image = tmp_path / "img.png"
    from PIL import Image

    Image.fromarray(random_rgb(40, 40)).save(image)
    assert_one_line(run_cli("detect", str(image), "--model", "helpers_batch:tiny_fcn", "--nms-iou", "2"), 2,
                    "--nms-iou")
    assert_one_line(run_cli(str(image), "--checkpoint", str(segmentation_checkpoint), "--stride", "16"), 2,
                    "--checkpoint", "--stride")
    assert_one_line(run_cli(str(image), "--checkpoint", str(segmentation_checkpoint), "--grid"), 2, "--grid")
    assert_one_line(run_cli(str(image), "--precision", "int8"), 2, "--precision", "int8")
    assert_one_line(run_cli(str(image), "--model", "helpers_batch:broken_factory"), 1, "internal error",
                    "--verbose")
    verbose = run_cli(str(image), "--model", "helpers_batch:broken_factory", "--verbose")
    assert verbose.returncode == 1 and "Traceback" in verbose.stderr


@pytest.mark.slow
def test_cli_segmentation_with_precision_and_tiles(tmp_path, segmentation_checkpoint):
    image = tmp_path / "img.png"
    from PIL import Image

    Image.fromarray(random_rgb(500, 520, seed=9)).save(image)
    whole = run_cli(str(image), "--checkpoint", str(segmentation_checkpoint), "--out", str(tmp_path / "whole"))
    tiled = run_cli(str(image), "--checkpoint", str(segmentation_checkpoint), "--out", str(tmp_path / "tiled"),
                    "--max-memory", "12M", "--precision", "fp32")
    assert whole.returncode == 0 and tiled.returncode == 0, whole.stderr + tiled.stderr
    labels = [np.asarray(Image.open(tmp_path / run / "img.labels.png")) for run in ("whole", "tiled")]
    assert (labels[0] == labels[1]).mean() > 0.999  # tiles equal the whole within float rounding
    assert "class" in whole.stdout and "wrote labels" in whole.stdout  # the task's report table


def test_segmentation_exports_to_onnx_at_a_fixed_size(segmentation_model, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from fcn_app.errors import ConversionError
    from fcn_app.export import export_onnx

    with pytest.raises(ConversionError) as refused:
        export_onnx(segmentation_model, tmp_path / "no_size.onnx")
    assert refused.value.option == "input_size" and not (tmp_path / "no_size.onnx").exists()
    path = export_onnx(segmentation_model, tmp_path / "seg.onnx", input_size=(70, 90))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    images = torch.randn(2, 3, 70, 90, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = segmentation_model(images)
    actual = session.run(None, {"images": images.numpy()})[0]
    assert_close_scaled(torch.from_numpy(actual), expected)
    metadata = session.get_modelmeta().custom_metadata_map
    assert metadata["dynamic"] == "false" and metadata["input_size"] == "[70, 90]"


def test_detect_on_a_segmentation_gives_the_regions_of_its_own_label_map(segmentation_model):
    """Region boxes: each detection's box is the bounding box of the hot region around its peak, recomputed here
    from the model's own forward pass (an independent path: torch forward, softmax, OpenCV components)."""
    import cv2

    from fcn_app.detect import DetectOptions, detect_objects

    image = random_rgb(90, 110, seed=11)
    options = DetectOptions(threshold_mode="absolute", threshold=0.5, min_score=0.0, nms_iou=1.0)
    detections = detect_objects(segmentation_model, image, options=options)
    with torch.no_grad():
        batch = normalize_pixels(image[None], segmentation_model.mean, segmentation_model.std).contiguous()
        probabilities = torch.softmax(segmentation_model(batch)[0], dim=0).numpy()
    assert detections and all(d.class_name != "background" for d in detections)
    for detection in detections:
        hot = (probabilities[detection.class_index] >= 0.5).astype(np.uint8)
        _, labels, stats, _ = cv2.connectedComponentsWithStats(hot, connectivity=8)
        left, top, width, height, _ = stats[labels[detection.peak[1], detection.peak[0]]]
        assert detection.box == (left, top, width, height)


@pytest.mark.slow
def test_cli_detect_and_export_take_a_checkpoint(tmp_path, segmentation_checkpoint):
    from PIL import Image

    image = tmp_path / "img.png"
    Image.fromarray(random_rgb(90, 110, seed=11)).save(image)
    detected = run_cli("detect", str(image), "--checkpoint", str(segmentation_checkpoint), "--out", str(tmp_path))
    assert detected.returncode == 0, detected.stderr
    assert (tmp_path / "img.detections.json").is_file() and (tmp_path / "detections.coco.json").is_file()
    exported = run_cli("export", "--checkpoint", str(segmentation_checkpoint), "--input-size", "64", "80",
                       "--out", str(tmp_path / "seg.onnx"))
    assert exported.returncode == 0 and (tmp_path / "seg.onnx").is_file(), exported.stderr
    assert_one_line(run_cli("export", "--checkpoint", str(segmentation_checkpoint), "--out", str(tmp_path / "x.onnx")),
                    2, "--input-size")
    assert_one_line(run_cli("detect", str(image), "--checkpoint", str(segmentation_checkpoint), "--stride", "16"),
                    2, "--stride")
