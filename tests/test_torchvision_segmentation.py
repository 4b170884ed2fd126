"""torchvision's pretrained segmentation models by name (``--checkpoint torchvision:NAME``).

Weights are seeded random state dicts written into the temporary ``TORCH_HOME`` under torchvision's real file
names; only the small LR-ASPP MobileNetV3 is run end to end (a random deeplabv3_resnet101 file is hundreds of MB),
the others are checked by name resolution and meta-device shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.models import get_model, get_model_weights

from fcn_app.errors import WeightsError, WeightsUnavailableError
from fcn_app.models.preprocess import normalize_pixels
from fcn_app.scoring import compute_score_map
from fcn_app.segmentation.checkpoint import load_segmentation_model
from fcn_app.segmentation.datasets import VOC_CLASSES
from fcn_app.segmentation.pretrained import TORCHVISION_MODELS, torchvision_weights

from helpers import random_rgb, random_state_for_shapes
from helpers_cli import run_in_process

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = "lraspp_mobilenet_v3_large"


def random_segmentation_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights of torchvision's ``name`` with the pretrained file's keys (auxiliary head included)."""
    with torch.device("meta"):
        extra = {} if name.startswith("lraspp") else {"aux_loss": True}
        shapes = {key: value.shape for key, value in get_model(name, weights=None, weights_backbone=None,
                                                                num_classes=21, **extra).state_dict().items()}
    return random_state_for_shapes(shapes, seed)


@pytest.fixture(scope="module")
def small_weights(torch_home) -> dict[str, torch.Tensor]:
    state = random_segmentation_state(SMALL)
    path = torch_home / "hub" / "checkpoints" / Path(get_model_weights(SMALL).DEFAULT.url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


def torchvision_output(state: dict[str, torch.Tensor], image: np.ndarray) -> torch.Tensor:
    """torchvision's own model on the same pixels, normalised with its weights' mean and std."""
    model = get_model(SMALL, weights=None, weights_backbone=None, num_classes=21).eval()
    model.load_state_dict(state)
    transforms = get_model_weights(SMALL).DEFAULT.transforms()
    with torch.no_grad():
        return model(normalize_pixels(image[None], transforms.mean, transforms.std))["out"][0]


@pytest.mark.slow
def test_the_scores_are_torchvisions_own(small_weights):
    network, class_names, description = load_segmentation_model(f"torchvision:{SMALL}")
    assert class_names == list(VOC_CLASSES)  # torchvision's __background__ is VOC's background
    assert description["published"]["miou"] == get_model_weights(SMALL).DEFAULT.meta["_metrics"][
        "COCO-val2017-VOC-labels"]["miou"]
    for size in ((37, 50), (64, 48)):
        image = random_rgb(*size, seed=size[0])
        score_map = compute_score_map(network, image, precision="fp32", max_memory="1M")  # no tiles even so
        assert score_map.logits.shape == (21, *size) and score_map.categories == list(VOC_CLASSES)
        torch.testing.assert_close(score_map.logits, torchvision_output(small_weights, image), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHVISION_MODELS)
def test_every_name_resolves_to_pretrained_voc_weights_of_the_right_shapes(name):
    weights = torchvision_weights(name)
    assert weights.name == "COCO_WITH_VOC_LABELS_V1" and len(weights.meta["categories"]) == 21
    assert Path(weights.url).name.startswith(name)
    with torch.device("meta"):  # shapes only: what the loader builds before the file's tensors are assigned
        model = get_model(name, weights=None, weights_backbone=None, num_classes=len(weights.meta["categories"]),
                          **({} if name.startswith("lraspp") else {"aux_loss": True}))
        logits = model.eval()(torch.zeros(1, 3, 33, 47, device="meta"))["out"]
    assert logits.shape == (1, 21, 33, 47)


def test_unknown_names_and_missing_weights_are_one_line():
    with pytest.raises(WeightsError, match="did you mean fcn_resnet50"):
        load_segmentation_model("torchvision:fcn_resnet5")
    with pytest.raises(WeightsUnavailableError, match="fcn_resnet101_coco-7ecb50ca.pth"):
        load_segmentation_model("torchvision:fcn_resnet101")


@pytest.mark.slow
def test_the_commands_take_torchvision_names(small_weights, tmp_path, capsys):
    checkpoint = f"torchvision:{SMALL}"
    photos = tmp_path / "photos"
    photos.mkdir()
    for number in range(2):
        Image.fromarray(random_rgb(30 + number, 41, seed=number)).save(photos / f"p{number}.png")
    code, out, err = run_in_process(capsys, photos / "p0.png", "--checkpoint", checkpoint, "--out", tmp_path / "one",
                                    "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["image_size"] == {"width": 41, "height": 30}
    labels = np.asarray(Image.open(tmp_path / "one" / "p0.labels.png"))
    expected = torchvision_output(small_weights, random_rgb(30, 41, seed=0)).argmax(0).numpy()
    np.testing.assert_array_equal(labels, expected)
    code, out, err = run_in_process(capsys, photos / "p0.png", "--checkpoint", checkpoint, "--out", tmp_path / "work",
                                    "--work-size", "20", "--format", "webp", "--json")
    assert code == 0, err
    assert json.loads(out)["work_size"] == {"width": 20, "height": 15, "rule": "20 px"}  # the same task
    labels = np.asarray(Image.open(tmp_path / "work" / "p0.labels.png"))
    seen = np.asarray(Image.fromarray(random_rgb(30, 41, seed=0)).resize((20, 15), Image.LANCZOS))
    expected = F.interpolate(torchvision_output(small_weights, seen)[None], size=(30, 41), mode="bilinear",
                             align_corners=False)[0].argmax(0).numpy()
    np.testing.assert_array_equal(labels, expected)
    assert (tmp_path / "work" / "p0.segmentation.webp").exists()
    code, out, err = run_in_process(capsys, photos, "--checkpoint", checkpoint, "--out", tmp_path / "folder")
    assert code == 0, err
    assert sorted(path.name for path in (tmp_path / "folder").glob("*.labels.png")) == ["p0.labels.png", "p1.labels.png"]
    code, out, err = run_in_process(capsys, "detect", photos / "p1.png", "--checkpoint", checkpoint, "--out",
                                    tmp_path / "boxes")
    assert code == 0, err
    code, out, err = run_in_process(capsys, "export", "--checkpoint", checkpoint, "--input-size", "32", "32", "--out",
                                    tmp_path / "lraspp.onnx")
    assert code == 0 and (tmp_path / "lraspp.onnx").stat().st_size > 1000, err
    dataset = tmp_path / "dataset"
    (dataset / "images").mkdir(parents=True)
    (dataset / "masks").mkdir()
    for number in range(2):
        Image.fromarray(random_rgb(24, 24, seed=number)).save(dataset / "images" / f"{number}.png")
        Image.fromarray(np.full((24, 24), number * 15, np.uint8)).save(dataset / "masks" / f"{number}.png")
    code, out, err = run_in_process(capsys, "evaluate", checkpoint, dataset, "--json", "--device", "cpu")
    assert code == 0, err
    scores = json.loads(out)
    assert scores["published"]["mean_iu"] == pytest.approx(0.579)
    assert "COCO val2017" in scores["published"]["on"] and "not this dataset" in scores["published"]["on"]
    code, out, err = run_in_process(capsys, photos / "p0.png", "--checkpoint", "torchvision:deeplab_resnet50")
    assert code == 2 and len(err.splitlines()) == 1 and "did you mean deeplabv3_resnet50" in err, err
