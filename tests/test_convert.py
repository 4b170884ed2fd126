"""Exactness of the FC → conv conversion, checked against the original classifiers (seeded random weights)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcn_app.errors import ConversionError
from fcn_app.geometry import output_grid_size
from fcn_app.models import SUPPORTED_ARCHS, linear_to_conv, to_fully_convolutional

from helpers import assert_close_scaled, meta_classifier, seeded_classifier, tiny_classifier

#: The layer-list conversion (VGG, AlexNet); graph classifiers are covered by test_graph_convert.py.
LAYER_ARCHS = [arch for arch in SUPPORTED_ARCHS if arch.startswith(("vgg", "alexnet"))]


@pytest.mark.slow
@pytest.mark.parametrize("arch", LAYER_ARCHS)
def test_training_size_gives_the_classifier_logits(arch):
    """At 224² the one cell is the classifier's logits within ``rtol`` 1e-4 plus 1e-5 × max |logit|
    (:func:`helpers.assert_close_scaled`): fc6-as-conv sums in another order than the Linear GEMM, by up to
    3.1e-6 × max |logit| on an AVX2-only CPU (|Δ| 5e-5 for logits up to 18 — a fixed atol of 1e-5 failed there)."""
    model = seeded_classifier(arch, seed=1)
    network = to_fully_convolutional(model, input_size=224)
    torch.manual_seed(0)
    images = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = model(images)
        scores = network(images)
    assert scores.shape == (2, 1000, 1, 1)
    assert_close_scaled(scores.flatten(1), expected)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["vgg16", "alexnet", "vgg11_bn"])
def test_every_cell_is_the_head_on_its_feature_window(arch):
    """At 320×480 every output cell equals the original Linear head applied to its 7×7 (6×6) feature window."""
    model = seeded_classifier(arch, seed=1)
    network = to_fully_convolutional(model)
    torch.manual_seed(0)
    images = torch.randn(1, 3, 320, 480)
    with torch.no_grad():
        features = model.features(images)
        scores = network(images)
        grid_h, grid_w = model.avgpool.output_size
        rows, cols = features.shape[2] - grid_h + 1, features.shape[3] - grid_w + 1
        assert scores.shape[2:] == (rows, cols)
        windows = torch.stack([
            features[0, :, row : row + grid_h, col : col + grid_w].flatten()
            for row in range(rows) for col in range(cols)
        ])
        expected = model.classifier(windows).T.reshape(1000, rows, cols)
    assert_close_scaled(scores[0], expected)


@pytest.mark.parametrize("size, side", [(224, 1), (255, 1), (256, 2), (451, 8), (512, 10)])
def test_vgg16_output_side_is_floor_s_over_32_minus_6(size, side):
    network = to_fully_convolutional(meta_classifier("vgg16"))
    assert output_grid_size(network, (size, size)) == (side, side)
    assert side == size // 32 - 6


def test_vgg16_runs_on_451_and_gives_8_cells():
    network = to_fully_convolutional(meta_classifier("vgg16"))
    with torch.no_grad():
        assert network(torch.zeros(1, 3, 451, 260, device="meta")).shape == (1, 1000, 8, 2)


@pytest.mark.parametrize(
    "pool", [nn.Identity(), nn.AdaptiveAvgPool2d(1), nn.AdaptiveAvgPool2d(2), nn.AdaptiveMaxPool2d(1)],
    ids=["no-pool", "global-avg", "avg-2x2", "global-max"],
)
def test_custom_small_classifier_slides_exactly(pool):
    """A user's 32×32-crop model: each output cell equals the model on the corresponding 32×32 crop.

    The feature extractor has stride 8 and its padding never reaches across 8-pixel-aligned crop borders only
    at the level of features, so compare at the feature level: the head on each 4×4 feature window.
    """
    model = tiny_classifier(num_classes=5, pool=pool).eval()
    network = to_fully_convolutional(model, input_size=32)
    torch.manual_seed(0)
    crops = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert_close_scaled(network(crops).flatten(1), model(crops))
        image = torch.randn(1, 3, 48, 64)
        features = model[:9](image)  # conv blocks
        scores = network(image)
        head = model[9:]
        rows, cols = features.shape[2] - 3, features.shape[3] - 3
        assert scores.shape[2:] == (rows, cols)
        for row in range(rows):
            for col in range(cols):
                expected = head(features[:, :, row : row + 4, col : col + 4])
                assert_close_scaled(scores[:, :, row, col], expected)


def test_original_model_is_untouched_and_result_is_eval():
    model = tiny_classifier().train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    network = to_fully_convolutional(model, input_size=32)
    assert not network.training
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)
    assert network.features is not model[0]


def test_features_and_head_keywords():
    model = tiny_classifier().eval()
    network = to_fully_convolutional(features=model[:9], head=model[10:], input_size=32, categories=list("abcde"))
    assert network.categories == list("abcde")
    with torch.no_grad():
        crops = torch.randn(2, 3, 32, 32)
        assert_close_scaled(network(crops).flatten(1), model(crops))


def test_gradients_match_the_linear_head_and_the_backward_derivation():
    """Backward through the conv head equals backward through the Linear head, and the hand derivation.

    For a = W·x + b: dL/dx = Wᵀ·dL/da, dL/dW = dL/da·xᵀ, dL/db = Σ dL/da.
    """
    torch.manual_seed(0)
    linear = nn.Linear(16 * 2 * 2, 7)
    conv = linear_to_conv(linear, 16, (2, 2))
    features = torch.randn(3, 16, 2, 2, requires_grad=True)
    upstream = torch.randn(3, 7)

    through_linear = linear(features.flatten(1))
    (through_linear * upstream).sum().backward()
    linear_input_grad = features.grad.clone()
    features.grad = None
    through_conv = conv(features).flatten(1)
    (through_conv * upstream).sum().backward()

    assert_close_scaled(through_conv, through_linear)
    assert_close_scaled(features.grad, linear_input_grad)
    assert_close_scaled(conv.weight.grad.flatten(1), linear.weight.grad)
    assert_close_scaled(conv.bias.grad, linear.bias.grad)

    inputs = features.detach().flatten(1)  # rows are x
    assert_close_scaled(features.grad.flatten(1), upstream @ linear.weight)
    assert_close_scaled(conv.weight.grad.flatten(1), upstream.T @ inputs)
    assert_close_scaled(conv.bias.grad, upstream.sum(dim=0))


def test_gradients_through_a_whole_converted_head():
    model = tiny_classifier(num_classes=6).eval()
    network = to_fully_convolutional(model, input_size=32)
    torch.manual_seed(0)
    features = torch.randn(4, 16, 4, 4)
    upstream = torch.randn(4, 6)
    (model[10:](features) * upstream).sum().backward()
    (network.head(features).flatten(1) * upstream).sum().backward()
    linears = [layer for layer in model if isinstance(layer, nn.Linear)]
    convs = [layer for layer in network.head if isinstance(layer, nn.Conv2d)]
    assert len(convs) == len(linears) == 2
    for linear, conv in zip(linears, convs, strict=True):
        assert_close_scaled(conv.weight.grad.flatten(1), linear.weight.grad)
        assert_close_scaled(conv.bias.grad, linear.bias.grad)


def test_wrong_input_size_is_a_clear_error():
    with pytest.raises(ConversionError, match="input_size"):
        to_fully_convolutional(tiny_classifier(), input_size=40)


def test_unsupported_models_are_refused_with_the_reason():
    with pytest.raises(ConversionError, match="features"):
        to_fully_convolutional(nn.Linear(3, 4))
    bad_head = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 30 * 30, 2), nn.Softmax(dim=1))
    with pytest.raises(ConversionError, match="Softmax"):
        to_fully_convolutional(bad_head, input_size=32)
    uneven = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, 2))
    with pytest.raises(ConversionError, match="uneven"):
        to_fully_convolutional(uneven, input_size=32)
