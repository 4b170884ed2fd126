"""``fcn-heatmap detect`` through the command line, judged against ground truth the detector never saw.

The quality tests write digit scenes (``helpers_detect``: held-out digits pasted at known places) as PNG files plus
COCO ground truth, run the real command on the folder with a classifier trained here, and score the written
``detections.coco.json`` with pycocotools; ``--masks`` RLE is decoded and compared with the heat mask recomputed
in the test. The path tests (one image, ``--class``, resume, ``--shard``, hostile files) use the tiny network
of ``helpers_batch``, milliseconds per image.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from fcn_app.batch import SUMMARY_NAME, rank_summary_path
from fcn_app.cli import app
from fcn_app.dense import densify
from fcn_app.coco import evaluate_detections
from fcn_app.io import atomic_write_png, load_image
from fcn_app.pyramid import fuse_levels, score_pyramid

from helpers_batch import TINY_CATEGORIES, make_image_folder
from helpers_detect import (
    BACKGROUND,
    DIGIT_WEIGHTS_ENV,
    RECIPE_OPTIONS,
    RECIPE_SCALES,
    RECIPE_STRIDE,
    detect_scenes,
    make_scenes,
    scenes_ground_truth,
    trained_digit_fcn,
    trained_digit_state,
)
from hostile_corpus import build_corpus

REPO = Path(__file__).resolve().parent.parent
SUBPROCESS_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))
DIGITS = "helpers_detect:digit_fcn_from_weights"
TINY = "helpers_batch:tiny_fcn"
RECIPE_ARGS = [
    "--stride", str(RECIPE_STRIDE), "--scales", ",".join(map(str, RECIPE_SCALES)),
    "--threshold-mode", RECIPE_OPTIONS.threshold_mode, "--threshold", str(RECIPE_OPTIONS.threshold),
    "--min-score", str(RECIPE_OPTIONS.min_score), "--window-fill", repr(RECIPE_OPTIONS.window_fill),
]
# Tiny random network: Otsu with no score floor finds components on any map, so every image has detections.
TINY_ARGS = ["--model", TINY, "--threshold-mode", "otsu", "--min-score", "0", "--device", "cpu"]

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, ["detect", *map(str, args)])


def _outputs(folder: Path) -> dict[str, bytes]:
    return {path.relative_to(folder).as_posix(): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and not path.name.startswith("summary")}


def _iou(a, b) -> float:
    width = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    height = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    return width * height / (a[2] * a[3] + b[2] * b[3] - width * height)


# --- quality against independent ground truth ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_scenes(tmp_path_factory):
    """12 scenes written as PNGs whose names sort in the reverse of the order they were made (and of their GT ids)."""
    folder = tmp_path_factory.mktemp("digit_scenes")
    scenes = make_scenes(count=12, seed=1)
    names = [f"{chr(ord('l') - index)}_scene.png" for index in range(len(scenes))]
    for scene, name in zip(scenes, names):
        atomic_write_png(folder / name, scene.image)
    truth = scenes_ground_truth(scenes, names)
    (folder.parent / "digit_truth.json").write_text(json.dumps(truth))
    return folder, scenes, truth


@pytest.fixture(scope="module")
def digit_weights(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("digit_weights") / "digits.pt"
    torch.save(trained_digit_state(seed=0), path)
    return path


@pytest.fixture(scope="module")
def digit_run(digit_scenes, digit_weights, tmp_path_factory) -> Path:
    """The real command in its own process, on the folder of scenes."""
    folder, _, _ = digit_scenes
    out = tmp_path_factory.mktemp("digit_boxes")
    completed = subprocess.run(
        [sys.executable, "-m", "fcn_app", "detect", str(folder), "--out", str(out), "--model", DIGITS,
         *RECIPE_ARGS, "--masks", "--device", "cpu"],
        env=dict(SUBPROCESS_ENV, **{DIGIT_WEIGHTS_ENV: str(digit_weights)}), capture_output=True, text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    return out


@pytest.mark.slow
def test_cli_detections_score_against_pasted_digits(digit_scenes, digit_run):
    folder, scenes, truth = digit_scenes
    results = json.loads((digit_run / "detections.coco.json").read_text())
    metrics = evaluate_detections(digit_run / "detections.coco.json", folder.parent / "digit_truth.json")
    assert metrics["AP50"] >= 0.8, metrics
    evaluated = runner.invoke(app, ["evaluate-detections", str(digit_run / "detections.coco.json"),
                                    str(folder.parent / "digit_truth.json"), "--json"])
    assert evaluated.exit_code == 0 and json.loads(evaluated.stdout) == metrics, evaluated.output
    # image_id = position in the sorted input listing, which is not the order the GT numbers the images in
    sorted_names = sorted(path.name for path in folder.iterdir())
    assert {(entry["file_name"], entry["image_id"]) for entry in results} == {
        (name, sorted_names.index(name) + 1) for name in {entry["file_name"] for entry in results}}
    assert {entry["file_name"] for entry in results} == set(sorted_names)
    # the command gives what the Python API gives on the same pixels
    api_results = detect_scenes(densify(trained_digit_fcn(seed=0), RECIPE_STRIDE), scenes, truth)
    by_name = {image["id"]: image["file_name"] for image in truth["images"]}
    assert sorted((by_name[entry["image_id"]], entry["category_id"], entry["bbox"], entry["score"])
                  for entry in api_results) == sorted(
        (entry["file_name"], entry["category_id"], entry["bbox"], entry["score"]) for entry in results)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools under numpy 2
def test_cli_masks_are_the_thresholded_heat_components(digit_scenes, digit_run):
    from pycocotools import mask as mask_utils

    folder, _, _ = digit_scenes
    network = densify(trained_digit_fcn(seed=0), RECIPE_STRIDE)
    results = json.loads((digit_run / "detections.coco.json").read_text())
    checked = 0
    for name in sorted(path.name for path in folder.iterdir())[:4]:
        detections = json.loads((digit_run / f"{Path(name).stem}.detections.json").read_text())["detections"]
        assert detections, name
        image = load_image(folder / name)
        classes = list(range(BACKGROUND))  # what detect looks for without --class: every digit
        fused = fuse_levels(score_pyramid(network, image, RECIPE_SCALES), classes, mode="max")
        for detection in detections:
            heat = fused.probabilities[classes.index(detection["class_index"])]
            components, _ = ndimage.label(heat >= RECIPE_OPTIONS.threshold, structure=np.ones((3, 3)))
            peak_x, peak_y = detection["peak"]["x"], detection["peak"]["y"]
            expected = components == components[peak_y, peak_x]
            decoded = mask_utils.decode(detection["mask"]).astype(bool)
            assert decoded.shape == image.shape[:2]
            np.testing.assert_array_equal(decoded, expected, err_msg=f"{name}: {detection['class_name']}")
            checked += 1
        coco_masks = [entry["segmentation"] for entry in results if entry["file_name"] == name]
        assert coco_masks == [detection["mask"] for detection in detections]
    assert checked >= 4


@pytest.mark.slow
def test_cli_one_image_with_class_finds_that_digit(digit_scenes, digit_weights, tmp_path, monkeypatch):
    folder, scenes, truth = digit_scenes
    monkeypatch.setenv(DIGIT_WEIGHTS_ENV, str(digit_weights))
    name = truth["images"][0]["file_name"]
    wanted = str(scenes[0].labels[0])
    result = _invoke(folder / name, "--out", tmp_path, "--model", DIGITS, *RECIPE_ARGS, "--class", wanted,
                     "--device", "cpu")
    assert result.exit_code == 0, result.output
    stem = Path(name).stem
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "detections.coco.json", f"{stem}.detections.json", f"{stem}.detections.png"]
    detections = json.loads((tmp_path / f"{stem}.detections.json").read_text())["detections"]
    assert detections and {detection["class_name"] for detection in detections} == {wanted}
    for box, label in zip(scenes[0].boxes, scenes[0].labels):
        if str(label) == wanted:
            assert max(_iou(detection["box"], box) for detection in detections) >= 0.5, (box, detections)
    results = json.loads((tmp_path / "detections.coco.json").read_text())
    assert {(entry["image_id"], entry["file_name"]) for entry in results} == {(1, name)}
    with Image.open(tmp_path / f"{stem}.detections.png") as drawn:
        assert (drawn.height, drawn.width) == scenes[0].image.shape[:2]


# --- paths: one image, resume, shards, hostile files ---------------------------------------------------------------


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("detect_inputs") / "photos"
    return root, make_image_folder(root)


@pytest.fixture(scope="module")
def reference_run(image_folder, tmp_path_factory) -> Path:
    root, _ = image_folder
    out = tmp_path_factory.mktemp("detect_reference")
    result = _invoke(root, "-r", "--out", out, *TINY_ARGS)
    assert result.exit_code == 1, result.output  # the three bad files
    return out


def test_one_image_without_out_writes_next_to_it_and_looks_only_for_the_class(tmp_path):
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(image)
    result = _invoke(image, *TINY_ARGS, "--class", "dog")
    assert result.exit_code == 0, result.output
    detections = json.loads((tmp_path / "photo.detections.json").read_text())["detections"]
    assert detections and {detection["class_name"] for detection in detections} == {"dog"}
    results = json.loads((tmp_path / "detections.coco.json").read_text())
    assert {(entry["image_id"], entry["file_name"], entry["category_id"]) for entry in results} == {
        (1, "photo.png", TINY_CATEGORIES.index("dog") + 1)}
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.slow  # folder runs start a decode worker process
def test_rerun_skips_complete_outputs_and_redoes_missing_ones(image_folder, reference_run, tmp_path):
    root, files = image_folder
    assert _invoke(root, "-r", "--out", tmp_path, *TINY_ARGS).exit_code == 1
    first = _outputs(tmp_path)
    assert first == _outputs(reference_run)
    (tmp_path / "rgb_03.detections.json").unlink()  # one incomplete image
    result = _invoke(root, "-r", "--out", tmp_path, *TINY_ARGS)
    assert result.exit_code == 1, result.output
    assert f"skipping {len(files['good']) - 1} inputs" in result.output
    rows = {row["path"]: row["status"] for row in json.loads((tmp_path / SUMMARY_NAME).read_text())["inputs"]}
    assert rows["rgb_03.png"] == "ok" and rows["rgb_00.png"] == "skipped"
    assert _outputs(tmp_path) == first  # byte-identical, detections.coco.json included


@pytest.mark.slow  # folder runs start a decode worker process
def test_shards_together_equal_one_run(image_folder, reference_run, tmp_path):
    root, _ = image_folder
    for index in range(2):
        assert _invoke(root, "-r", "--out", tmp_path, *TINY_ARGS, "--shard", f"{index}/2").exit_code == 1
    ranks = [{row["path"] for row in json.loads(rank_summary_path(tmp_path, rank).read_text())["inputs"]
              if row["status"] != "pending"} for rank in range(2)]
    assert ranks[0] and ranks[1] and not ranks[0] & ranks[1]
    # the last shard to finish merges the summaries and writes the COCO results of the whole job
    assert _outputs(tmp_path) == _outputs(reference_run)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    return folder, {case.name: case for case in build_corpus(folder)}


@pytest.mark.slow  # folder runs start a decode worker process
def test_hostile_folder_bad_files_fail_their_row_good_outputs_complete(corpus, tmp_path):
    folder, cases = corpus
    result = _invoke(folder, "--out", tmp_path, *TINY_ARGS, "--topk", "2")
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    summary = json.loads((tmp_path / SUMMARY_NAME).read_text())
    rows = {row["path"]: row for row in summary["inputs"]}
    assert set(rows) == set(cases)
    for name, case in cases.items():
        row = rows[name]
        stem = Path(name).stem
        if case.ok:
            assert row["status"] == "ok", (name, row)
            assert json.loads((tmp_path / f"{stem}.detections.json").read_text())["image"]
            with Image.open(tmp_path / f"{stem}.detections.png") as drawn, Image.open(folder / name) as original:
                assert (drawn.height, drawn.width) == (case.shape or (original.height, original.width)), name
        else:
            assert row["status"] == "failed", (name, row)
            assert "\n" not in row["reason"] and re.search(case.message, row["reason"]), (name, row["reason"])
            assert not list(tmp_path.glob(f"{stem}.detections.*")), name
    assert not list(tmp_path.rglob("*.tmp"))
    # image ids count every input in sorted order, failed ones included
    order = [row["path"] for row in summary["inputs"]]
    results = json.loads((tmp_path / "detections.coco.json").read_text())
    found = {entry["file_name"] for entry in results}
    assert found and found <= {name for name, case in cases.items() if case.ok}  # flat images have no components
    assert all(entry["image_id"] == order.index(entry["file_name"]) + 1 for entry in results)


def test_hostile_single_files_one_line_exit_2(corpus, tmp_path):
    folder, cases = corpus
    for name, case in cases.items():
        if case.ok:
            continue
        out = tmp_path / re.sub(r"\W", "_", name)
        result = _invoke(folder / name, "--out", out, *TINY_ARGS)
        assert result.exit_code == 2, (name, result.output)
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in result.output, (name, result.output)
        assert name in lines[0] and re.search(case.message, lines[0]), (name, lines[0])
        assert not out.exists() or not any(out.iterdir()), f"{name}: debris left in {out}"


@pytest.mark.slow  # a fresh Python importing torch
def test_hostile_file_in_a_subprocess_one_line_on_stderr(corpus, tmp_path):
    folder, _ = corpus
    completed = subprocess.run(
        [sys.executable, "-m", "fcn_app", "detect", str(folder / "truncated.png"), "--out", str(tmp_path),
         *TINY_ARGS], env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=120)
    assert completed.returncode == 2, completed.stderr
    assert completed.stdout == "" and "Traceback" not in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1 and "truncated.png" in completed.stderr
