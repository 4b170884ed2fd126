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
from helpers_cli import assert_one_line_error, run_fcn, run_fcn_many

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


@pytest.mark.slow
def test_default_command_writes_an_overlay_the_size_of_the_photo(chelsea_run):
    result, out = chelsea_run
    assert result.returncode == 0, result.stderr
    photo = np.asarray(Image.open(EXAMPLES / "chelsea.jpg").convert("RGB"))
    picture = np.asarray(Image.open(out / "chelsea.heatmap.png"))
    assert picture.shape == photo.shape
    assert np.abs(picture.astype(int) - photo.astype(int)).mean() > 5  # a heatmap was blended in
    assert (out / "chelsea.grid.png").is_file() and not list(out.glob(".*.tmp"))


@pytest.mark.slow
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


@pytest.mark.slow
def test_saved_scores_carry_the_geometry(chelsea_run):
    _, out = chelsea_run
    scores = np.load(out / "chelsea.scores.npz")
    assert scores["logits"].shape == (1000, 3, 8)
    np.testing.assert_array_equal(scores["first_center"], [111.5, 111.5])
    assert scores["categories"][281] == "tabby"


@pytest.mark.slow
def test_human_output_and_class_selection(tmp_path):
    result = run_cli(str(EXAMPLES / "rocket.jpg"), "--out", str(tmp_path), "--class", "cat", "--class", "281")
    assert result.returncode == 0, result.stderr
    assert "cat" in result.stdout and "tabby" in result.stdout
    assert Image.open(tmp_path / "rocket.heatmap.png").size == (640, 427)  # PIL: (width, height)


@pytest.mark.slow
def test_help_shows_examples():
    result = run_cli("--help")
    assert result.returncode == 0 and "Examples" in result.stdout and "heatmap" in result.stdout


@pytest.mark.slow  # a subprocess or a training run: kept out of the quick loop
def test_usage_mistakes_are_one_line_on_stderr(tmp_path):
    """Caught before any model loads (cheap, so in the quick loop): our own check and click's option parsing."""
    missing, zero_topk = run_fcn_many([["missing.jpg"], [EXAMPLES / "chelsea.jpg", "--topk", "0"]])
    assert_one_line_error(missing, 2, "missing.jpg: no such file")
    assert_one_line_error(zero_topk, 2, "Invalid value for '--topk'")


@pytest.mark.slow
def test_user_mistakes_are_one_line_on_stderr_with_the_right_exit_code(tmp_path):
    chelsea = EXAMPLES / "chelsea.jpg"
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    cases = [
        ([chelsea, "--class", "tabbby", "--out", tmp_path / "a"], 2, "did you mean"),
        ([chelsea, "--colormap", "nope"], 2, "--colormap: unknown colormap"),
        ([chelsea, "--model", "resnet51"], 2, "unknown model 'resnet51'; did you mean resnet50"),
        ([EXAMPLES], 2, "--out: required"),
        ([EXAMPLES, "--out", tmp_path / "b", "--batch-size", "0"], 2, "Invalid value for '--batch-size'"),
        ([chelsea, "--no-such-option"], 2, "No such option: --no-such-option"),
        ([chelsea, "--out", tmp_path / "c", "--max-memory", "lots"], 2, "cannot read memory size"),
        ([chelsea, "--out", blocker], 3, "is a file"),
    ]
    for (args, code, message), result in zip(cases, run_fcn_many([args for args, _, _ in cases])):
        assert_one_line_error(result, code, message)
    assert blocker.read_text() == "keep me"
    assert [path.name for path in tmp_path.rglob("*") if path.is_file()] == ["taken"]  # no output written anywhere


@pytest.mark.slow
def test_offline_without_weights_exits_2_with_instructions(tmp_path):
    result = run_fcn(EXAMPLES / "chelsea.jpg", "--out", tmp_path, env={"TORCH_HOME": str(tmp_path / "th")})
    line = assert_one_line_error(result, 2)
    assert "vgg16-397923af.pth" in line and "--weights" in line
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.slow
def test_denser_stride_keeps_the_map_pixel_aligned(tmp_path):
    result = runner.invoke(app, ["heatmap", str(EXAMPLES / "chelsea.jpg"), "--out", str(tmp_path), "--stride", "16",
                                 "--max-side", "240", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "chelsea.json").read_text())
    assert summary["stride"] == [16.0, 16.0]
    # --max-side 240 gives 240×160; the 160 rows are padded by 32 px on top to the 224 window
    assert summary["geometry"]["first_center"] == [111.5 - 32, 111.5]  # cell 0 keeps its window centre
    assert summary["map_size"] == {"rows": 224 // 16 - 13, "cols": 240 // 16 - 13}


@pytest.mark.slow
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
