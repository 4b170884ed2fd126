"""timm CNNs (``--model timm:NAME``) converted exactly, against the timm model's own logits.

Second path: the timm model itself — ``model(x)`` at its training size, and ``forward_head`` applied to each
window of ``forward_features`` on a larger image — never the converted modules. Weights are timm's seeded random
initialisation written to a file and read back through the same loading code users run (no network).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from fcn_app.errors import ConversionError, OptionError, WeightsError, WeightsUnavailableError
from fcn_app.models import load_network
from fcn_app.models.timm_zoo import INSTALL_HINT, build_timm_fcn

from helpers_cli import assert_one_line_error, cli_environment


pytestmark = [pytest.mark.usefixtures("one_thread", "timm"), pytest.mark.slow]


@pytest.fixture(scope="module")
def timm():
    """timm, imported when a test of this (slow) module runs, not when the quick loop collects it (~1 s)."""
    return pytest.importorskip("timm")

#: One per kind of head and body: squeeze-and-excitation gates (EfficientNet);
#: LayerNorm2d in the head (ConvNeXt); a 1×1 conv + Hardswish after the pool (MobileNetV3).
MODELS = ["efficientnet_b0", "convnext_atto", "mobilenetv3_small_050"]
#: As for torchvision's graph networks (tests/test_graph_convert.py): same operations, only the float32 summation
#: order differs (window AvgPool2d vs adaptive mean, 1×1 conv vs GEMM).
RTOL, ATOL_SCALE = 1e-4, 1e-5


def _assert_same_logits(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL_SCALE * float(expected.abs().max()))


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("timm_weights")


def _seeded(name: str, weights_dir, suffix: str = ".pth"):
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    with torch.no_grad():  # BatchNorm statistics away from the identity, so the test sees them
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    path = weights_dir / f"{name}{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({key: value.contiguous() for key, value in model.state_dict().items()}, str(path))
    else:
        torch.save(model.state_dict(), path)
    return model, path


@pytest.mark.parametrize("name", MODELS)
@torch.no_grad()
def test_timm_cnn_equals_its_classifier(name, weights_dir, timm):
    model, path = _seeded(name, weights_dir, ".safetensors" if name == "convnext_atto" else ".pth")
    network = load_network(f"timm:{name}", weights_path=path)
    size = network.input_size
    assert size == tuple(timm.data.resolve_data_config({}, model=model)["input_size"][1:])

    torch.manual_seed(1)
    image = torch.randn(1, 3, *size)
    scores = network(image)
    assert scores.shape[2:] == (1, 1)
    _assert_same_logits(scores[:, :, 0, 0], model(image))

    larger = torch.randn(1, 3, size[0] + 64, size[1] + 32)
    scores = network(larger)
    features = model.forward_features(larger)
    window = network.window
    assert scores.shape[2:] == (features.shape[2] - window[0] + 1, features.shape[3] - window[1] + 1) == (3, 2)
    for row in range(scores.shape[2]):
        for col in range(scores.shape[3]):
            cell = features[:, :, row:row + window[0], col:col + window[1]]
            _assert_same_logits(scores[:, :, row, col], model.forward_head(cell))
    assert network.categories[0] == "tench" and len(network.categories) == 1000


@torch.no_grad()
def test_fine_tuned_timm_head_reads_class_count_and_names(tmp_path, timm):
    """A plain pool + Linear head (ResNet) with 3 outputs: the count comes from the file, names from --classes."""
    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=3).eval()
    path = tmp_path / "three.pth"
    torch.save(model.state_dict(), path)
    with pytest.raises(WeightsError, match="3 classes, not ImageNet's 1000"):
        load_network("timm:resnet18", weights_path=path)
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nbird\n")
    network = load_network("timm:resnet18", weights_path=path, classes_path=names)
    assert network.categories == ["cat", "dog", "bird"]
    image = torch.randn(1, 3, 224, 224)
    _assert_same_logits(network(image)[:, :, 0, 0], model(image))


def test_timm_transformer_is_refused_with_the_reason():
    with pytest.raises(ConversionError, match="is a transformer: its Attention layers attend across positions"):
        build_timm_fcn("vit_tiny_patch16_224", pretrained=False)


def test_unknown_timm_name_suggests_the_nearest():
    with pytest.raises(OptionError, match="did you mean timm:resnet18"):
        build_timm_fcn("resnet18x", pretrained=False)


def test_offline_without_cached_weights_is_one_error(monkeypatch, tmp_path):
    monkeypatch.setenv("FCN_HEATMAP_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache, read at call time by try_to_load_from_cache
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(WeightsUnavailableError, match="not in the Hugging Face cache.*FCN_HEATMAP_OFFLINE is set"):
        load_network("timm:resnet18")


def test_missing_timm_is_one_line_with_the_install_command(tmp_path):
    """The CLI as a user without the extra runs it: ``import timm`` fails (simulated by blocking the module)."""
    image = tmp_path / "a.png"
    from PIL import Image

    Image.new("RGB", (8, 8)).save(image)
    code = ("import sys; sys.modules['timm'] = None; from fcn_app.cli import main; "
            f"sys.argv = ['fcn-heatmap', {str(image)!r}, '--model', 'timm:resnet18', '--out', {str(tmp_path)!r}]; "
            "main()")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_environment(),
                            timeout=300)
    result.args = ["python", "-m", "fcn_app", "...", "--model", "timm:resnet18"]
    line = assert_one_line_error(result, 2, INSTALL_HINT)
    assert "--model" in line
