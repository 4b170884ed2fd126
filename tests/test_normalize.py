"""``--normalize minmax|peak|none`` (issue 25, item 9): how a class map becomes colours.

``none`` (the default) colours probabilities 0 → 1, comparable across classes and images; ``peak`` spans 0 → the
map's own peak (what the old bare ``--normalize`` flag did); ``minmax`` maps the map's minimum to 0 and its maximum
to 1, as pytorch-grad-cam and torch-cam scale their maps, so a nearly flat map still shows where it is higher.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import fcn_app.tasks.heatmap as heatmap_module
from fcn_app.choices import NORMALIZE_MODES, check_normalize
from fcn_app.cli import app
from fcn_app.errors import OptionError
from fcn_app.render import normalize_heat
from fcn_app.tasks import HeatmapOptions

from helpers import random_rgb
from test_cli_startup import one_line, run_in_one_process

TINY = ["--model", "helpers_batch:tiny_fcn", "--device", "cpu"]
#: A 3×5 map (non-square) from 0.2 to 0.6, with a flat last row.
HEAT = np.array([[0.2, 0.3, 0.4, 0.5, 0.6],
                 [0.6, 0.5, 0.4, 0.3, 0.2],
                 [0.4, 0.4, 0.4, 0.4, 0.4]], dtype=np.float32)


def test_minmax_maps_the_minimum_to_0_and_the_maximum_to_1():
    expected = [[0.0, 0.25, 0.5, 0.75, 1.0],
                [1.0, 0.75, 0.5, 0.25, 0.0],
                [0.5, 0.5, 0.5, 0.5, 0.5]]
    colours = normalize_heat(HEAT, "minmax")
    assert colours.dtype == np.float32 and colours.shape == (3, 5)
    np.testing.assert_allclose(colours, expected, rtol=0, atol=1e-6)
    assert colours.min() == 0.0 and colours.max() == 1.0


def test_peak_divides_by_the_maximum_and_none_keeps_probabilities():
    expected = [[1 / 3, 1 / 2, 2 / 3, 5 / 6, 1.0],
                [1.0, 5 / 6, 2 / 3, 1 / 2, 1 / 3],
                [2 / 3, 2 / 3, 2 / 3, 2 / 3, 2 / 3]]
    np.testing.assert_allclose(normalize_heat(HEAT, "peak"), expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(normalize_heat(HEAT, "none"), HEAT)
    assert HEAT[0, 0] == np.float32(0.2)  # the input is left as it was


@pytest.mark.parametrize("value", [0.0, 0.37])
def test_a_constant_map_is_all_zeros_under_minmax_never_nan(value):
    flat = np.full((3, 5), value, np.float32)
    np.testing.assert_array_equal(normalize_heat(flat, "minmax"), np.zeros((3, 5), np.float32))
    assert not np.isnan(normalize_heat(flat, "peak")).any()


def test_modes_are_checked_and_the_former_flag_still_means_peak():
    assert NORMALIZE_MODES == ("none", "peak", "minmax")
    assert check_normalize(" MinMax ") == "minmax"
    assert check_normalize(True) == "peak" and check_normalize(False) == "none"  # the former bool option
    assert HeatmapOptions(normalize=True).normalize == "peak"
    with pytest.raises(OptionError, match=r"unknown value 'photo.jpg'; choose none, peak or minmax") as raised:
        HeatmapOptions(normalize="photo.jpg")
    assert raised.value.option == "normalize"
    with pytest.raises(OptionError):
        normalize_heat(HEAT, "max")


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(random_rgb(48, 80, seed=4)).save(path)
    return path


@pytest.fixture
def overlaid(monkeypatch) -> list[np.ndarray]:
    """The heat the command hands to the renderer's overlay, per panel."""
    heats: list[np.ndarray] = []
    original = heatmap_module.overlay

    def recording(image, heat, **kwargs):
        heats.append(np.array(heat))
        return original(image, heat, **kwargs)

    monkeypatch.setattr(heatmap_module, "overlay", recording)
    return heats


@pytest.mark.parametrize("mode", ["none", "peak", "minmax"])
def test_the_option_reaches_the_renderer(mode, photo, overlaid, tmp_path):
    args = ["heatmap", str(photo), *TINY, "--topk", "1", "--out", str(tmp_path / "out")]
    result = CliRunner().invoke(app, args + ([] if mode == "none" else ["--normalize", mode]))
    assert result.exit_code == 0, result.output
    (heat,) = overlaid
    if mode == "minmax":
        assert heat.min() == 0.0 and heat.max() == 1.0
    elif mode == "peak":
        assert heat.min() > 0.0 and heat.max() == pytest.approx(1.0, abs=1e-6)
    else:  # probabilities of a random 5-class network: well below 1
        assert 0.0 < heat.max() < 0.99


def test_an_unknown_value_is_one_line_and_exit_2(photo, tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["heatmap", str(photo), *TINY, "--normalize", "max", "--out", str(out)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "--normalize: unknown value 'max'; choose none, peak or minmax" in lines[0]
    assert not out.exists()


def test_a_bad_value_is_refused_before_torch_loads_even_the_former_bare_flag(photo, tmp_path):
    answered = run_in_one_process([["--normalize", str(photo), *TINY], [str(photo), "--normalize", "max", *TINY]],
                                  tmp_path)
    assert answered["heavy"] == []
    former, misspelt = (one_line(run) for run in answered["runs"])
    assert all(run["code"] == 2 for run in answered["runs"]), answered
    assert former == (f"error: --normalize: unknown value '{photo}'; choose none, peak or minmax (peak is what the "
                      "former on/off switch did)")
    assert misspelt.startswith("error: --normalize: unknown value 'max'; choose none, peak or minmax")
