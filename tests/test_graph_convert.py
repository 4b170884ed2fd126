"""Graph classifiers (ResNet, ConvNeXt, EfficientNet, DenseNet, …) converted exactly into sliding-window networks.

Independent second path: torchvision's own feature extractor cut at the node each family pools (named by hand
below), and the family's head written out by hand from torchvision's ``forward`` — never the converted modules.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import get_model
from torchvision.models.feature_extraction import create_feature_extractor

from fcn_app.errors import ConversionError
from fcn_app.models import SUPPORTED_ARCHS, to_fully_convolutional
from fcn_app.models.convert import convert_classifier
from fcn_app.models.graph import GraphFullyConvolutionalNet, with_window
from fcn_app.models.zoo import _drop_auxiliary_heads, _materialise, build_classifier

from helpers import random_state_dict


def _flat_pool(model, window):
    return torch.flatten(model.avgpool(window), 1)


#: family → (node whose output the classifier pools, the classifier's head on a feature window, from its forward)
FAMILIES = {
    "resnet": ("layer4", lambda m, w: m.fc(_flat_pool(m, w))),
    "regnet": ("trunk_output", lambda m, w: m.fc(_flat_pool(m, w))),
    "convnext": ("features", lambda m, w: m.classifier(m.avgpool(w))),
    "efficientnet": ("features", lambda m, w: m.classifier(_flat_pool(m, w))),
    "mobilenet_v2": ("features", lambda m, w: m.classifier(torch.flatten(F.adaptive_avg_pool2d(w, 1), 1))),
    "mobilenet": ("features", lambda m, w: m.classifier(_flat_pool(m, w))),
    "densenet": ("features", lambda m, w: m.classifier(torch.flatten(F.adaptive_avg_pool2d(F.relu(w), 1), 1))),
    "shufflenet": ("conv5", lambda m, w: m.fc(w.mean([2, 3]))),
    "mnasnet": ("layers", lambda m, w: m.classifier(w.mean([2, 3]))),
    "squeezenet": ("features", lambda m, w: torch.flatten(m.classifier(w), 1)),
    "googlenet": ("inception5b", lambda m, w: m.fc(m.dropout(_flat_pool(m, w)))),
    "inception": ("Mixed_7c", lambda m, w: m.fc(torch.flatten(m.dropout(m.avgpool(w)), 1))),
    "alexnet": ("features", lambda m, w: m.classifier(_flat_pool(m, w))),
    "vgg": ("features", lambda m, w: m.classifier(_flat_pool(m, w))),
}

#: arch → (training size used in the test, larger size). Small sizes keep the test cheap; the conversion is exact
#: for whatever size the classifier is said to be trained on. VGG/AlexNet need 224 (their 7×7 adaptive pool).
QUICK = ["resnet18", "mobilenet_v3_small", "squeezenet1_1"]  # residual, squeeze-and-excitation, fire modules
SLOW = ["efficientnet_b0", "regnet_y_400mf", "shufflenet_v2_x0_5", "mnasnet0_5", "alexnet", "resnet50", "resnext50_32x4d", "wide_resnet50_2", "convnext_tiny", "efficientnet_v2_s",
        "mobilenet_v3_large", "mobilenet_v2", "regnet_x_400mf", "densenet121", "shufflenet_v2_x1_0", "mnasnet1_0",
        "googlenet", "inception_v3", "vgg11", "vgg16_bn"]
SIZES = {"inception_v3": (139, (139 + 64, 139 + 32)), "alexnet": (224, (224 + 64, 224 + 32)),
         "vgg11": (224, (224 + 32, 224)), "vgg16_bn": (224, (224 + 32, 224))}
#: Tolerances: the converted network runs the same operations; only float32 summation order differs (a stride-1
#: window AvgPool2d sums where adaptive pooling takes a mean; a 1×1 convolution where Linear does a GEMM), so the
#: absolute tolerance is relative to the largest logit: ``ATOL_SCALE × max |logit|``.
RTOL, ATOL_SCALE = 1e-4, 1e-5


def _assert_same_logits(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL_SCALE * float(expected.abs().max()))


pytestmark = pytest.mark.usefixtures("one_thread")  # shared machines: one torch thread


def _family(arch: str) -> str:
    return next(name for name in FAMILIES if arch.startswith(name) or (name == "resnet" and "resne" in arch))


def _seeded(arch: str) -> torch.nn.Module:
    with torch.device("meta"):
        model = build_classifier(arch)
    return _drop_auxiliary_heads(_materialise(model, random_state_dict(arch), "seeded"), arch).eval()


def _check_family(arch: str) -> None:
    torch.manual_seed(0)
    model = _seeded(arch)
    train_size, larger = SIZES.get(arch, (64, (64 + 64, 64 + 32)))
    network = convert_classifier(model, input_size=train_size, arch=arch)
    node, head = FAMILIES[_family(arch)]
    extractor = create_feature_extractor(model, return_nodes={node: "features"})
    with torch.no_grad():
        # (a) at the training size: one cell, equal to the classifier's logits
        image = torch.randn(2, 3, train_size, train_size)
        cells = network(image)
        assert cells.shape[2:] == (1, 1)
        _assert_same_logits(cells[:, :, 0, 0], model(image))
        window = extractor(image)["features"].shape[2:]
        # (b) at a larger size: every cell is the classifier's head on its window of the feature map
        image = torch.randn(1, 3, *larger)
        cells = network(image)
        features = extractor(image)["features"]
        rows, cols = features.shape[2] - window[0] + 1, features.shape[3] - window[1] + 1
        assert cells.shape[2:] == (rows, cols) and rows * cols > 1
        for row in range(rows):
            for col in range(cols):
                expected = head(model, features[:, :, row:row + window[0], col:col + window[1]])
                _assert_same_logits(cells[:, :, row, col], expected)


@pytest.mark.parametrize("arch", QUICK)
def test_graph_classifier_converts_exactly(arch):
    _check_family(arch)


@pytest.mark.slow
@pytest.mark.parametrize("arch", SLOW)
def test_graph_classifier_converts_exactly_heavy(arch):
    _check_family(arch)


@pytest.mark.slow  # builds DenseNet-121 and VGG11 (meta device, traced)
def test_graph_families_get_the_graph_conversion_and_vgg_the_layer_one():
    """DenseNet has ``features``/``classifier`` attributes like VGG but a functional ReLU between them: it must
    take the graph path (the layer path would silently drop that ReLU)."""
    with torch.device("meta"):
        densenet = get_model("densenet121", weights=None).eval()
        vgg = get_model("vgg11", weights=None).eval()
    assert isinstance(to_fully_convolutional(densenet, input_size=64), GraphFullyConvolutionalNet)
    assert not isinstance(to_fully_convolutional(vgg), GraphFullyConvolutionalNet)


@pytest.mark.parametrize("arch, words", [("vit_b_16", "ViT attends"), ("swin_t", "Swin attends"),
                                         ("maxvit_t", "MaxViT mixes")])
def test_transformers_are_refused_with_one_line_why(arch, words):
    with torch.device("meta"):
        model = get_model(arch, weights=None)
    with pytest.raises(ConversionError, match=words) as raised:
        convert_classifier(model)
    assert "\n" not in str(raised.value)


def test_a_classifier_with_a_residual_after_its_head_is_refused():
    """A head output that is added to something else is no per-window head: refused in one line with the way out
    (a plain flatten head converts: tests/test_custom_classifier.py)."""
    class ResidualHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3, stride=4)
            self.fc = torch.nn.Linear(4 * 8 * 8, 5)

        def forward(self, x):
            logits = self.fc(torch.flatten(torch.relu(self.conv(x)), 1))
            return logits + x.mean()

    with pytest.raises(ConversionError, match="does not end in global average/max pooling") as raised:
        convert_classifier(ResidualHead(), input_size=32)
    assert "\n" not in str(raised.value)


@pytest.mark.slow
def test_every_supported_torchvision_classifier_converts_on_the_meta_device():
    """Shapes only: each model traces, cuts at its global pool and gives a 1000-class grid that grows."""
    for arch in SUPPORTED_ARCHS:
        with torch.device("meta"):
            model = _drop_auxiliary_heads(build_classifier(arch), arch)
        size = 299 if arch == "inception_v3" else 224
        network = convert_classifier(model.eval(), input_size=size, arch=arch)
        assert network.num_classes == 1000, arch
        with torch.no_grad():
            grid = network(torch.empty(1, 3, size + 64, size + 96, device="meta")).shape[2:]
        assert grid[0] >= 2 and grid[1] >= 3, (arch, grid)


@pytest.mark.slow  # quick: test_nonsquare (free windows 1×3, 3×1, 2×5 on a residual classifier), test_cam (window 1)
@pytest.mark.parametrize("window", [1, 3])
def test_a_free_window_scores_each_window_of_that_many_feature_cells(window):
    """``--window 1`` is CAM: every feature cell through the head alone; ``3`` pools 3×3 cells per score."""
    model = _seeded("resnet18")
    network = with_window(convert_classifier(model, input_size=64), window)
    node, head = FAMILIES["resnet"]
    extractor = create_feature_extractor(model, return_nodes={node: "features"})
    image = torch.randn(1, 3, 160, 128)
    with torch.no_grad():
        cells = network(image)
        features = extractor(image)["features"]
        assert cells.shape[2:] == (features.shape[2] - window + 1, features.shape[3] - window + 1)
        for row in range(cells.shape[2]):
            for col in range(cells.shape[3]):
                _assert_same_logits(cells[:, :, row, col],
                                    head(model, features[:, :, row:row + window, col:col + window]))
    assert network.input_size == (64 + (window - 2) * 32,) * 2


def test_only_pooled_heads_have_a_free_window():
    with pytest.raises(ConversionError, match="at least one feature cell"):
        with_window(convert_classifier(_seeded("resnet18"), input_size=64), 0)
    with torch.device("meta"):
        vgg = to_fully_convolutional(get_model("vgg11", weights=None).eval())
    with pytest.raises(ConversionError, match="has no free window size: only classifiers ending in global pooling"):
        with_window(vgg, 1)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["resnet18", "mobilenet_v3_small"])
def test_graph_networks_export_to_onnx_with_dynamic_sizes(arch, tmp_path):
    onnxruntime = pytest.importorskip("onnxruntime")
    from fcn_app.export import export_onnx

    network = convert_classifier(_seeded(arch), input_size=64, arch=arch)
    session = onnxruntime.InferenceSession(str(export_onnx(network, tmp_path / "net.onnx")),
                                           providers=["CPUExecutionProvider"])
    for size in [(64, 64), (160, 96)]:
        image = torch.randn(1, 3, *size)
        with torch.no_grad():
            expected = network(image)
        _assert_same_logits(torch.from_numpy(session.run(None, {"images": image.numpy()})[0]), expected)
