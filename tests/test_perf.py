"""The fast inference path gives the naive path's numbers; precision and memory options; models load once."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fcn_app.errors import OptionError
from fcn_app.cli import app
from fcn_app.io import load_image
from fcn_app.models import to_fully_convolutional
from fcn_app.scoring import (
    compute_score_map,
    compute_score_maps,
    load_scoring_network,
    prepare_network,
    resolve_precision,
    run_features,
    window_conv_as_matmul,
)
from helpers import EXAMPLES, assert_close_scaled, random_rgb, tiny_classifier
from helpers_cli import assert_one_line_error, run_fcn_many


@pytest.fixture()
def tiny_network():
    return to_fully_convolutional(tiny_classifier(), input_size=32, mean=(0.485, 0.456, 0.406),
                                  std=(0.229, 0.224, 0.225))


def _naive_logits(network, image: np.ndarray) -> torch.Tensor:
    """Second path: NCHW contiguous fp32, normalisation written out, a fresh copy of the network."""
    reference = copy.deepcopy(network)
    for parameter in reference.parameters():
        parameter.data = parameter.data.contiguous()
    pixels = torch.tensor(image, dtype=torch.float64).permute(2, 0, 1) / 255.0
    mean = torch.tensor(network.mean, dtype=torch.float64)[:, None, None]
    std = torch.tensor(network.std, dtype=torch.float64)[:, None, None]
    batch = ((pixels - mean) / std).float().unsqueeze(0).contiguous()
    with torch.no_grad():
        return reference(batch)[0]


def test_default_path_equals_naive_nchw_fp32(tiny_network):
    image = random_rgb(90, 123, seed=3)
    expected = _naive_logits(tiny_network, image)
    score_map = compute_score_map(tiny_network, image)  # defaults: auto precision (fp32 on CPU), channels-last
    assert score_map.logits.dtype == torch.float32
    assert_close_scaled(score_map.logits, expected, rtol=1e-5)
    weight = next(parameter for parameter in tiny_network.parameters() if parameter.dim() == 4)
    assert weight.is_contiguous(memory_format=torch.channels_last)


def test_reduced_precision_stays_close_to_fp32(tiny_network):
    images = [random_rgb(64, 80, seed=seed) for seed in range(2)]
    exact = compute_score_maps(tiny_network, images, precision="fp32")
    reduced = compute_score_maps(tiny_network, images, precision="bf16")
    for high, low in zip(exact, reduced):
        assert low.logits.dtype == torch.float32 and low.logits.shape == high.logits.shape
        assert_close_scaled(low.logits, high.logits, rtol=0.05, atol_scale=0.05)  # bf16: 8-bit mantissa


def test_precision_names():
    assert resolve_precision("fp32", "cpu") is None
    assert resolve_precision("auto", "cpu") is None
    assert resolve_precision("bf16", "cpu") is torch.bfloat16
    assert resolve_precision("fp16", "cpu") is torch.float16
    with pytest.raises(OptionError, match="unknown precision 'int8'"):
        resolve_precision("int8", "cpu")


def test_prepare_network_is_idempotent_and_keeps_values(tiny_network):
    before = {name: value.clone() for name, value in tiny_network.state_dict().items()}
    prepare_network(prepare_network(tiny_network))
    for name, value in tiny_network.state_dict().items():
        torch.testing.assert_close(value, before[name], rtol=0, atol=0)


def test_prepare_network_leaves_the_window_conv_weight_where_it_is(tiny_network):
    """The head's window convolution runs as a GEMM on its own NCHW weight: converting it would only copy it."""
    from fcn_app.scoring import _is_window_conv

    window_convs = [layer for layer in tiny_network.head if _is_window_conv(layer)]
    assert window_convs, "the tiny classifier's converted head has a window convolution"
    addresses = [layer.weight.data_ptr() for layer in window_convs]
    prepare_network(tiny_network)
    assert [layer.weight.data_ptr() for layer in window_convs] == addresses
    for name, parameter in tiny_network.named_parameters():
        if parameter.dim() == 4 and all(parameter is not layer.weight for layer in window_convs):
            assert parameter.is_contiguous(memory_format=torch.channels_last), name


@pytest.mark.slow
def test_scoring_network_is_loaded_once_per_process():
    load_scoring_network.cache_clear()
    first = load_scoring_network("vgg16", device="cpu")
    again = load_scoring_network("vgg16", device="auto" if not torch.cuda.is_available() else "cpu")
    assert first is again and not first.training
    assert first.features[0].weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.slow
def test_heatmap_command_tiles_under_a_small_budget(tmp_path):
    image_path = EXAMPLES / "coffee.jpg"
    # 600×400 px needs ~154 MB of activations in one pass; 140 MB forces 3 exact tiles along the width
    result = CliRunner().invoke(app, ["heatmap", str(image_path), "--out", str(tmp_path), "--max-memory", "140M",
                                      "--precision", "fp32", "--save-scores", "--verbose"])
    assert result.exit_code == 0, result.output
    assert "3 exact tiles" in result.output
    tiled = np.load(tmp_path / "coffee.scores.npz")["logits"]
    network = load_scoring_network("vgg16", device="cpu")
    untiled = compute_score_map(network, load_image(image_path), precision="fp32", max_memory="4G")
    assert_close_scaled(torch.from_numpy(tiled), untiled.logits)


@pytest.mark.slow
def test_heatmap_command_rejects_bad_performance_options(tmp_path):
    cases = [("--precision", "int8", "unknown precision 'int8'"), ("--max-memory", "lots", "cannot read memory size")]
    results = run_fcn_many([[EXAMPLES / "chelsea.jpg", "--out", tmp_path, "--max-side", "64", option, value]
                            for option, value, _ in cases])
    for (_, _, message), result in zip(cases, results):
        assert_one_line_error(result, 2, message)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("bias", [True, False])
def test_window_conv_as_matmul_equals_the_convolution(bias):
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 10, kernel_size=(3, 4), bias=bias)
    feature_map = torch.randn(2, 6, 9, 11)
    with torch.no_grad():
        expected = conv(feature_map)
        for weight_layout in (torch.contiguous_format, torch.channels_last):
            conv.to(memory_format=weight_layout)
            for input_layout in (torch.contiguous_format, torch.channels_last):
                actual = window_conv_as_matmul(conv, feature_map.contiguous(memory_format=input_layout))
                assert_close_scaled(actual, expected, rtol=1e-5)
        too_small = torch.randn(1, 6, 2, 11)  # fewer rows than the kernel: falls back to the conv's own error
        with pytest.raises(RuntimeError):
            window_conv_as_matmul(conv, too_small)


#: How far the fused Conv2d + ReLU may be from the layers, relative to the largest activation compared. The ReLU is
#: exact, but torch's own Conv2d skips oneDNN for small single-image inputs (the tiny network's first layer below
#: about 20 000 input values) and sums in another order: ``scripts/bench_fused_relu.py`` measured 4.7e-7 there on an
#: AVX2 EPYC and 0 (bit-identical) for VGG16 at 224² to 512²; the bit-for-bit version of this test passed on an AMX
#: Xeon. No CPU kind promises the same kernel choice, so the test asserts the bound (20× the largest measured).
FUSED_ATOL_SCALE = 1e-5


def _assert_fused_within_bound(network: torch.nn.Module, size: tuple[int, int], layout: torch.memory_format) -> None:
    batch = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=layout)
    with torch.inference_mode():
        layers = batch
        for layer in network.features:
            layers = layer(layers)
        torch.testing.assert_close(run_features(network, batch, fuse=True), layers, rtol=0,
                                   atol=FUSED_ATOL_SCALE * float(layers.abs().max()))


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_fused_convolution_and_relu_equal_the_layers_within_a_relative_bound(tiny_network, layout):
    """The fp32 CPU path runs each Conv2d + ReLU of a sequential feature extractor as one oneDNN convolution with
    the ReLU fused: the layers' values within ``FUSED_ATOL_SCALE × max |activation|`` (rtol 0), channels-last
    weights as prepare_network leaves them, on the tiny VGG-style network at a size where torch's own first
    convolution is not oneDNN's. Under autocast the fusion is off: the layers themselves, bit for bit (the same
    code path)."""
    network = prepare_network(tiny_network)
    _assert_fused_within_bound(network, (45, 61), layout)
    batch = torch.randn(1, 3, 45, 61, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=layout)
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        torch.testing.assert_close(run_features(network, batch, fuse=True), network.features(batch), rtol=0, atol=0)


@pytest.mark.slow
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_fused_vgg16_equals_the_layers_within_a_relative_bound(layout):
    """The same bound on VGG16 (the session's seeded weights) at 230×250."""
    _assert_fused_within_bound(prepare_network(load_scoring_network("vgg16", device="cpu")), (230, 250), layout)


def test_hooks_on_the_features_see_every_layer_called(tiny_network):
    calls = []
    hook = tiny_network.features[0].register_forward_hook(lambda module, args, output: calls.append(output.shape))
    with torch.inference_mode():
        run_features(tiny_network, torch.zeros(1, 3, 32, 32), fuse=True)
    hook.remove()
    assert calls == [torch.Size([1, 8, 32, 32])]


def test_a_torch_that_refuses_the_fused_convolution_gets_the_plain_layers(tiny_network, monkeypatch):
    import fcn_app.scoring as scoring

    def refusing(*args):
        raise RuntimeError("unknown overload")

    monkeypatch.setattr(scoring, "_conv_relu_failed", False)
    monkeypatch.setattr(scoring, "_conv_relu_op", lambda: refusing)
    batch = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        torch.testing.assert_close(run_features(tiny_network, batch, fuse=True), tiny_network.features(batch),
                                   rtol=0, atol=0)
    assert scoring._conv_relu_failed
