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
from helpers_cli import assert_one_line_error, run_fcn_many
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


def test_corpus_has_at_least_25_cases(corpus):
    assert len(corpus[1]) >= 25


@pytest.mark.slow
def test_every_odd_but_valid_file_is_processed_at_its_own_size(corpus, alexnet_weights, tmp_path):
    folder, cases = corpus
    for name, case in cases.items():
        if not case.ok:
            continue
        out = tmp_path / re.sub(r"\W", "_", name)
        result = _invoke(folder / name, "--out", out, "--model", "alexnet", "--weights", alexnet_weights, "--topk", "2")
        assert result.exit_code == 0, (name, result.output)
        stem = (folder / name).stem
        written = Image.open(out / f"{stem}.heatmap.png")
        with Image.open(folder / name) as original:
            expected = case.shape or (original.height, original.width)
        assert (written.height, written.width) == expected, name


@pytest.mark.slow
def test_every_hostile_file_is_refused_in_one_line_by_the_real_command(corpus, alexnet_weights, tmp_path):
    folder, cases = corpus
    refused = [case for case in cases.values() if not case.ok]
    outs = [tmp_path / re.sub(r"\W", "_", case.name) for case in refused]
    results = run_fcn_many([[folder / case.name, "--out", out, "--model", "alexnet", "--weights", alexnet_weights]
                            for case, out in zip(refused, outs)])
    for case, out, result in zip(refused, outs, results):
        line = assert_one_line_error(result, 2)
        assert case.name in line and re.search(case.message, line), (case.name, line)
        assert not out.exists() or not any(out.iterdir()), f"{case.name}: debris left in {out}"


def test_verbose_shows_the_traceback(corpus):
    folder, _ = corpus
    result = _invoke(folder / "text.png", "--verbose")
    assert result.exit_code == 2 and "Traceback" in result.output


class _Exploit:
    def __reduce__(self):
        return (print, ("code ran",))


@pytest.mark.slow
def test_bad_weights_files_are_one_line(tmp_path, corpus):
    folder, _ = corpus
    text, wrong_shapes, exploit = tmp_path / "text.pth", tmp_path / "alexnet.pth", tmp_path / "exploit.pth"
    text.write_text("not weights")
    torch.save(random_state_dict("alexnet", seed=0), wrong_shapes)
    exploit.write_bytes(pickle.dumps({"features.0.weight": _Exploit()}))
    cases = [
        (text, "not a PyTorch checkpoint"),
        (wrong_shapes, "does not fit vgg16"),
        (exploit, "refused|not a PyTorch checkpoint"),
        (tmp_path / "nope.pth", "not found|does not exist"),
    ]
    results = run_fcn_many([[folder / "rgba.png", "--weights", path, "--out", tmp_path / "out"] for path, _ in cases])
    for (path, message), result in zip(cases, results):
        line = assert_one_line_error(result, 2)
        assert re.search(message, line), (path.name, line)
        assert "code ran" not in result.stdout + result.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.slow
def test_output_locations_that_cannot_be_written(corpus, tmp_path):
    folder, _ = corpus
    blocker = tmp_path / "file"
    blocker.write_text("x")
    places = [blocker, blocker / "below-a-file", "/proc/fcn-heatmap-cannot-write-here"]
    for out, result in zip(places, run_fcn_many([[folder / "rgba.png", "--out", out] for out in places])):
        assert_one_line_error(result, 3)
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
