"""``--method cam`` is class activation mapping (Zhou et al. 2016): the class's fc weights over the last feature map,
placed by the derived geometry, min–max scaled like the other saliency maps.

Second paths: torchcam's ``CAM`` on the original torchvision ResNet-18 (same layer, same class, same input), and a
hand-written CAM (the body's features, ``einsum`` with the fc weight) for the tiny pooled classifier. The per-cell
*probability* of the same one-cell windows stays ``--window 1`` with the default method.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fcn_app.errors import OptionError
from fcn_app.geometry import upsample_to_pixels
from fcn_app.heatmaps import ClassSelection, heatmap_for_class, min_max_scaled
from fcn_app.method_registry import get_method
from fcn_app.methods import class_activation_map, method_heatmap, method_network
from fcn_app.models.graph import convert_graph_classifier, with_window
from fcn_app.scoring import compute_score_map, prepare_batch
from fcn_app.tasks import HeatmapOptions, HeatmapTask, process_image
from helpers import random_rgb
from helpers_methods import POOLED_CATEGORIES, tiny_pooled_classifier, tiny_pooled_fcn

pytestmark = pytest.mark.usefixtures("one_thread")

#: CAM of the same network by two paths: float32 sums in another order, so agreement is to a fraction of the range.
MIN_CORRELATION = 0.999
SCALED_ATOL = 1e-4  # on maps scaled to [0, 1]


def _correlation(first, second) -> float:
    first, second = np.asarray(first, np.float64).ravel(), np.asarray(second, np.float64).ravel()
    return float(np.corrcoef(first, second)[0, 1])


def _smooth_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A picture with structure at several scales (blurred noise), so the CAM has something to point at."""
    generator = torch.Generator().manual_seed(seed)
    noise = torch.rand(1, 3, height // 8 + 1, width // 8 + 1, generator=generator)
    pixels = F.interpolate(noise, size=(height, width), mode="bicubic", align_corners=False)[0]
    return (pixels.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()


def test_only_cam_and_grad_cam_methods_are_scaled_per_map():
    assert [name for name in ("fcn", "cam", "GradCAM") if get_method(name).min_max_scaled] == ["cam", "GradCAM"]


def test_min_max_scaling_spans_zero_to_one_and_a_flat_map_is_zero():
    np.testing.assert_array_equal(min_max_scaled(np.array([[2.0, 4.0], [3.0, 6.0]])),
                                  np.array([[0.0, 0.5], [0.25, 1.0]], np.float32))
    np.testing.assert_array_equal(min_max_scaled(np.full((2, 3), 7.0)), np.zeros((2, 3), np.float32))


def test_cam_equals_the_fc_weights_over_the_features_by_hand():
    """Tiny pooled classifier (features → global average pool → Linear): CAM written out by hand — the body's
    feature map, ``einsum`` with the class's row of the fc weight — min–max scaled on the feature grid and placed by
    the same geometry, equals ``--method cam``'s map; the grid before scaling is CAM plus the class's bias."""
    network, classifier = tiny_pooled_fcn(), tiny_pooled_classifier()
    image = random_rgb(44, 60, seed=4)
    class_index = 2
    score_map = compute_score_map(method_network(network, "cam"), image, precision="fp32", backend="torch")
    pixels = torch.from_numpy(image).permute(2, 0, 1).float().div(255.0)[None]
    with torch.no_grad():
        features = classifier[:6]((pixels - 0.5) / 0.25)[0]  # 12×11×15: the body, up to the global pool
        by_hand = torch.einsum("c,chw->hw", classifier[8].weight[class_index], features)
    assert score_map.geometry.grid == tuple(by_hand.shape)
    scale = float(by_hand.abs().max())
    torch.testing.assert_close(score_map.logits[class_index], by_hand + classifier[8].bias[class_index],
                               rtol=1e-4, atol=1e-5 * scale)
    expected = upsample_to_pixels(torch.from_numpy(min_max_scaled(by_hand.numpy())), score_map.geometry,
                                  image.shape[:2]).numpy()
    ours = class_activation_map(score_map, ClassSelection(POOLED_CATEGORIES[class_index], (class_index,)))
    np.testing.assert_allclose(ours.heatmap, expected, rtol=0, atol=SCALED_ATOL)
    assert _correlation(ours.heatmap, expected) >= MIN_CORRELATION
    assert ours.heatmap.min() >= 0.0 and ours.heatmap.max() <= 1.0
    heat, _, cells = method_heatmap(network, image, "cam", ours.selection)  # compare's path draws the same map
    np.testing.assert_array_equal(heat, ours.heatmap)
    assert cells == score_map.geometry


def test_the_cam_task_draws_cam_and_window_one_keeps_the_per_cell_probability(tmp_path):
    """``--method cam`` draws CAM with the class's probability on its surest cell beside it (JSON, table, legend);
    the per-cell probability of the same one-cell windows is ``--window 1`` with the default method."""
    network = tiny_pooled_fcn()
    image = random_rgb(40, 56, seed=6)
    cam = HeatmapTask(network, HeatmapOptions(method="cam", classes=["dog"], write_json=True))
    rendered, written = process_image(cam, image, tmp_path / "cam", source="a.png")
    score_map = compute_score_map(with_window(network, 1), image, precision="fp32", backend="torch")
    selection = ClassSelection("dog", (2,))
    expected = class_activation_map(score_map, selection)
    np.testing.assert_allclose(rendered.heatmaps[0].heatmap, expected.heatmap, rtol=0, atol=1e-6)
    assert rendered.heatmaps[0].peak_pixel == expected.peak_pixel
    window = HeatmapTask(with_window(network, 1), HeatmapOptions(classes=["dog"]))
    window_rendered, _ = process_image(window, image, tmp_path / "window", source="a.png")
    np.testing.assert_allclose(window_rendered.heatmaps[0].heatmap, heatmap_for_class(score_map, selection).heatmap,
                               rtol=0, atol=1e-6)
    assert _correlation(window_rendered.heatmaps[0].heatmap, expected.heatmap) < MIN_CORRELATION  # not the same map
    summary = json.loads(written["json"].read_text())
    probability = float(score_map.probabilities()[2].max())
    assert summary["method"] == "cam" and summary["classes"][0]["window_probability"] == pytest.approx(probability,
                                                                                                      abs=1e-6)
    assert summary["map_size"] == {"rows": score_map.geometry.grid[0], "cols": score_map.geometry.grid[1]}
    report = cam.report(rendered)
    assert report.columns[2] == "window prob" and report.rows[0][2] == f"{probability:.3f}"


def test_cam_saves_the_per_cell_logits_and_detect_boxes_the_per_cell_probability(tmp_path):
    """``--save-scores`` with cam writes the one-cell windows' logits (CAM plus the bias); ``detect --method cam``
    boxes what ``detect --window 1`` boxes: the per-cell probabilities."""
    from fcn_app.detect import DetectOptions
    from fcn_app.tasks import DetectionTask

    network = tiny_pooled_fcn()
    image = random_rgb(40, 56, seed=8)
    cam = HeatmapTask(network, HeatmapOptions(method="cam", save_scores=True))
    _, written = process_image(cam, image, tmp_path / "cam", source="a.png")
    score_map = compute_score_map(with_window(network, 1), image, precision="fp32", backend="torch")
    np.testing.assert_allclose(np.load(written["scores"])["logits"], score_map.logits.numpy(), rtol=0, atol=1e-6)
    options = DetectOptions(min_score=0.0)
    by_method = DetectionTask(network, options=options, method="cam").predict([image])[0]
    by_window = DetectionTask(with_window(network, 1), options=options).predict([image])[0]
    assert by_method and [(box.class_index, box.box, box.score) for box in by_method] == [
        (box.class_index, box.box, box.score) for box in by_window]


def test_cam_maps_are_not_fused_across_scales():
    with pytest.raises(OptionError, match="cam scales each class's map") as raised:
        HeatmapOptions(method="cam", scales="1,2")
    assert raised.value.option == "scales"


@pytest.mark.slow
def test_cam_matches_torchcams_cam_on_a_resnet18():
    """ResNet-18 with seeded random weights, a 200×264 picture, layer4 and the top class: the grid before scaling
    is torchcam's raw CAM plus the fc bias; scaled, it is torchcam's CAM; upsampled identically (our geometry, or
    bilinear resizing as torchcam's Score-CAM resizes) the maps correlate ≥ 0.999; the peak is the centre of
    torchcam's hottest cell. (torchcam's ``overlay_mask`` stretches the grid over the picture with PIL's bicubic
    resize, which places cells half a cell off the derived geometry — a placement choice, compared here apart.)"""
    from torchcam.methods import CAM
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = resnet18(weights=None).eval()
    network = convert_graph_classifier(model, input_size=224, categories=[f"class {i}" for i in range(1000)],
                                       mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    image = _smooth_rgb(200, 264, seed=1)
    cam_network = method_network(network, "cam")
    score_map = compute_score_map(cam_network, image, precision="fp32", backend="torch")
    batch, padding = prepare_batch(cam_network, [image])
    assert padding == (0, 0, 0, 0)  # the network saw the picture itself
    with CAM(model, target_layer="layer4", fc_layer="fc") as extractor:
        with torch.no_grad():
            logits = model(batch.contiguous())
        class_index = int(logits[0].argmax())
        raw = extractor(class_index, logits, normalized=False)[0][0]
        theirs = extractor(class_index, logits)[0][0]
    assert score_map.geometry.grid == tuple(theirs.shape) == (7, 9)
    cam_logits = score_map.logits[class_index]
    torch.testing.assert_close(cam_logits, raw + model.fc.bias[class_index].detach(), rtol=1e-4,
                               atol=1e-5 * float(raw.abs().max()))
    cells = min_max_scaled(cam_logits.numpy())
    np.testing.assert_allclose(cells, theirs.numpy(), rtol=0, atol=SCALED_ATOL)
    assert _correlation(cells, theirs) >= MIN_CORRELATION

    ours = class_activation_map(score_map, ClassSelection(network.categories[class_index], (class_index,)))
    size = image.shape[:2]
    same_placement = upsample_to_pixels(theirs, score_map.geometry, size).numpy()
    assert _correlation(ours.heatmap, same_placement) >= MIN_CORRELATION
    np.testing.assert_allclose(ours.heatmap, same_placement, rtol=0, atol=SCALED_ATOL)
    resized = [F.interpolate(torch.as_tensor(grid)[None, None].float(), size=size, mode="bilinear",
                             align_corners=False)[0, 0] for grid in (cells, theirs)]
    assert _correlation(*resized) >= MIN_CORRELATION

    row, col = divmod(int(theirs.argmax()), theirs.shape[1])
    center_x, center_y = score_map.geometry.cell_center(row, col)
    assert abs(ours.peak_pixel[0] - np.clip(center_x, 0, size[1] - 1)) < 1
    assert abs(ours.peak_pixel[1] - np.clip(center_y, 0, size[0] - 1)) < 1
