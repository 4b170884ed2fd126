"""Faithfulness metrics on constructed cases whose values are known in closed form.

The "model" is linear: its score is the sum of the pixel values times fixed weights. With a one-pixel-per-step
curve from an all-ones image to zeros, the deletion score after removing the ``k`` most salient pixels is
``T − Σ_{i≤k} w_(i)`` (``w_(i)``: weights in saliency order, ``T`` their sum), so the trapezoid area is
``(Σ_i i·w_(i) − T/2) / N``, and insertion's is ``(Σ_i (N − i + 1)·w_(i) − T/2) / N``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcn_app.metrics import (average_drop, deletion_curve, explanation_map_scores, increase_in_confidence,
                             insertion_curve, perturbation_order, pointing_game_accuracy, pointing_game_hit)


def linear_model(weights: np.ndarray):
    weight = torch.as_tensor(weights, dtype=torch.float64)

    def score(images: torch.Tensor) -> torch.Tensor:
        return (images.double() * weight).flatten(1).sum(dim=1)

    return score


@pytest.fixture(scope="module")
def weights() -> np.ndarray:
    return np.random.default_rng(0).random((5, 6))


def closed_form(weights: np.ndarray, saliency: np.ndarray) -> tuple[float, float]:
    ordered = weights.flatten()[np.argsort(-saliency.flatten(), kind="stable")]
    total, count = ordered.sum(), ordered.size
    position = np.arange(1, count + 1)
    return (float((position * ordered).sum() - total / 2) / count,
            float(((count - position + 1) * ordered).sum() - total / 2) / count)


@pytest.mark.parametrize("saliency_kind", ["true", "reversed", "random"])
def test_deletion_and_insertion_auc_of_a_linear_model_match_the_closed_form(weights, saliency_kind):
    saliency = {"true": weights, "reversed": -weights,
                "random": np.random.default_rng(1).random(weights.shape)}[saliency_kind]
    image = torch.ones(1, *weights.shape, dtype=torch.float64)
    pixels = weights.size
    deletion = deletion_curve(linear_model(weights), image, saliency, steps=pixels, batch_size=7)
    insertion = insertion_curve(linear_model(weights), image, saliency, baseline=torch.zeros_like(image),
                                steps=pixels, batch_size=7)
    expected_deletion, expected_insertion = closed_form(weights, saliency)
    assert deletion.auc == pytest.approx(expected_deletion, abs=1e-12)
    assert insertion.auc == pytest.approx(expected_insertion, abs=1e-12)
    assert deletion.auc + insertion.auc == pytest.approx(weights.sum(), abs=1e-12)  # complementary curves
    assert deletion.scores[0] == pytest.approx(weights.sum()) and deletion.scores[-1] == pytest.approx(0.0)


def test_the_true_weights_give_the_lowest_deletion_and_highest_insertion_auc(weights):
    image = torch.ones(1, *weights.shape, dtype=torch.float64)
    score = linear_model(weights)
    best = deletion_curve(score, image, weights, steps=weights.size).auc
    worst = deletion_curve(score, image, -weights, steps=weights.size).auc
    assert best < worst
    zeros = torch.zeros_like(image)
    assert insertion_curve(score, image, weights, baseline=zeros).auc > insertion_curve(
        score, image, -weights, baseline=zeros).auc


@pytest.mark.parametrize("steps", [1, 3, 10, 30])
def test_uniform_weights_give_half_the_total_at_any_step_count(steps):
    # equal weights: the score falls linearly in the fraction removed (pixel groups of any size) → AUC = T/2
    weights = np.full((5, 6), 1 / 30)
    image = torch.ones(1, 5, 6, dtype=torch.float64)
    saliency = np.random.default_rng(2).random((5, 6))
    assert deletion_curve(linear_model(weights), image, saliency, steps=steps).auc == pytest.approx(0.5, abs=1e-12)


def test_perturbations_are_scored_in_batches(weights):
    calls = []

    def score(images):
        calls.append(len(images))
        return linear_model(weights)(images)

    deletion_curve(score, torch.ones(1, *weights.shape), weights, steps=30, batch_size=8)
    assert calls == [8, 8, 8, 7]  # 31 images (0 … 30 pixels removed)


def test_perturbation_order_ranks_the_most_salient_first_and_ties_in_raster_order():
    rank = perturbation_order(np.array([[0.5, 0.9], [0.5, 0.1]]))
    assert rank.tolist() == [[1, 0], [2, 3]]


def test_average_drop_and_increase_in_confidence_on_a_linear_model():
    # two pixels weighted (1, −0.5), image (1, 1): Y = 0.5.
    score = linear_model(np.array([[1.0, -0.5]]))
    image = torch.ones(1, 1, 2, dtype=torch.float64)
    # map (1, 0) keeps the positive pixel only: O = 1 > Y (an increase, no drop);
    # map (0.5, 1): O = 0.5 − 0.5 = 0, a 100 % drop.
    full, masked = explanation_map_scores(score, [image, image], [np.array([[1.0, 0.0]]), np.array([[0.5, 1.0]])])
    np.testing.assert_allclose(full, [0.5, 0.5])
    np.testing.assert_allclose(masked, [1.0, 0.0])
    assert average_drop(full, masked) == pytest.approx(50.0)
    assert increase_in_confidence(full, masked) == pytest.approx(50.0)


def test_explanation_maps_with_a_baseline_blend_towards_it():
    score = linear_model(np.array([[1.0, 1.0]]))
    image, baseline = torch.full((1, 1, 2), 3.0), torch.full((1, 1, 2), 1.0)
    _, masked = explanation_map_scores(score, [image], [np.array([[0.5, 0.0]])], [baseline])
    assert masked[0] == pytest.approx((1 + 0.5 * 2) + 1)


def test_pointing_game_counts_a_peak_within_fifteen_pixels_as_a_hit():
    saliency = np.zeros((60, 80))
    saliency[20, 10] = 1.0  # peak at x = 10, y = 20
    assert pointing_game_hit(saliency, [(0, 0, 11, 21)])  # the box's last pixel is the peak
    assert pointing_game_hit(saliency, [(25, 20, 5, 5)])  # 15 px to the right
    assert not pointing_game_hit(saliency, [(26, 20, 5, 5)])  # 16 px
    assert pointing_game_hit(saliency, [(26, 20, 5, 5)], tolerance=16)
    assert pointing_game_hit(saliency, [(19, 32, 5, 5)])  # dx = 9, dy = 12: 15 px diagonally
    assert not pointing_game_hit(saliency, [(50, 50, 5, 5), (40, 0, 3, 3)])
    assert pointing_game_accuracy([True, False, True, True]) == 0.75


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="positive scores"):
        average_drop([0.0], [0.0])
    with pytest.raises(ValueError, match="does not match"):
        deletion_curve(lambda images: images.sum((1, 2, 3)), torch.ones(1, 4, 4), np.ones((3, 3)))
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        explanation_map_scores(lambda images: images.sum((1, 2, 3)), [torch.ones(1, 2, 2)], [np.full((2, 2), 2.0)])
