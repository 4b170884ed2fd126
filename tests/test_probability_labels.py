"""Probabilities read the same everywhere (issue 25, item 7): a legend, a detection's box label, a class panel and
the printed table all write a probability with :func:`fcn_app.text.format_probability`, so a peak of 0.003 is
"0.003" on the picture as in the table and the JSON — never "0.00".

The strings drawn are captured where the pictures ink their text (:func:`fcn_app.render.ink_text`), so the test
sees exactly what the renderer was given.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

import fcn_app.render as render_module
from fcn_app.detect import Detection
from fcn_app.geometry import ScoreGeometry
from fcn_app.render import draw_detections
from fcn_app.scoring import ScoreMap
from fcn_app.tasks import DetectionTask, HeatmapOptions, HeatmapTask, SegmentationTask
from fcn_app.text import format_probability
from helpers_batch import TINY_CATEGORIES, tiny_fcn

PEAK = 0.003
#: A 90×170 picture under 3×5 cells (non-square, unequal strides).
GEOMETRY = ScoreGeometry(grid=(3, 5), stride=(30.0, 37.0), first_center=(14.5, 10.0), window=(60.0, 74.0),
                         receptive_field=(90.0, 111.0))
SIZE = (90, 170)


@pytest.mark.parametrize("value, text", [
    (0.003, "0.003"), (0.001, "0.001"), (0.0049, "0.005"), (0.91234, "0.912"), (1.0, "1.000"), (0.0, "0.000"),
    (0.00042, "0.00042"), (0.0000123, "1.2e-05"), (0.0009996, "0.001"), (1.0000001, "1.000"),
])
def test_format_probability_keeps_small_values_readable(value, text):
    assert format_probability(value) == text


def test_format_probability_refuses_what_is_not_a_probability():
    for bad in (-0.1, 1.5, math.nan):
        with pytest.raises(ValueError, match="probability"):
            format_probability(bad)


@pytest.fixture
def inked(monkeypatch) -> list[str]:
    """Every string the renderer inks onto a picture."""
    texts: list[str] = []
    original = render_module.ink_text

    def recording(image, text, *args, **kwargs):
        texts.append(text)
        return original(image, text, *args, **kwargs)

    monkeypatch.setattr(render_module, "ink_text", recording)
    return texts


def _score_map_peaking_at(probability: float, target: int = 1) -> ScoreMap:
    """Every cell gives class ``target`` exactly ``probability`` (class 0 takes the rest, the others e⁰ each)."""
    others = len(TINY_CATEGORIES) - 2
    logits = torch.zeros(len(TINY_CATEGORIES), *GEOMETRY.grid, dtype=torch.float64)
    logits[0] = math.log(1.0 / probability - 1.0 - others)
    return ScoreMap(logits.float(), GEOMETRY, SIZE, list(TINY_CATEGORIES))


def test_a_heatmap_legend_grid_table_and_json_show_the_same_small_peak(inked):
    name = TINY_CATEGORIES[1]
    task = HeatmapTask(tiny_fcn(), HeatmapOptions(classes=[name], grid=True, write_json=True))
    rendered = task.render(np.zeros((*SIZE, 3), np.uint8), _score_map_peaking_at(PEAK), "small.png")
    assert rendered.heatmaps[0].peak_probability == pytest.approx(PEAK, abs=1e-6)
    assert inked == [f"1. {name}  0.003"] * 2  # the overlay's legend and the grid's panel
    assert task.report(rendered).rows[0][2] == "0.003"
    peak = json.loads(json.dumps(rendered.summary))["classes"][0]["peak_probability"]
    assert format_probability(peak) == "0.003"


def test_a_detection_box_label_table_and_json_show_the_same_small_score(inked):
    detection = Detection("dog", 2, PEAK, (10.0, 20.0, 40.0, 30.0), (30, 35), 1.0)
    draw_detections(np.zeros((80, 120, 3), np.uint8), [detection])
    assert inked == ["dog 0.003"]
    task = DetectionTask(tiny_fcn())
    rendered = task.render(np.zeros((80, 120, 3), np.uint8), [detection], "small.png")
    assert task.report(rendered).rows[0][1] == "0.003"
    assert format_probability(json.loads(json.dumps(rendered.summary))["detections"][0]["score"]) == "0.003"


def test_a_segmentation_class_panel_and_table_show_the_same_small_peak(inked):
    pixels = ScoreGeometry(grid=(30, 40), stride=(1.0, 1.0), first_center=(0.0, 0.0), window=(1.0, 1.0),
                           receptive_field=(1.0, 1.0))
    logits = torch.zeros(3, 30, 40)
    logits[0] = math.log(1.0 / PEAK - 2.0)  # class 0 everywhere; class 1 and 2 at exactly PEAK
    task = SegmentationTask(None, HeatmapOptions(classes=["cat"]))
    rendered = task.render(np.zeros((30, 40, 3), np.uint8), ScoreMap(logits, pixels, (30, 40), ["bg", "cat", "car"]),
                           None)
    assert "cat  max 0.003" in inked
    assert task.report(rendered).rows == [["cat", "0.0%", "0.003"]]


def test_the_compare_table_title_shows_the_same_small_probability():
    from fcn_app.heatmaps import ClassSelection
    from fcn_app.tasks.compare import Comparison

    comparison = Comparison(ClassSelection("dog", (2,)), PEAK, [], (32, 32))
    assert "(p 0.003 on its surest window)" in comparison.report("a.png").title
    assert format_probability(comparison.to_dict()["window_probability"]) == "0.003"
