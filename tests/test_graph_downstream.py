"""A graph network (ResNet-18, seeded random weights) through the commands downstream of the conversion: an image
pyramid (``--scales``), a folder run and ``detect`` — with ``--window`` meaning on ``detect`` what it means on
``heatmap``. In-process (typer's runner) and tiny images, so the network loads once for the module."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from fcn_app.cli import app

from helpers import random_rgb, random_state_dict

pytestmark = [pytest.mark.usefixtures("one_thread"), pytest.mark.slow]  # the first call converts and probes ResNet-18


@pytest.fixture(scope="module")
def resnet_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("resnet18") / "resnet18_random.pth"
    torch.save(random_state_dict("resnet18", seed=3), path)
    return path


def _run(*args) -> str:
    result = CliRunner().invoke(app, [str(arg) for arg in args], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    return result.output


def _image(path, height, width, seed):
    Image.fromarray(random_rgb(height, width, seed=seed)).save(path)
    return path


def test_pyramid_heatmap_of_a_graph_network(tmp_path, resnet_weights):
    image = _image(tmp_path / "photo.png", 224, 256, seed=1)
    _run("heatmap", image, "--model", "resnet18", "--weights", resnet_weights, "--scales", "0.75,1.25",
         "--out", tmp_path / "out", "--json")
    summary = json.loads((tmp_path / "out" / "photo.json").read_text())
    assert (tmp_path / "out" / "photo.heatmap.png").is_file()
    assert summary["scales"] == [0.75, 1.25] and len(summary["levels"]) == 2


def test_folder_run_of_a_graph_network(tmp_path, resnet_weights):
    folder = tmp_path / "photos"
    folder.mkdir()
    for index in range(2):
        _image(folder / f"p{index}.png", 200, 232, seed=index + 5)
    _run("heatmap", folder, "--model", "resnet18", "--weights", resnet_weights, "--out", tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["counts"] == {"ok": 2, "skipped": 0, "failed": 0, "pending": 0}


def test_detect_with_a_graph_network_and_its_window(tmp_path, resnet_weights):
    image = _image(tmp_path / "scene.png", 224, 288, seed=9)
    args = ("detect", image, "--model", "resnet18", "--weights", resnet_weights, "--min-score", "0",
            "--box-mode", "window", "--class", "0")
    _run(*args, "--out", tmp_path / "native")
    _run(*args, "--window", "1", "--out", tmp_path / "cam")
    native = json.loads((tmp_path / "native" / "scene.detections.json").read_text())
    cam = json.loads((tmp_path / "cam" / "scene.detections.json").read_text())
    # the training window is 7 feature cells (224 px); --window 1 scores single cells: one 32-px stride each
    assert native["detections"] and cam["detections"]
    assert max(box["box"][2] for box in native["detections"]) > 200
    assert all(0 < box["box"][2] <= 32 and 0 < box["box"][3] <= 32 for box in cam["detections"])  # ≤: clipped
    assert cam["window"] == 1
