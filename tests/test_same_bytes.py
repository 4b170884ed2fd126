"""Same settings, same bytes: with DEFAULT settings (no ``--backend``, no ``--precision``, and neither pinned through
the environment, which ``conftest.py`` does for the rest of the suite) an image's outputs written by the command for
one image and by a folder run have the same bytes, for ``fcn-heatmap`` and ``fcn-heatmap detect``.

Before the commands shared one backend choice (``fcn_app.runtimes.command_backend``), ``auto`` meant torch for one
image and OpenVINO for a folder where it is installed: ``.scores.npz`` differed by up to 7e-7 and the JSON named
another runtime."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from fcn_app.runtimes import BACKEND_ENV
from fcn_app.scoring import PRECISION_ENV

from helpers import random_rgb
from helpers_cli import cli_environment

pytestmark = pytest.mark.slow  # four commands, each importing torch


def default_environment() -> dict[str, str]:
    """The command's environment with no backend or precision pinned: ``auto`` means what a user gets."""
    environment = cli_environment()
    for pin in (BACKEND_ENV, PRECISION_ENV):
        environment.pop(pin, None)
    return environment


def run_commands(commands: list[list[str]]) -> None:
    """The commands two at a time (each spends most of its life importing torch); each must exit 0."""
    environment = default_environment()
    for start in range(0, len(commands), 2):
        running = [subprocess.Popen([sys.executable, "-m", "fcn_app", *command], stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, env=environment)
                   for command in commands[start:start + 2]]
        for command, process in zip(commands[start:start + 2], running):
            stdout, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, f"{command}\n--- stdout\n{stdout}--- stderr\n{stderr}"


def outputs_of(folder: Path, stem: str) -> dict[str, bytes]:
    """Every file written for the image ``stem`` (not the run's summary, gallery or COCO list), by name."""
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())
            if path.is_file() and path.name.startswith(f"{stem}.")}


def test_default_settings_give_an_image_the_same_bytes_alone_and_in_a_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    image = folder / "cat.png"
    Image.fromarray(random_rgb(72, 96, seed=11)).save(image)
    Image.fromarray(random_rgb(56, 40, seed=12)).save(folder / "neighbour.png")  # the folder holds more than it
    model = ["--model", "helpers_batch:tiny_fcn"]
    heatmap = ["--grid", "--save-scores", "--json", *model]
    detect = ["detect", "--min-score", "0", *model]
    run_commands([
        [str(image), "--out", str(tmp_path / "heatmap-alone"), *heatmap],
        [str(folder), "--out", str(tmp_path / "heatmap-folder"), *heatmap],
        [*detect[:1], str(image), "--out", str(tmp_path / "detect-alone"), *detect[1:]],
        [*detect[:1], str(folder), "--out", str(tmp_path / "detect-folder"), *detect[1:]],
    ])

    for command, kinds, summary in (("heatmap", {".heatmap.png", ".grid.png", ".scores.npz", ".json"}, "cat.json"),
                                    ("detect", {".detections.png", ".detections.json"}, "cat.detections.json")):
        alone = outputs_of(tmp_path / f"{command}-alone", "cat")
        in_folder = outputs_of(tmp_path / f"{command}-folder", "cat")
        assert {name[len("cat"):] for name in alone} >= kinds, (command, sorted(alone))
        assert sorted(in_folder) == sorted(alone), command
        for name, content in alone.items():
            assert in_folder[name] == content, f"{command}: {name} differs alone and in a folder"
        runtime = json.loads(alone[summary])["runtime"]
        assert runtime["backend"] == "torch", runtime  # what auto means for the image commands
