"""Start-up path of the default model: the VGG family is built and described without importing torchvision
(fcn_app.models.vgg), and must be exactly torchvision's; weights are memory-mapped and the converted head is
never randomly initialised — the numbers stay those of the plain path."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from helpers import assert_close_scaled
from helpers_cli import cli_environment

from fcn_app.models import load_classifier, load_fcn, to_fully_convolutional
from fcn_app.models.convert import _sequential_grid, linear_to_conv
from fcn_app.models.vgg import VGG_ARCHS, VGG_WEIGHTS, imagenet_categories, vgg_shapes
from fcn_app.models.zoo import SUPPORTED_ARCHS, _load_weighted, build_classifier, default_weights, tiny_vgg_classifier

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_vgg_family_is_torchvisions():
    assert VGG_ARCHS == tuple(arch for arch in SUPPORTED_ARCHS if arch.startswith("vgg"))
    assert imagenet_categories() == default_weights("vgg16").meta["categories"]
    for arch in VGG_ARCHS:
        with torch.device("meta"):
            ours, theirs = vgg_shapes(arch, num_classes=7), build_classifier(arch, num_classes=7)
        assert [(name, type(module)) for name, module in ours.named_modules()][1:] == \
               [(name, type(module)) for name, module in theirs.named_modules()][1:]
        assert repr(ours.features) == repr(theirs.features) and repr(ours.classifier) == repr(theirs.classifier)
        assert {key: value.shape for key, value in ours.state_dict().items()} == \
               {key: value.shape for key, value in theirs.state_dict().items()}
        weights, transforms = default_weights(arch), default_weights(arch).transforms()
        facts = VGG_WEIGHTS[arch]
        assert (facts.url, facts.crop, facts.mean, facts.std) == \
               (weights.url, int(transforms.crop_size[0]), tuple(transforms.mean), tuple(transforms.std))


@pytest.mark.slow
def test_fast_vgg16_equals_torchvisions_bit_for_bit():
    """The session's seeded VGG16 file (zip format: memory-mapped) through both builders: same weights, same logits,
    same converted network and metadata."""
    fast = _load_weighted("vgg16", None, progress=False, fast=True)
    reference, weights = load_classifier("vgg16")
    assert type(reference).__module__.startswith("torchvision")
    for (name, ours), (_, theirs) in zip(fast.state_dict().items(), reference.state_dict().items()):
        assert torch.equal(ours, theirs), name
    image = torch.randn(1, 3, 64, 80, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fast(image), reference(image), rtol=0, atol=0)
    network = load_fcn("vgg16")
    transforms = weights.transforms()
    converted = to_fully_convolutional(reference, input_size=224, categories=weights.meta["categories"],
                                       mean=transforms.mean, std=transforms.std)
    assert (network.categories, network.mean, network.std, network.input_size) == \
           (converted.categories, converted.mean, converted.std, converted.input_size)
    scene = torch.randn(1, 3, 224, 256, generator=torch.Generator().manual_seed(1))  # 1×2 cells
    with torch.no_grad():
        torch.testing.assert_close(network(scene), converted(scene), rtol=0, atol=0)


def test_feature_grid_by_layer_arithmetic_equals_running_the_layers():
    """The size formulas against PyTorch's own shape functions (meta tensors), odd sizes and ceil_mode included."""
    odd_pools = nn.Sequential(nn.Conv2d(3, 4, 5, stride=2, padding=1, dilation=2), nn.BatchNorm2d(4), nn.ReLU(),
                              nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), nn.Conv2d(4, 6, (3, 1)),
                              nn.AvgPool2d(2, ceil_mode=True), nn.MaxPool2d((2, 3), stride=(1, 2), dilation=(1, 2)))
    cases = [(odd_pools, size) for size in ((37, 45), (64, 64), (51, 70))]
    with torch.device("meta"):
        cases += [(build_classifier(arch).features, (224, 224)) for arch in ("vgg16_bn", "alexnet")]
        cases += [(nn.Sequential(*list(tiny_vgg_classifier())[:20]), (32, 32))]
    for features, size in cases:
        output = features.to("meta").eval()(torch.zeros(1, 3, *size, device="meta"))
        assert _sequential_grid(features, 3, size) == tuple(output.shape[1:])
    assert _sequential_grid(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Upsample(scale_factor=2)), 3, (8, 8)) is None
    assert _sequential_grid(nn.Sequential(nn.MaxPool2d(8)), 3, (4, 4)) is None  # too small: run for real


def test_linear_to_conv_copies_without_touching_the_linear():
    linear = nn.Linear(2 * 3 * 3, 5)
    before = linear.weight.detach().clone()
    conv = linear_to_conv(linear, 2, (3, 3))
    assert not conv.weight.is_meta and conv.weight.requires_grad
    assert conv.weight.data_ptr() != linear.weight.data_ptr()
    features = torch.randn(4, 2, 3, 3)
    assert_close_scaled(conv(features).flatten(1), linear(features.flatten(1)))
    with torch.no_grad():
        conv.weight.zero_()
    assert torch.equal(linear.weight, before)


@pytest.mark.slow
def test_loading_vgg16_imports_no_torchvision():
    """``import torchvision`` costs about as much as ``import torch`` (it imports torch._dynamo): the CLI and the
    default model's loading must not need it."""
    code = ("import sys, fcn_app.cli; from fcn_app.scoring import load_scoring_network; "
            "load_scoring_network('vgg16', device='cpu'); "
            "print(sorted(name for name in ('torchvision', 'torch._dynamo') if name in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_environment(),
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_command_skips_teardown_but_keeps_exit_code_streams_and_exit_handlers(tmp_path):
    """The console entry point ends with ``os._exit`` (no interpreter teardown): the exit code, the error line on
    stderr and what exit handlers print must still come out, as with ``sys.exit``."""
    missing = tmp_path / "missing.jpg"
    code = ("import atexit, sys; atexit.register(lambda: print('exit handler ran')); from fcn_app.cli import main; "
            f"sys.argv = ['fcn-heatmap', {str(missing)!r}]; main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_environment(),
                            timeout=300)
    assert result.returncode == 2, result.stderr
    assert result.stdout == "exit handler ran\n"
    assert "no such file" in result.stderr and "Traceback" not in result.stderr
