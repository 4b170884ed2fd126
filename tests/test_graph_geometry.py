"""Geometry of graph networks, measured from the network (NaN probes) and checked against independent paths:
the layer-walk recurrences on a sequential net, numbers derived by hand from torchvision's ResNet definition, and
the gradient support of feature cells in a linearised copy (activations removed, max pools made average pools,
so every structural connection carries a nonzero gradient)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import fx, nn

from fcn_app.geometry import ScoreGeometry, network_geometry, output_grid_size, upsample_to_pixels
from fcn_app.models.convert import convert_classifier
from fcn_app.models.graph import _without_global_gates, densify_graph, probe_body_geometry, with_window
from fcn_app.models.zoo import _drop_auxiliary_heads, _materialise, build_classifier
from fcn_app.tiling import activation_bytes

from helpers import one_hot_heats, random_state_dict, tiny_classifier


pytestmark = pytest.mark.usefixtures("one_thread")  # shared machines: one torch thread


def _seeded(arch: str) -> nn.Module:
    with torch.device("meta"):
        model = build_classifier(arch)
    return _drop_auxiliary_heads(_materialise(model, random_state_dict(arch), "seeded"), arch).eval()


def _grid_of(body: nn.Module):
    shapes_only = copy.deepcopy(body).to("meta")

    def grid(size):
        try:
            shape = shapes_only(torch.empty(1, 3, *size, device="meta")).shape
        except RuntimeError:  # smaller than one cell
            return 0, 0
        return int(shape[2]), int(shape[3])
    return grid


def test_probe_equals_the_layer_walk_on_a_sequential_net():
    features = tiny_classifier()[:9]  # 3 conv blocks, stride 8
    walked = network_geometry(features)
    measured = probe_body_geometry(features, 3, _grid_of(features))
    assert measured.stride == walked.stride
    assert measured.first_center == walked.first_center
    assert measured.receptive_field == walked.receptive_field


def test_resnet18_geometry_matches_its_layer_definitions():
    """By hand from torchvision's ResNet: conv1 7×7/2 pad 3 and maxpool 3×3/2 pad 1 centre cell 0 on pixel 0.
    Field: 7 + 2·2 (maxpool) + 4·(2·4) (layer1) + [2·4 + 3·(2·8)] + [2·8 + 3·(2·16)] + [2·16 + 3·(2·32)] = 435
    (each 3×3 conv adds 2 × the stride it reads at; the first conv of a stage reads at the finer one). The 7×7
    window pool at 224 adds 3·32 to the centre and 6·32 to the field."""
    network = convert_classifier(_seeded("resnet18"), input_size=224)
    assert network.window == (7, 7)
    body = network.body_geometry()
    assert body.stride == (32, 32) and body.first_center == (0.0, 0.0) and body.receptive_field == (435, 435)
    layers = network_geometry(network)  # dispatches to the measured geometry
    assert layers.stride == (32, 32) and layers.first_center == (96.0, 96.0)
    assert layers.receptive_field == (627, 627)


@pytest.mark.parametrize("size", [(300, 451)] + [pytest.param(size, marks=pytest.mark.slow)
                                                  for size in ((224, 224), (255, 256), (256, 288))])
def test_output_grid_size_matches_running_a_graph_network(size):
    network = convert_classifier(_seeded("resnet18"), input_size=224)
    with torch.no_grad():
        assert tuple(network(torch.zeros(1, 3, *size)).shape[2:]) == output_grid_size(network, size)
    assert activation_bytes(network, size) > 0


@pytest.mark.slow
def test_activation_values_are_traced_once_per_size_and_a_denser_copy_traces_its_own():
    network = convert_classifier(_seeded("resnet18"), input_size=224)
    traced, trace = [], network._traced_activation_values
    network._traced_activation_values = lambda size: traced.append(size) or trace(size)
    first = network.activation_values((224, 288))
    assert network.activation_values((224, 288)) == first == trace((224, 288)) and traced == [(224, 288)]
    assert network.activation_values((256, 256)) == trace((256, 256)) and traced == [(224, 288), (256, 256)]
    dense = densify_graph(network, 16)  # the same layers at stride 16: larger feature maps late in the body
    assert dense.activation_values((224, 288)) == dense._traced_activation_values((224, 288)) >= first


def _linearised(body: nn.Module) -> fx.GraphModule:
    body = _without_global_gates(body)
    for name, module in list(body.named_modules()):
        replacement = None
        if isinstance(module, (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid)):
            replacement = nn.Identity()
        elif isinstance(module, nn.MaxPool2d):
            replacement = nn.AvgPool2d(module.kernel_size, module.stride, module.padding, module.ceil_mode)
        if replacement is not None:
            parent, _, child = name.rpartition(".")
            setattr(body.get_submodule(parent) if parent else body, child, replacement)
    return body.double()


def _gradient_support(body: nn.Module, length: int, thin: int, cell: int) -> tuple[int, int]:
    image = torch.randn(1, 3, length, thin, dtype=torch.float64, requires_grad=True)
    output = body(image)
    output[0, :, cell, :].sum().backward()
    rows = torch.nonzero(image.grad[0].abs().sum(dim=(0, 2)) != 0).flatten()
    return int(rows.min()), int(rows.max())


@pytest.mark.parametrize("arch", [
    "resnet18", pytest.param("mobilenet_v3_small", marks=pytest.mark.slow), pytest.param("squeezenet1_1", marks=pytest.mark.slow),
    pytest.param("convnext_tiny", marks=pytest.mark.slow), pytest.param("efficientnet_b0", marks=pytest.mark.slow),
    pytest.param("resnet50", marks=pytest.mark.slow), pytest.param("mobilenet_v3_large", marks=pytest.mark.slow),
])
def test_measured_geometry_equals_gradient_support_of_feature_cells(arch):
    """Rows read by feature cell j are exactly ``[c + s·j − (R−1)/2, c + s·j + (R−1)/2]`` clipped to the image."""
    network = convert_classifier(_seeded(arch), input_size=224)
    body = network.body_geometry()
    stride, center, field = body.stride[0], body.first_center[0], body.receptive_field[0]
    half = (field - 1) / 2
    linear = _linearised(network.features)
    thin = 32
    length = int(center + half) + 3 * stride + 1  # cell 1's last row lies inside; its first row is clipped at 0
    for cell in (1, 2):
        first, last = _gradient_support(linear, length, thin, cell)
        assert last == min(length - 1, center + stride * cell + half), (arch, cell)
        assert first == max(0, center + stride * cell - half), (arch, cell)
    if network.global_context:
        assert arch.startswith(("mobilenet_v3", "efficientnet"))


@pytest.mark.parametrize("arch, image_size", [
    ("resnet18", (300, 451)), pytest.param("mobilenet_v3_small", (640, 427), marks=pytest.mark.slow)])
def test_one_hot_cell_peaks_at_its_measured_centre(arch, image_size):
    """As for VGG16: a one-hot score grid upsampled to pixels peaks on the cell's centre ``c₀ + s·i``."""
    network = convert_classifier(_seeded(arch), input_size=224)
    layers = network_geometry(network)
    grid = output_grid_size(network, image_size)
    geometry = ScoreGeometry.for_network(layers, grid, (224, 224))
    for row, col, _, peaks in one_hot_heats(geometry, image_size):
        expected = np.array([min(max(layers.first_center[0] + layers.stride[0] * row, 0), image_size[0] - 1),
                             min(max(layers.first_center[1] + layers.stride[1] * col, 0), image_size[1] - 1)])
        assert np.abs(peaks - expected).max(axis=1).min() <= 1, (row, col)


def test_a_free_window_moves_the_first_centre_and_field_with_it():
    network = convert_classifier(_seeded("resnet18"), input_size=224)
    cam = with_window(network, 1)
    layers = network_geometry(cam)
    assert layers.first_center == (0.0, 0.0) and layers.receptive_field == (435, 435)
    assert output_grid_size(cam, (224, 224)) == (7, 7) and cam.input_size == (32, 32)
    with torch.no_grad():
        assert tuple(cam(torch.zeros(1, 3, 100, 130)).shape[2:]) == output_grid_size(cam, (100, 130))


@pytest.mark.slow
def test_tiled_scores_of_a_residual_network_equal_the_whole_image_pass():
    """Halos come from the measured receptive field, so tiles of ResNet-18 reproduce the untiled map."""
    from fcn_app.scoring import compute_score_map
    from fcn_app.tiling import plan_tiles

    from helpers import random_rgb

    network = convert_classifier(_seeded("resnet18"), input_size=64)
    image = random_rgb(700, 520, seed=7)
    untiled = compute_score_map(network, image, precision="fp32", max_memory=1 << 30)
    budget = activation_bytes(network, (560, 560))  # a few real tiles (a smaller budget falls back to hundreds)
    tiles = plan_tiles(network, (700, 520), budget)
    assert tiles is not None and 1 < len(tiles) < 20
    tiled = compute_score_map(network, image, precision="fp32", max_memory=budget)
    assert tiled.geometry == untiled.geometry
    scale = float(untiled.logits.abs().max())
    torch.testing.assert_close(tiled.logits, untiled.logits, rtol=1e-4, atol=1e-5 * scale)
