"""The real command, end to end, with the default weights path served from the pre-filled TORCH_HOME."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fcn_app.cli import app

from helpers import EXAMPLES

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "fcn_app", *args], capture_output=True, text=True, env=environment, timeout=300
    )


@pytest.fixture(scope="module")
def chelsea_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    result = run_cli(str(EXAMPLES / "chelsea.jpg"), "--out", str(out), "--json", "--grid", "--save-scores")
    return result, out


def test_default_command_writes_an_overlay_the_size_of_the_photo(chelsea_run):
    result, out = chelsea_run
    assert result.returncode == 0, result.stderr
    photo = np.asarray(Image.open(EXAMPLES / "chelsea.jpg").convert("RGB"))
    picture = np.asarray(Image.open(out / "chelsea.heatmap.png"))
    assert picture.shape == photo.shape
    assert np.abs(picture.astype(int) - photo.astype(int)).mean() > 5  # a heatmap was blended in
    assert (out / "chelsea.grid.png").is_file() and not list(out.glob(".*.tmp"))


def test_json_summary_is_printed_and_written(chelsea_run):
    result, out = chelsea_run
    printed = json.loads(result.stdout)
    written = json.loads((out / "chelsea.json").read_text())
    assert printed["classes"] == written["classes"]
    assert written["image_size"] == {"width": 451, "height": 300}
    assert written["map_size"] == {"rows": 3, "cols": 8} and written["stride"] == [32.0, 32.0]
    assert len(written["classes"]) == 3
    for entry in written["classes"]:
        assert 0.0 < entry["peak_probability"] <= 1.0
        assert 0 <= entry["peak_pixel"]["x"] < 451 and 0 <= entry["peak_pixel"]["y"] < 300
    peaks = [entry["peak_probability"] for entry in written["classes"]]
    assert peaks == sorted(peaks, reverse=True)


def test_saved_scores_carry_the_geometry(chelsea_run):
    _, out = chelsea_run
    scores = np.load(out / "chelsea.scores.npz")
    assert scores["logits"].shape == (1000, 3, 8)
    np.testing.assert_array_equal(scores["first_center"], [111.5, 111.5])
    assert scores["categories"][281] == "tabby"


def test_human_output_and_class_selection(tmp_path):
    result = run_cli(str(EXAMPLES / "rocket.jpg"), "--out", str(tmp_path), "--class", "cat", "--class", "281")
    assert result.returncode == 0, result.stderr
    assert "cat" in result.stdout and "tabby" in result.stdout
    assert Image.open(tmp_path / "rocket.heatmap.png").size == (640, 427)  # PIL: (width, height)


def test_help_shows_examples():
    result = run_cli("--help")
    assert result.returncode == 0 and "Examples" in result.stdout and "heatmap" in result.stdout


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["missing.jpg"], 2, "no such file"),
        ([str(EXAMPLES / "chelsea.jpg"), "--class", "tabbby"], 2, "did you mean"),
        ([str(EXAMPLES / "chelsea.jpg"), "--colormap", "nope"], 2, "unknown --colormap"),
        ([str(EXAMPLES / "chelsea.jpg"), "--model", "resnet51"], 2, "unknown model 'resnet51'; did you mean resnet50"),
        ([str(EXAMPLES)], 2, "--out OUT is required"),
    ],
)
def test_user_mistakes_are_one_line_without_traceback(args, code, message):
    result = runner.invoke(app, ["heatmap", *args])
    assert result.exit_code == code, result.output
    assert message in result.output and "Traceback" not in result.output


def test_offline_without_weights_exits_2_with_instructions(tmp_path):
    result = run_cli(str(EXAMPLES / "chelsea.jpg"), "--out", str(tmp_path), env={"TORCH_HOME": str(tmp_path / "th")})
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "vgg16-397923af.pth" in lines[0] and "--weights" in lines[0]
    assert not list(tmp_path.glob("*.png"))


def test_output_folder_that_is_a_file_exits_3(tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    result = runner.invoke(app, ["heatmap", str(EXAMPLES / "chelsea.jpg"), "--out", str(target)])
    assert result.exit_code == 3 and "is a file" in result.output
    assert target.read_text() == "keep me"


def test_denser_stride_keeps_the_map_pixel_aligned(tmp_path):
    result = runner.invoke(app, ["heatmap", str(EXAMPLES / "chelsea.jpg"), "--out", str(tmp_path), "--stride", "16",
                                 "--max-side", "240", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "chelsea.json").read_text())
    assert summary["stride"] == [16.0, 16.0]
    # --max-side 240 gives 240×160; the 160 rows are padded by 32 px on top to the 224 window
    assert summary["geometry"]["first_center"] == [111.5 - 32, 111.5]  # cell 0 keeps its window centre
    assert summary["map_size"] == {"rows": 224 // 16 - 13, "cols": 240 // 16 - 13}


def test_a_small_memory_budget_tiles_exactly(tmp_path):
    """--max-memory forces exact tiling (with a progress bar); the summary equals the untiled run's."""
    whole = runner.invoke(app, ["heatmap", str(EXAMPLES / "rocket.jpg"), "--out", str(tmp_path / "a"), "--json",
                                 "--max-side", "320"])
    tiled = runner.invoke(app, ["heatmap", str(EXAMPLES / "rocket.jpg"), "--out", str(tmp_path / "b"), "--json",
                                "--max-side", "320", "--max-memory", "24M"])
    assert whole.exit_code == 0 and tiled.exit_code == 0, tiled.output
    first = json.loads((tmp_path / "a" / "rocket.json").read_text())
    second = json.loads((tmp_path / "b" / "rocket.json").read_text())
    assert [c["name"] for c in first["classes"]] == [c["name"] for c in second["classes"]]
    for a, b in zip(first["classes"], second["classes"]):
        assert a["peak_pixel"] == b["peak_pixel"]
        assert a["peak_probability"] == pytest.approx(b["peak_probability"], abs=1e-5)
    bad = runner.invoke(app, ["heatmap", str(EXAMPLES / "rocket.jpg"), "--out", str(tmp_path / "c"),
                              "--max-memory", "lots"])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
