"""Every torchvision classifier by name: default weights from the (temporary) hub cache, fine-tuned state dicts with
another number of classes and a class-names file, and one-line errors for the usual mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fcn_app.errors import OptionError, WeightsError
from fcn_app.models import load_classifier, load_fcn
from fcn_app.catalog import describe_model
from fcn_app.models.graph import GraphFullyConvolutionalNet
from fcn_app.models.zoo import SUPPORTED_ARCHS, _materialise, build_classifier, default_weights

from helpers import random_rgb, random_state_dict, write_default_weights
from helpers_cli import run_fcn_many

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread")  # shared machines: one torch thread


def test_every_torchvision_classifier_but_the_transformers_is_supported():
    import torchvision

    every = set(torchvision.models.list_models(module=torchvision.models))
    assert set(SUPPORTED_ARCHS) == {name for name in every if not name.startswith(("vit_", "swin_", "maxvit"))}
    for arch in ("resnet50", "convnext_tiny", "efficientnet_b0", "efficientnet_v2_s", "mobilenet_v3_large",
                 "regnet_y_400mf", "densenet121", "resnext50_32x4d", "wide_resnet50_2", "shufflenet_v2_x1_0",
                 "mnasnet1_0", "squeezenet1_1", "googlenet", "inception_v3", "vgg16", "alexnet"):
        assert arch in SUPPORTED_ARCHS


def test_default_weights_load_from_the_hub_cache_with_their_metadata(torch_home):
    """The same cache path and loader as VGG16: seeded weights under torchvision's real file name."""
    write_default_weights(torch_home, "squeezenet1_1", seed=3)
    network = load_fcn("squeezenet1_1")
    weights = default_weights("squeezenet1_1")
    assert isinstance(network, GraphFullyConvolutionalNet)
    assert network.categories == weights.meta["categories"] and network.input_size == (224, 224)
    assert network.mean == tuple(weights.transforms().mean) and network.window == (13, 13)
    assert_equals_the_classifier(network, "squeezenet1_1", random_state_dict("squeezenet1_1", seed=3))


def test_googlenet_weights_keep_torchvisions_input_transform_and_drop_the_aux_heads(torch_home):
    write_default_weights(torch_home, "googlenet", seed=0)  # the file holds aux1/aux2 like torchvision's
    classifier, _ = load_classifier("googlenet")
    assert classifier.transform_input and classifier.aux1 is None and classifier.aux2 is None


def assert_equals_the_classifier(network, arch: str, state: dict, num_classes: int = 1000) -> None:
    """At the training size the converted network's one cell equals torchvision's classifier with ``state``."""
    with torch.device("meta"):
        classifier = build_classifier(arch, num_classes=num_classes)
    classifier = _materialise(classifier, state, "seeded").eval()
    images = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = classifier(images)
        torch.testing.assert_close(network(images)[:, :, 0, 0], expected, rtol=1e-4,
                                   atol=1e-5 * float(expected.abs().max()))


def _fine_tuned(tmp_path: Path, classes: int = 5) -> Path:
    state = random_state_dict("mobilenet_v3_small", seed=1)
    generator = torch.Generator().manual_seed(2)
    state["classifier.3.weight"] = torch.randn(classes, 1024, generator=generator) * 0.05
    state["classifier.3.bias"] = torch.zeros(classes)
    path = tmp_path / "finetuned.pth"
    torch.save(state, path)
    return path


def test_fine_tuned_weights_with_another_number_of_classes_and_their_names(tmp_path):
    path = _fine_tuned(tmp_path)
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n\n  fox \nowl\nbee\n", encoding="utf-8")
    network = load_fcn("mobilenet_v3_small", weights_path=path, classes_path=names)
    assert network.num_classes == 5 and network.categories == ["cat", "dog", "fox", "owl", "bee"]
    assert_equals_the_classifier(network, "mobilenet_v3_small", torch.load(path, weights_only=True), num_classes=5)


def test_fine_tuned_weights_need_matching_class_names(tmp_path):
    path = _fine_tuned(tmp_path)
    with pytest.raises(WeightsError, match="have 5 classes, not ImageNet's 1000; name them") as raised:
        load_fcn("mobilenet_v3_small", weights_path=path)
    assert "\n" not in str(raised.value)
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\n", encoding="utf-8")
    with pytest.raises(WeightsError, match="2 class names for a model with 5 classes"):
        load_fcn("mobilenet_v3_small", weights_path=path, classes_path=names)


@pytest.mark.slow
def test_weights_of_another_architecture_name_the_mismatch(tmp_path):
    path = tmp_path / "squeeze.pth"
    torch.save(random_state_dict("squeezenet1_1"), path)
    with pytest.raises(WeightsError, match=r"does not fit mobilenet_v3_small: .*missing \d+ keys, e.g. ") as raised:
        load_classifier("mobilenet_v3_small", weights_path=path)
    assert "\n" not in str(raised.value)
    state = random_state_dict("mobilenet_v3_small")
    state["features.1.block.0.0.weight"] = torch.zeros(16, 1, 5, 5)
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"wrong shape: features.1.block.0.0.weight \(16, 1, 5, 5\) vs expected "
                                           r"\(16, 1, 3, 3\)"):
        load_classifier("mobilenet_v3_small", weights_path=path)


@pytest.mark.parametrize("name, message", [
    ("resnet51", "unknown model 'resnet51'; did you mean resnet50"),
    ("convnext_tiyn", "did you mean convnext_tiny"),
    ("vit_b_16", "cannot be converted exactly: ViT attends"),
    ("swin_t", "cannot be converted exactly: Swin attends"),
])
def test_model_names_that_do_not_work_say_why_in_one_line(name, message):
    with pytest.raises(OptionError, match=message) as raised:
        load_fcn(name)
    assert "\n" not in str(raised.value) and raised.value.option == "model"


@pytest.mark.parametrize("arch, window, stride", [
    pytest.param("resnet50", (7, 7), 32, marks=pytest.mark.slow), ("squeezenet1_1", (13, 13), 16), ("vgg16", (7, 7), 32),
    pytest.param("efficientnet_v2_s", (12, 12), 32, marks=pytest.mark.slow),
    pytest.param("inception_v3", (8, 8), 32, marks=pytest.mark.slow),
])
def test_catalog_reads_window_and_stride_off_the_converted_network(arch, window, stride):
    info = describe_model(arch)
    assert (info.window, info.stride) == (window, stride)


@pytest.mark.slow
def test_cli_heatmap_of_a_fine_tuned_graph_network_with_class_names(tmp_path):
    from PIL import Image

    path = _fine_tuned(tmp_path)
    names = tmp_path / "names.txt"
    names.write_text("cat\ndog\nfox\nowl\nbee\n", encoding="utf-8")
    image = tmp_path / "photo.png"
    Image.fromarray(random_rgb(300, 420, seed=4)).save(image)
    common = ["heatmap", image, "--model", "mobilenet_v3_small", "--weights", path, "--classes", names]
    named, cam, typo = run_fcn_many([  # side by side: each spends most of its life importing torch
        [*common, "--out", tmp_path / "out", "--json"],
        [*common, "--out", tmp_path / "cam", "--window", "1", "--save-scores"],
        ["heatmap", image, "--model", "resnet51"],
    ])
    assert named.returncode == 0, named.stderr
    assert any(name in named.stdout for name in ("cat", "dog", "fox", "owl", "bee"))
    assert cam.returncode == 0, cam.stderr
    import numpy as np

    scores = np.load(next((tmp_path / "cam").glob("*.npz")))
    # 300×420 px gives a 10×14 feature grid at stride 32: one score per feature cell with --window 1, and the
    # window each score stands for shrinks to one stride
    assert tuple(scores["grid"]) == (10, 14) and tuple(scores["window"]) == (32, 32)
    assert scores["logits"].shape == (5, 10, 14)
    assert typo.returncode == 2 and "did you mean resnet50" in typo.stderr
    assert len(typo.stderr.strip().splitlines()) == 1
