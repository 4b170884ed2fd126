"""End-to-end proof of the seed's idea: a classifier's heat, turned into boxes, finds real objects.

A features+Linear classifier is trained here on 32×32 crops of scikit-learn's bundled UCI digits plus a background
class (seeded, CPU), converted with the project's API, and run on generated scenes of several held-out digits at
known places. pycocotools must score AP50 ≥ 0.8 against those places.
"""

from __future__ import annotations

import pytest

from fcn_app.dense import densify
from fcn_app.coco import evaluate_detections, to_coco_results
from fcn_app.detect import DetectOptions, detect_objects
from fcn_app.models import to_fully_convolutional

from helpers_detect import CATEGORIES, WINDOW, make_scenes, scenes_ground_truth, train_digit_classifier


@pytest.fixture(scope="module")
def digit_network():
    classifier = train_digit_classifier(seed=0)
    return to_fully_convolutional(classifier, input_size=WINDOW, categories=CATEGORIES)


def test_digit_detection_reaches_ap50_0_8(digit_network):
    scenes = make_scenes(count=12, seed=1)
    truth = scenes_ground_truth(scenes)
    # The documented recipe: stride 4 (one pass, filter rarefaction), three pyramid scales, the classifier's
    # window at the surest scale, shrunk to the part of the window its training digits filled (26 of 32 px).
    network = densify(digit_network, stride=4)
    options = DetectOptions(threshold_mode="absolute", threshold=0.5, min_score=0.5, window_fill=26 / WINDOW)
    per_image = [
        (image_id, entry["file_name"], detect_objects(network, scene.image, scales=(0.9, 1.0, 1.1), options=options))
        for image_id, (scene, entry) in enumerate(zip(scenes, truth["images"]), start=1)
    ]
    metrics = evaluate_detections(to_coco_results(per_image), truth)
    assert metrics["AP50"] >= 0.8, metrics
    # and the raw heat-component box is the wrong box for a classifier's heat (it marks window centres)
    region = [(image_id, name, detect_objects(network, scenes[image_id - 1].image,
                                              options=DetectOptions(threshold_mode="absolute", box_mode="region")))
              for image_id, name, _ in per_image[:4]]
    small_truth = dict(truth, images=truth["images"][:4],
                       annotations=[a for a in truth["annotations"] if a["image_id"] <= 4])
    assert evaluate_detections(to_coco_results(region), small_truth)["AP50"] < 0.3

