"""FCN models: pixel alignment (against the core's interpolation and one-hot checks), any input size, init."""

from __future__ import annotations

import math

import pytest
import torch

from torch import nn

from fcn_app.geometry import ScoreGeometry, network_geometry, output_grid_size, upsample_to_pixels
from fcn_app.segmentation.models import FCN_VARIANTS, bilinear_kernel, build_segmentation_model

from helpers import assert_close_scaled, random_state_dict


def score_chain(model) -> nn.Sequential:
    return nn.Sequential(model.to_pool3, model.to_pool4, model.to_pool5, model.head)


def padding_for(model, size) -> tuple[int, int, int, int]:
    plan_y, plan_x = model.plan(size)
    return (*plan_y.padding, *plan_x.padding)


def score_grid_geometry(model, size) -> ScoreGeometry:
    """Geometry (in unpadded input pixels) of the stride-32 score_fr grid, from the layers and the plan."""
    top, bottom, left, right = padding_for(model, size)
    padded = (size[0] + top + bottom, size[1] + left + right)
    chain = score_chain(model)
    return ScoreGeometry.for_network(network_geometry(chain), output_grid_size(chain, padded), model.input_size,
                                     offset=(top, left))


def tiny(variant: str, classes: int = 3, **kwargs):
    torch.manual_seed(0)
    model = build_segmentation_model(variant, classes, backbone="tiny_vgg", pretrained=False, **kwargs)
    return model.eval()


@pytest.mark.parametrize("size", [(40, 52), (17, 90), (64, 64)])
def test_fcn32s_output_is_pixel_aligned_interpolation_of_the_score_grid(size):
    model = tiny("fcn32s")
    torch.nn.init.normal_(model.score_fr.weight)
    captured = {}
    model.score_fr.register_forward_hook(lambda module, inputs, output: captured.update(scores=output))
    image = torch.randn(1, 3, *size)
    with torch.no_grad():
        logits = model(image)
    expected = upsample_to_pixels(captured["scores"][0], score_grid_geometry(model, size), size)
    assert_close_scaled(logits[0], expected, rtol=1e-5)


def _one_hot_hook(cell: tuple[int, int] | None):
    def hook(module, inputs, output):
        replaced = torch.zeros_like(output)
        if cell is not None:
            replaced[0, 1, cell[0], cell[1]] = 1.0
        return replaced
    return hook


@pytest.mark.parametrize("variant,skip", [("fcn32s", None), ("fcn16s", 0), ("fcn8s", 0), ("fcn8s", 1),
                                          ("fcn8s-atonce", 1)])
def test_one_hot_cell_lands_at_its_computed_pixel(variant, skip):
    model = tiny(variant)
    size = (150, 170)
    top, _, left, _ = padding_for(model, size)
    if skip is None:
        geometry, module = network_geometry(score_chain(model)), model.score_fr
    else:
        geometry = network_geometry((nn.Sequential(model.to_pool3, model.to_pool4), model.to_pool3)[skip])
        module = model.score_skips[skip]
    # a cell whose centre is inside the image, away from the border
    row = math.ceil((60 + top - geometry.first_center[0]) / geometry.stride[0])
    col = math.ceil((70 + left - geometry.first_center[1]) / geometry.stride[1])
    center_y = geometry.first_center[0] - top + row * geometry.stride[0]
    center_x = geometry.first_center[1] - left + col * geometry.stride[1]
    model.score_fr.register_forward_hook(_one_hot_hook(None))
    for other in model.score_skips:
        other.register_forward_hook(_one_hot_hook(None))
    module.register_forward_hook(_one_hot_hook((row, col)))
    with torch.no_grad():
        heat = model(torch.zeros(1, 3, *size))[0, 1]
    # the response is symmetric about the cell centre: its peak (a pixel pair or plateau) and its mass centre
    peaks = (heat == heat.max()).nonzero().double()
    assert heat.max() > 0
    torch.testing.assert_close(peaks.mean(dim=0), torch.tensor([center_y, center_x], dtype=torch.float64))
    ys, xs = torch.meshgrid(torch.arange(size[0]), torch.arange(size[1]), indexing="ij")
    mass = heat.double() / heat.double().sum()
    centroid = torch.stack([(mass * ys).sum(), (mass * xs).sum()])
    torch.testing.assert_close(centroid, torch.tensor([center_y, center_x], dtype=torch.float64), rtol=0, atol=1e-6)


@pytest.mark.parametrize("variant", list(FCN_VARIANTS))
@pytest.mark.parametrize("size", [(1, 1), (1, 33), (31, 2), (70, 45)])
def test_any_input_size_gives_logits_of_that_size(variant, size):
    model = tiny(variant)
    with torch.no_grad():
        assert model(torch.randn(2, 3, *size)).shape == (2, 3, *size)


def test_skip_scores_zero_initialised_and_upsampling_bilinear_fixed_or_learnable():
    fixed, learnable = tiny("fcn8s"), tiny("fcn8s", learnable_upsampling=True)
    for score in fixed.score_skips:
        assert not score.weight.any() and not score.bias.any()
    for upsample, factor in zip(fixed.upsamplers, fixed.upsample_factors):
        torch.testing.assert_close(upsample.weight, bilinear_kernel(3, factor))
        assert not upsample.weight.requires_grad
    assert all(upsample.weight.requires_grad for upsample in learnable.upsamplers)
    assert fixed.upsample_factors == (2, 2, 8)


def test_bilinear_kernel_reproduces_linear_ramps_between_centres():
    factor = 4
    upsample = torch.nn.ConvTranspose2d(1, 1, 2 * factor, stride=factor, bias=False)
    with torch.no_grad():
        upsample.weight.copy_(bilinear_kernel(1, factor))
        ramp = torch.arange(5.0).view(1, 1, 1, 5).expand(1, 1, 5, 5)
        output = upsample(ramp)[0, 0, factor : 5 * factor, factor : 5 * factor]
    # output index o sits at cell (o − f + ½)/f: linear in o
    expected = ((torch.arange(factor, 5 * factor) - factor + 0.5) / factor).expand(4 * factor, -1)
    torch.testing.assert_close(output, expected)


@pytest.fixture(scope="module")
def vgg11_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg11") / "vgg11.pth"
    torch.save(random_state_dict("vgg11", seed=3), path)
    return path


@pytest.mark.slow
def test_vgg11_backbone_weights_and_taps(vgg11_weights):
    state = torch.load(vgg11_weights, weights_only=True)
    model = build_segmentation_model("fcn8s", 5, backbone="vgg11", weights_path=vgg11_weights).eval()
    # backbone convs and fc6/fc7 come from the classifier; fc6 is the reshaped Linear
    torch.testing.assert_close(model.to_pool3[0].weight, state["features.0.weight"])
    torch.testing.assert_close(model.head[0].weight, state["classifier.0.weight"].view(4096, 512, 7, 7))
    torch.testing.assert_close(model.head[3].weight, state["classifier.3.weight"].view(4096, 4096, 1, 1))
    assert [s.in_channels for s in model.score_skips] == [512, 256]  # pool4, pool3 of VGG
    score = network_geometry(score_chain(model))
    assert score.stride == (32, 32) and score.first_center == (111.5, 111.5)
    assert padding_for(model, (1, 1))[0] >= 112  # a 1-px input is padded until the final map covers it


def test_vgg16_taps_found_by_pool_order():
    with torch.device("meta"):
        model = build_segmentation_model("fcn8s", 21, backbone="vgg16", pretrained=False)
    assert [s.in_channels for s in model.score_skips] == [512, 256]
    assert network_geometry(nn.Sequential(model.to_pool3, model.to_pool4)).stride == (16, 16)
    assert network_geometry(model.to_pool3).stride == (8, 8)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.to_pool3) == 7  # conv1_1 … conv3_3
