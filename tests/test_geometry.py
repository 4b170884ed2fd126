"""Score-cell geometry: derived from layers, checked against gradients and against DESIGN.md's VGG16 numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fcn_app.geometry import (
    ScoreGeometry,
    centered_padding,
    interpolation_matrix,
    network_geometry,
    output_grid_size,
    upsample_to_pixels,
)
from fcn_app.models import to_fully_convolutional
from fcn_app.scoring import compute_score_map

from helpers import meta_classifier, one_hot_heats, random_rgb, tiny_classifier


def test_vgg16_geometry_matches_the_design_numbers():
    """DESIGN.md: cell i centred at 32·i + 111.5, window [32·i, 32·i + 224), receptive field 404 px."""
    network = to_fully_convolutional(meta_classifier("vgg16"))
    layers = network_geometry(network)
    assert layers.stride == (32, 32)
    assert layers.first_center == (111.5, 111.5)
    assert layers.receptive_field == (404, 404)
    pool5 = network_geometry(network.features)
    assert pool5.first_center == (15.5, 15.5) and pool5.receptive_field == (212, 212)
    geometry = ScoreGeometry.for_network(layers, (3, 3), network.input_size)
    assert geometry.window_box(0, 2) == (64.0, 0.0, 224.0, 224.0)


def _linear_probe_net() -> nn.Sequential:
    """Conv/avg-pool net without non-linearities and with positive weights: gradients show the exact support."""
    net = nn.Sequential(
        nn.Conv2d(1, 1, 3, padding=1), nn.AvgPool2d(2), nn.Conv2d(1, 1, 5, padding=1),
        nn.AvgPool2d(3, stride=2, padding=1), nn.Conv2d(1, 1, 3, dilation=2), nn.Conv2d(1, 1, 2),
    )
    for module in net:
        if isinstance(module, nn.Conv2d):
            nn.init.constant_(module.weight, 0.1)
            nn.init.zeros_(module.bias)
    return net


def test_geometry_equals_the_gradient_support_of_each_cell():
    """Independent path: which input pixels influence output cell (r, c) — their span is the receptive field
    (clipped by the image) and its centre is the cell centre."""
    net = _linear_probe_net()
    layers = network_geometry(net)
    image = torch.zeros(1, 1, 97, 83, requires_grad=True)
    output = net(image)
    assert tuple(output.shape[2:]) == output_grid_size(net, (97, 83))
    for row, col in [(2, 3), (output.shape[2] - 3, output.shape[3] - 3)]:
        image.grad = None
        output[0, 0, row, col].backward(retain_graph=True)
        ys, xs = torch.nonzero(image.grad[0, 0] != 0, as_tuple=True)
        center_y = layers.first_center[0] + layers.stride[0] * row
        center_x = layers.first_center[1] + layers.stride[1] * col
        half = (layers.receptive_field[0] - 1) / 2
        assert ys.min().item() == max(0, center_y - half) and ys.max().item() == min(96, center_y + half)
        assert xs.min().item() == max(0, center_x - half) and xs.max().item() == min(82, center_x + half)


@pytest.mark.parametrize("size", [(40, 40), (100, 37), (451, 300), (61, 200)])
def test_output_grid_size_matches_running_the_layers(size):
    net = _linear_probe_net()
    with torch.no_grad():
        assert tuple(net(torch.zeros(1, 1, *size)).shape[2:]) == output_grid_size(net, size)


@pytest.mark.parametrize("image_size, grid", [((300, 451), (3, 8)), ((224, 224), (1, 1)), ((400, 600), (6, 12)),
                                              ((640, 427), (14, 7))])
def test_one_hot_cell_peaks_at_its_window_centre(image_size, grid):
    layers = network_geometry(to_fully_convolutional(meta_classifier("vgg16")))
    geometry = ScoreGeometry.for_network(layers, grid, (224, 224))
    for row, col, heat, peaks in one_hot_heats(geometry, image_size):
        # the maximum may be a plateau (clamped beyond the outermost centres): it must include the centre
        expected_y = min(32 * row + 111.5, image_size[0] - 1)
        expected_x = min(32 * col + 111.5, image_size[1] - 1)
        distance = np.abs(peaks - np.array([expected_y, expected_x])).max(axis=1)
        assert distance.min() <= 1, (row, col, peaks[:3])
        if grid == (1, 1):
            assert heat.min() == heat.max() == 1.0
        assert heat.max() <= 1.0 and heat.min() >= 0.0


def test_interpolation_is_linear_between_centres_and_clamped_outside():
    matrix = interpolation_matrix(num_pixels=100, num_cells=3, first_center=10.0, stride=32.0).numpy()
    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(matrix[:11], np.tile([1.0, 0.0, 0.0], (11, 1)))  # up to the first centre
    np.testing.assert_allclose(matrix[26], [0.5, 0.5, 0.0], rtol=0, atol=1e-6)  # half-way: 10 + 16
    np.testing.assert_array_equal(matrix[74:], np.tile([0.0, 0.0, 1.0], (26, 1)))  # beyond the last centre (74)


def test_small_images_are_padded_centred_not_stretched():
    assert centered_padding((100, 300), (224, 224)) == (62, 62, 0, 0)
    network = to_fully_convolutional(tiny_classifier(num_classes=3), input_size=32)
    image = random_rgb(20, 50)
    score_map = compute_score_map(network, image)
    assert score_map.geometry.grid == (1, 3)
    # the single row of cells is centred on the image's centre row: padding was 6 px on top
    assert score_map.geometry.first_center[0] == network_geometry(network).first_center[0] - 6
    assert score_map.image_size == (20, 50)


def test_scaled_geometry_maps_pyramid_levels_back():
    geometry = ScoreGeometry((2, 2), (32.0, 32.0), (111.5, 111.5), (224.0, 224.0), (404.0, 404.0))
    half = geometry.scaled(0.5)  # computed on an image half the size
    assert half.stride == (64.0, 64.0) and half.window == (448.0, 448.0)
    assert half.first_center == (223.5, 223.5)
