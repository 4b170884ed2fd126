"""End-to-end proof of the seed's idea: a classifier's heat, turned into boxes, finds real objects.

A features+Linear classifier is trained here on 32×32 crops of scikit-learn's bundled UCI digits plus a background
class (seeded, CPU), converted with the project's API, and run on generated scenes of several held-out digits at
known places. Over three independent scene draws pycocotools must score AP50 ≥ 0.85 on average and ≥ 0.8 on
every draw (``scripts/bench_detect.py --draws 6`` prints the figure per draw).
"""

from __future__ import annotations

import pytest

from fcn_app.dense import densify
from fcn_app.coco import evaluate_detections
from fcn_app.detect import DetectOptions

from helpers_detect import (
    RECIPE_STRIDE,
    detect_scenes,
    make_scenes,
    scene_draw_metrics,
    scenes_ground_truth,
    trained_digit_fcn,
)

pytestmark = pytest.mark.slow  # trains a classifier (~15 s on a quiet 2-core CPU) and detects on 36 scenes

SCENE_DRAWS = (1, 2, 3)  # the first three scene seeds; the classifier itself is trained on seed 0


@pytest.fixture(scope="module")
def digit_network():
    return trained_digit_fcn(seed=0)


def test_digit_detection_ap50_over_several_scene_draws(digit_network):
    network = densify(digit_network, stride=RECIPE_STRIDE)
    ap50 = {seed: scene_draw_metrics(network, seed)["AP50"] for seed in SCENE_DRAWS}
    assert sum(ap50.values()) / len(ap50) >= 0.85, ap50
    assert min(ap50.values()) >= 0.8, ap50


def test_component_box_is_the_wrong_box_for_a_classifiers_heat(digit_network):
    """The raw heat-component box marks window centres, not objects."""
    scenes = make_scenes(count=4, seed=SCENE_DRAWS[0])
    truth = scenes_ground_truth(scenes)
    results = detect_scenes(densify(digit_network, stride=RECIPE_STRIDE), scenes, truth, scales=(1.0,),
                            options=DetectOptions(threshold_mode="absolute", box_mode="region"))
    assert evaluate_detections(results, truth)["AP50"] < 0.3
