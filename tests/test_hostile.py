"""Hostile inputs through the real command: one clear line, the documented exit code, no traceback, no debris.

Uses AlexNet with seeded random weights (``--weights``) to keep the many runs fast; the code path is the same
as for the default VGG16.
"""

from __future__ import annotations

import pickle
import re

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from fcn_app.cli import app
from fcn_app.models import to_fully_convolutional
from fcn_app.tasks import HeatmapOptions, HeatmapTask
from fcn_app.render import COLORMAPS
from fcn_app.scoring import compute_score_map

from helpers import random_state_dict, tiny_classifier
from hostile_corpus import build_corpus

runner = CliRunner()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    return folder, {case.name: case for case in build_corpus(folder)}


@pytest.fixture(scope="module")
def alexnet_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "alexnet.pth"
    torch.save(random_state_dict("alexnet", seed=0), path)
    return path


def _invoke(*args):
    return runner.invoke(app, ["heatmap", *map(str, args)])


def _one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output
    return lines[0]


def test_corpus_has_at_least_25_cases(corpus):
    assert len(corpus[1]) >= 25


def test_every_hostile_file_is_refused_or_processed_correctly(corpus, alexnet_weights, tmp_path):
    folder, cases = corpus
    for name, case in cases.items():
        out = tmp_path / re.sub(r"\W", "_", name)
        result = _invoke(folder / name, "--out", out, "--model", "alexnet", "--weights", alexnet_weights, "--topk", "2")
        if case.ok:
            assert result.exit_code == 0, (name, result.output)
            stem = (folder / name).stem
            written = Image.open(out / f"{stem}.heatmap.png")
            with Image.open(folder / name) as original:
                expected = case.shape or (original.height, original.width)
            assert (written.height, written.width) == expected, name
        else:
            assert result.exit_code == 2, (name, result.output)
            line = _one_line_error(result.output)
            assert name in line and re.search(case.message, line), (name, line)
            assert not out.exists() or not any(out.iterdir()), f"{name}: debris left in {out}"


def test_verbose_shows_the_traceback(corpus):
    folder, _ = corpus
    result = _invoke(folder / "text.png", "--verbose")
    assert result.exit_code == 2 and "Traceback" in result.output


class _Exploit:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.parametrize("kind", ["text", "wrong-shapes", "pickle-with-code", "missing"])
def test_bad_weights_files(kind, tmp_path, corpus):
    folder, _ = corpus
    path = tmp_path / "weights.pth"
    if kind == "text":
        path.write_text("not weights")
        message = "not a PyTorch checkpoint"
    elif kind == "wrong-shapes":
        torch.save(random_state_dict("alexnet", seed=0), path)
        message = "does not fit vgg16"
    elif kind == "pickle-with-code":
        path.write_bytes(pickle.dumps({"features.0.weight": _Exploit()}))
        message = "refused|not a PyTorch checkpoint"
    else:
        path = tmp_path / "nope.pth"
        message = "not found|does not exist"
    result = _invoke(folder / "rgba.png", "--weights", path, "--out", tmp_path / "out")
    assert result.exit_code == 2, result.output
    assert re.search(message, result.output) and "code ran" not in result.output
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_output_locations_that_cannot_be_written(corpus, tmp_path):
    folder, _ = corpus
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for out in (blocker, blocker / "below-a-file", "/proc/fcn-heatmap-cannot-write-here"):
        result = _invoke(folder / "rgba.png", "--out", out)
        assert result.exit_code == 3, (out, result.output)
        _one_line_error(result.output)
    assert blocker.read_text() == "x"


_TINY = to_fully_convolutional(tiny_classifier(num_classes=4), input_size=32, categories=list("abcd"))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    height=st.integers(1, 90),
    width=st.integers(1, 90),
    mode=st.sampled_from(["RGB", "L", "RGBA", "LA", "P", "1", "I;16", "CMYK"]),
    topk=st.integers(1, 4),
    colormap=st.sampled_from(sorted(COLORMAPS)),
    alpha=st.floats(0.0, 1.0),
    grid=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_single_image_path_never_crashes(height, width, mode, topk, colormap, alpha, grid, seed):
    """Property: any size, aspect ratio, mode and option set → output the size of the input, heat in [0, 1]."""
    from fcn_app.io import to_rgb_array

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    image = image.convert("I;16") if mode == "I;16" else image.convert(mode)
    rgb = to_rgb_array(image)
    score_map = compute_score_map(_TINY, rgb)
    options = HeatmapOptions(topk=topk, colormap=colormap, alpha=alpha, grid=grid)
    rendered = HeatmapTask(_TINY, options).render(rgb, score_map, None)
    assert rendered.overlay.shape == (height, width, 3) and rendered.overlay.dtype == np.uint8
    for heat in rendered.heatmaps:
        assert heat.heatmap.shape == (height, width)
        assert 0.0 <= heat.heatmap.min() and heat.heatmap.max() <= 1.0
        assert 0 <= heat.peak_pixel[0] < width and 0 <= heat.peak_pixel[1] < height
