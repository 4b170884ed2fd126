"""Choosing classes and turning score maps into per-pixel probabilities."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fcn_app.errors import ClassSelectionError, OptionError
from fcn_app.geometry import ScoreGeometry
from fcn_app.heatmaps import class_heatmaps, heatmap_for_class, resolve_classes, top_classes
from fcn_app.models import default_weights
from fcn_app.scoring import ScoreMap

CATEGORIES = default_weights("vgg16").meta["categories"]


def test_exact_names_are_case_insensitive_and_indices_work():
    assert resolve_classes(["Tabby"], CATEGORIES)[0].indices == (281,)
    assert resolve_classes(["281"], CATEGORIES)[0].name == "tabby"
    assert resolve_classes(["tiger cat"], CATEGORIES)[0].indices == (282,)


def test_a_word_selects_every_class_containing_it():
    selection = resolve_classes(["cat"], CATEGORIES)[0]
    names = {CATEGORIES[index] for index in selection.indices}
    assert {"tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"} <= names
    assert "polecat" not in names and "catamaran" not in names  # whole words only


def test_unknown_names_list_close_matches():
    with pytest.raises(ClassSelectionError, match="did you mean.*tabby"):
        resolve_classes(["tabbby"], CATEGORIES)
    with pytest.raises(ClassSelectionError, match="out of range"):
        resolve_classes(["1000"], CATEGORIES)


def _score_map(logits: torch.Tensor, image_size=(300, 451)) -> ScoreMap:
    grid = tuple(logits.shape[1:])
    geometry = ScoreGeometry(grid, (32.0, 32.0), (111.5, 111.5), (224.0, 224.0), (404.0, 404.0))
    return ScoreMap(logits, geometry, image_size, [f"class {i}" for i in range(logits.shape[0])])


def test_top_classes_rank_by_peak_probability_and_sums_select_several():
    logits = torch.zeros(4, 3, 8)
    logits[2, 1, 5] = 6.0  # class 2 peaks strongly at one cell
    logits[1] = 1.0  # class 1 is mildly everywhere
    score_map = _score_map(logits)
    assert [selection.indices for selection in top_classes(score_map, 2)] == [(2,), (1,)]
    heat = heatmap_for_class(score_map, top_classes(score_map, 1)[0])
    assert heat.peak_pixel == (32 * 5 + 111, 32 * 1 + 111) or heat.peak_pixel == (32 * 5 + 112, 32 * 1 + 112)
    probabilities = torch.softmax(logits, dim=0)
    expected_peak = probabilities[2, 1, 5].item()
    # centres sit between pixels (x.5): the pixel peak is a blend with neighbours up to half a pixel away
    assert expected_peak * (1 - 1 / 32) <= heat.peak_probability <= expected_peak
    everything = resolve_classes(["class"], score_map.categories)[0]
    total = heatmap_for_class(score_map, everything).heatmap
    np.testing.assert_allclose(total, 1.0, rtol=0, atol=1e-5)  # probabilities of all classes sum to 1


def test_heatmaps_are_image_sized_probabilities():
    torch.manual_seed(0)
    score_map = _score_map(torch.randn(10, 3, 8) * 3)
    for heat in class_heatmaps(score_map, topk=3):
        assert heat.heatmap.shape == (300, 451)
        assert 0.0 <= heat.heatmap.min() and heat.heatmap.max() <= 1.0
    with pytest.raises(OptionError, match="at least 1") as refused:
        top_classes(score_map, 0)
    assert refused.value.option == "topk"


def test_normalize_spans_the_colormap_up_to_each_class_peak():
    from fcn_app.tasks import HeatmapOptions, HeatmapTask
    from fcn_app.render import colorize

    torch.manual_seed(0)
    score_map = _score_map(torch.randn(10, 3, 8))
    image = np.zeros((300, 451, 3), np.uint8)
    plain = HeatmapTask(None, HeatmapOptions(topk=1, alpha=1.0, colormap="jet")).render(image, score_map, None)
    scaled = HeatmapTask(None, HeatmapOptions(topk=1, alpha=1.0, colormap="jet", normalize=True)).render(
        image, score_map, None)
    heat = plain.heatmaps[0]
    assert heat.peak_probability < 0.9
    keep = np.ones((300, 451), bool)  # away from the legend (top left) and the peak's marker
    keep[:120, :] = False
    keep[heat.peak_pixel[1] - 20 : heat.peak_pixel[1] + 21, heat.peak_pixel[0] - 20 : heat.peak_pixel[0] + 21] = False
    np.testing.assert_array_equal(plain.overlay[keep], colorize(heat.heatmap, "jet")[keep])
    np.testing.assert_array_equal(scaled.overlay[keep], colorize(heat.heatmap / heat.peak_probability, "jet")[keep])
    assert scaled.summary == plain.summary  # display only; the numbers are unchanged
