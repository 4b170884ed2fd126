"""torchvision's pretrained segmentation models by name (``--checkpoint torchvision:NAME``).

Weights are seeded random state dicts written into the temporary ``TORCH_HOME`` under torchvision's real file
names. Every name is scored by the product's path and compared with torchvision's own: its builder loading that
file itself (``weights=DEFAULT``, from the hub cache; downloads are made to fail), its own preprocessing
(``weights.transforms()`` without the 520-px resize, which this project leaves out on purpose: see
:mod:`fcn_app.segmentation.pretrained`) and its own forward. The small LR-ASPP MobileNetV3 runs in the quick loop
and end to end through the commands; the others are slow (a random deeplabv3_resnet101 file is hundreds of MB).
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
from fcn_app.scoring import compute_score_map
from fcn_app.segmentation.checkpoint import load_segmentation_model
from fcn_app.segmentation.datasets import VOC_CLASSES
from fcn_app.segmentation.pretrained import TORCHVISION_MODELS, torchvision_weights

from helpers import assert_labels_where_decided, random_rgb, random_state_for_shapes
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


def write_segmentation_weights(torch_home: Path, name: str, seed: int = 0) -> Path:
    """Seeded random weights of ``name`` in ``torch_home``'s hub cache, under torchvision's own file name."""
    path = torch_home / "hub" / "checkpoints" / Path(get_model_weights(name).DEFAULT.url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_segmentation_state(name, seed), path)
    return path


@pytest.fixture(scope="module")
def small_weights(torch_home) -> Path:
    return write_segmentation_weights(torch_home, SMALL)


@pytest.fixture
def no_downloads(monkeypatch):
    """torchvision's own loading must find the file in the hub cache: a download attempt fails the test."""
    def refuse(url, *args, **kwargs):
        raise AssertionError(f"a test tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def torchvision_model(name: str) -> torch.nn.Module:
    """torchvision's own model with its pretrained weights, which its builder reads from the hub cache itself."""
    return get_model(name, weights=get_model_weights(name).DEFAULT).eval()


def torchvision_output(model: torch.nn.Module, name: str, image: np.ndarray) -> torch.Tensor:
    """torchvision's forward on the picture after torchvision's own transforms (PIL in, without the resize)."""
    transforms = get_model_weights(name).DEFAULT.transforms(resize_size=None)
    with torch.no_grad():
        return model(transforms(Image.fromarray(image))[None])["out"][0]


#: float32 sums in another order (the product scores channels-last tensors), so the absolute tolerance is
#: relative to the largest logit compared.
RTOL, ATOL_SCALE = 1e-4, 1e-5


@pytest.mark.parametrize("name", [name if name == SMALL else pytest.param(name, marks=pytest.mark.slow)
                                  for name in TORCHVISION_MODELS])
def test_the_scores_are_torchvisions_own(name, torch_home, small_weights, no_downloads):
    path = small_weights if name == SMALL else write_segmentation_weights(torch_home, name, seed=1)
    try:
        network, class_names, description = load_segmentation_model(f"torchvision:{name}")
        assert class_names == list(VOC_CLASSES)  # torchvision's __background__ is VOC's background
        assert description["published"]["miou"] == get_model_weights(name).DEFAULT.meta["_metrics"][
            "COCO-val2017-VOC-labels"]["miou"]
        reference = torchvision_model(name)
        sizes = ((37, 50), (64, 48)) if name == SMALL else ((29, 42),)
        for size in sizes:
            image = random_rgb(*size, seed=size[0])
            score_map = compute_score_map(network, image, precision="fp32", max_memory="1M")  # no tiles even so
            assert score_map.logits.shape == (21, *size) and score_map.categories == list(VOC_CLASSES)
            expected = torchvision_output(reference, name, image)
            torch.testing.assert_close(score_map.logits, expected, rtol=RTOL,
                                       atol=ATOL_SCALE * float(expected.abs().max()))
    finally:
        if name != SMALL:
            path.unlink()  # hundreds of MB for the ResNet-101 models


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
def test_the_commands_take_torchvision_names(small_weights, no_downloads, tmp_path, capsys):
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
    reference = torchvision_model(SMALL)
    expected = torchvision_output(reference, SMALL, random_rgb(30, 41, seed=0)).softmax(0)
    assert_labels_where_decided(torch.from_numpy(labels.astype(np.int64)), expected)  # near ties may go either way
    code, out, err = run_in_process(capsys, photos / "p0.png", "--checkpoint", checkpoint, "--out", tmp_path / "work",
                                    "--work-size", "20", "--format", "webp", "--json")
    assert code == 0, err
    assert json.loads(out)["work_size"] == {"width": 20, "height": 15, "rule": "20 px"}  # the same task
    labels = np.asarray(Image.open(tmp_path / "work" / "p0.labels.png"))
    seen = np.asarray(Image.fromarray(random_rgb(30, 41, seed=0)).resize((20, 15), Image.LANCZOS))
    expected = F.interpolate(torchvision_output(reference, SMALL, seen)[None], size=(30, 41), mode="bilinear",
                             align_corners=False)[0].softmax(0)
    assert_labels_where_decided(torch.from_numpy(labels.astype(np.int64)), expected)
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
