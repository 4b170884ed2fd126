"""Imported reference FCN-32s/16s/8s weights compute what the reference network computes.

The second path is an independent re-implementation of the reference architecture written here from the paper's
prototxts (as republished for PyTorch): conv1_1 padded by 100, Caffe's ceil-mode pooling, fixed crop offsets 19 /
5, 27 / 5, 9, 31, BGR input in 0–255 minus the mean. It is filled with seeded random weights (random upsampling
kernels too, so nothing relies on them being bilinear), imported, and compared on every output pixel.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcn_app.geometry import plan_context_axis
from fcn_app.models.preprocess import normalize_pixels
from fcn_app.segmentation.reference import import_reference_fcn, reference_model

from helpers import random_rgb
from helpers_cli import run_in_process

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN_BGR = (104.00699, 116.66877, 122.67892)
VARIANTS = ("fcn32s", "fcn16s", "fcn8s", "fcn8s-atonce")
#: odd and even, below and above one stride (the reference sees ≥ 200 px of each, its padding included); two
#: per variant, each size for several variants — every forward pass of VGG16 costs about a second
SIZES = {"fcn32s": ((33, 47), (64, 64)), "fcn16s": ((64, 64), (1, 2)), "fcn8s": ((1, 2), (33, 47)),
         "fcn8s-atonce": ((33, 47), (64, 64))}


class ReferenceFCN(nn.Module):
    """The reference FCN-32s/16s/8s(-at-once) for 21 classes, written out layer by layer."""

    def __init__(self, variant: str, classes: int = 21) -> None:
        super().__init__()
        self.variant = variant
        widths = [(3, 64), (64, 64), (64, 128), (128, 128), (128, 256), (256, 256), (256, 256), (256, 512),
                  (512, 512), (512, 512), (512, 512), (512, 512), (512, 512)]
        for (cin, cout), name in zip(widths, CONV_NAMES):
            setattr(self, f"conv{name}", nn.Conv2d(cin, cout, 3, padding=100 if name == "1_1" else 1))
        self.fc6 = nn.Conv2d(512, 4096, 7)
        self.fc7 = nn.Conv2d(4096, 4096, 1)
        self.score_fr = nn.Conv2d(4096, classes, 1)
        if variant == "fcn32s":
            self.upscore = nn.ConvTranspose2d(classes, classes, 64, stride=32, bias=False)
        else:
            self.score_pool4 = nn.Conv2d(512, classes, 1)
            self.upscore2 = nn.ConvTranspose2d(classes, classes, 4, stride=2, bias=False)
        if variant == "fcn16s":
            self.upscore16 = nn.ConvTranspose2d(classes, classes, 32, stride=16, bias=False)
        if variant.startswith("fcn8s"):
            self.score_pool3 = nn.Conv2d(256, classes, 1)
            self.upscore_pool4 = nn.ConvTranspose2d(classes, classes, 4, stride=2, bias=False)
            self.upscore8 = nn.ConvTranspose2d(classes, classes, 16, stride=8, bias=False)

    def features(self, x):
        """pool3, pool4 and fc7 (the part all variants share)."""
        pools = []
        for block in ((0, 2), (2, 4), (4, 7), (7, 10), (10, 13)):
            for name in CONV_NAMES[block[0]:block[1]]:
                x = F.relu(getattr(self, f"conv{name}")(x))
            x = F.max_pool2d(x, 2, stride=2, ceil_mode=True)
            pools.append(x)
        return pools[2], pools[3], F.relu(self.fc7(F.relu(self.fc6(pools[4]))))

    def head(self, features, height: int, width: int):
        pool3, pool4, fc7 = features
        score = self.score_fr(fc7)
        if self.variant == "fcn32s":
            return self.upscore(score)[:, :, 19:19 + height, 19:19 + width]
        up2 = self.upscore2(score)
        scale4, scale3 = (0.01, 0.0001) if self.variant == "fcn8s-atonce" else (1.0, 1.0)
        pool4_score = self.score_pool4(pool4 * scale4)[:, :, 5:5 + up2.shape[2], 5:5 + up2.shape[3]]
        fused = up2 + pool4_score
        if self.variant == "fcn16s":
            return self.upscore16(fused)[:, :, 27:27 + height, 27:27 + width]
        up4 = self.upscore_pool4(fused)
        pool3_score = self.score_pool3(pool3 * scale3)[:, :, 9:9 + up4.shape[2], 9:9 + up4.shape[3]]
        return self.upscore8(up4 + pool3_score)[:, :, 31:31 + height, 31:31 + width]

    def forward(self, x):
        return self.head(self.features(x), *x.shape[-2:])


CONV_NAMES = ["1_1", "1_2", "2_1", "2_2", "3_1", "3_2", "3_3", "4_1", "4_2", "4_3", "5_1", "5_2", "5_3"]


def reference_input(image: np.ndarray) -> torch.Tensor:
    """The reference's preprocessing: BGR, 0–255, minus the mean, no std."""
    bgr = torch.from_numpy(image[..., ::-1].astype(np.float32).copy()).permute(2, 0, 1)[None]
    return bgr - torch.tensor(MEAN_BGR, dtype=torch.float32).view(1, 3, 1, 1)


def seeded_references() -> dict[str, ReferenceFCN]:
    """Random reference weights, He-scaled so activations stay in range: one backbone shared by all variants
    (it is most of the cost), score layers and upsampling kernels (not bilinear) per variant."""
    generator = torch.Generator().manual_seed(0)
    networks, shared = {}, {}
    for variant in VARIANTS:
        with torch.device("meta"):
            network = ReferenceFCN(variant)
        state = {}
        for key, tensor in network.state_dict().items():
            if key.startswith(("conv", "fc")) and key in shared:
                state[key] = shared[key]
                continue
            fan_in = 4 if key.startswith("upscore") else tensor[0].numel()
            scale = 0.01 if key.endswith("bias") else (2.0 / fan_in) ** 0.5
            state[key] = torch.randn(tensor.shape, generator=generator) * scale
            if key.startswith(("conv", "fc")):
                shared[key] = state[key]
        network.load_state_dict(state, assign=True)
        networks[variant] = network.eval()
    return networks


def import_from_memory(state: dict[str, torch.Tensor], variant: str) -> dict:
    """:func:`import_reference_fcn` on an in-memory state dict (reading files is covered by the CLI tests)."""
    import fcn_app.segmentation.reference as reference

    original = reference.read_state_dict
    reference.read_state_dict = lambda path: state
    try:
        return import_reference_fcn(f"memory-{variant}.pth", variant)
    finally:
        reference.read_state_dict = original


def model_from_payload(payload: dict):
    """The imported model as the checkpoint loader rebuilds it (file I/O aside)."""
    with torch.device("meta"):
        model = reference_model(payload["model_config"]["variant"])
    model.load_state_dict(payload["model"], assign=True)
    model.mean, model.std = tuple(payload["model_config"]["mean"]), tuple(payload["model_config"]["std"])
    return model.eval()


@pytest.fixture(scope="module")
def compared():
    """{variant: {size: (max |Δ|, max |reference logit|)}}, asserting closeness on every pixel as it goes."""
    networks = seeded_references()
    images = {size: random_rgb(*size, seed=sum(size)) for sizes in SIZES.values() for size in sizes}
    results = {variant: {} for variant in VARIANTS}
    with torch.no_grad():
        for size, image in images.items():
            features = networks["fcn32s"].features(reference_input(image))  # the shared backbone, once per size
            for variant, network in networks.items():
                if size not in SIZES[variant]:
                    continue
                expected = network.head(features, *size)
                model = model_from_payload(import_from_memory(network.state_dict(), variant))
                actual = model(normalize_pixels(image[None], model.mean, model.std))
                assert actual.shape == expected.shape == (1, 21, *size)
                peak = float(expected.abs().max())
                torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * peak)
                results[variant][size] = (float((actual - expected).abs().max()), peak)
    print("\nmax |Δ| imported model vs reference re-implementation (max |reference logit|):")
    for variant, deltas in results.items():
        print(f"  {variant:13s} " + "  ".join(f"{h}×{w}: {delta:.2e} ({peak:.3g})"
                                                for (h, w), (delta, peak) in deltas.items()))
    return results


@pytest.mark.slow
def test_imported_models_compute_the_reference_on_every_pixel(compared):
    assert {variant: set(deltas) for variant, deltas in compared.items()} == {variant: set(SIZES[variant]) for variant in VARIANTS}


class _FirstLayerSeen(Exception):
    """Raised by a hook after conv1_1: the rest of VGG16 is not needed to check the input folding."""


def first_layer_reference_state(variant: str, seed: int = 2) -> dict[str, torch.Tensor]:
    """A reference state dict whose conv1_1 is seeded and different for every filter and input channel; every other
    tensor is a broadcast view of a small random one (as in :func:`reference_file`), so the file stays small."""
    generator = torch.Generator().manual_seed(seed)
    with torch.device("meta"):
        shapes = {key: tensor.shape for key, tensor in ReferenceFCN(variant).state_dict().items()}
    state = {key: (0.01 * torch.randn(shape[1:], generator=generator)).expand(shape) if len(shape) > 1
             else 0.01 * torch.randn(shape, generator=generator) for key, shape in shapes.items()}
    state["conv1_1.weight"] = torch.randn(64, 3, 3, 3, generator=generator) * (2.0 / 27) ** 0.5
    state["conv1_1.bias"] = torch.randn(64, generator=generator)
    return state


def test_the_import_folds_bgr_and_the_caffe_mean_into_rgb_input(tmp_path, capsys):
    """Quick: the checkpoint ``import-weights`` writes, loaded as ``--checkpoint`` loads it, scored by the product's
    scoring path on RGB pixels, gives at conv1_1 what the reference computes by hand on the same image — BGR, 0–255
    minus the Caffe mean, padded by 100 — on every output value (context border included). Stopped after conv1_1:
    the BGR flip and the mean/std folding act on the input alone, and the rest is compared by the slow test above."""
    from fcn_app.scoring import compute_score_map
    from fcn_app.segmentation.checkpoint import load_segmentation_model

    state = first_layer_reference_state("fcn32s")
    torch.save(state, tmp_path / "fcn32s.pth")
    code, out, err = run_in_process(capsys, "import-weights", tmp_path / "fcn32s.pth", "--variant", "fcn32s",
                                    "--out", tmp_path / "fcn32s-voc.pt")
    assert code == 0, err
    model = load_segmentation_model(tmp_path / "fcn32s-voc.pt")[0]
    conv1_1 = next(layer for layer in model.to_pool3 if isinstance(layer, nn.Conv2d))
    seen = []

    def stop_after_conv1_1(module, inputs, output):
        seen.append(output.detach().clone())
        raise _FirstLayerSeen

    hook = conv1_1.register_forward_hook(stop_after_conv1_1)
    size = (5, 9)
    image = random_rgb(*size, seed=5)
    try:
        with pytest.raises(_FirstLayerSeen):
            compute_score_map(model, image, precision="fp32")
    finally:
        hook.remove()
    with torch.no_grad():
        expected = F.conv2d(reference_input(image), state["conv1_1.weight"], state["conv1_1.bias"], padding=100)
    (actual,) = seen
    assert actual.shape == expected.shape == (1, 64, size[0] + 198, size[1] + 198)
    torch.testing.assert_close(actual.contiguous(), expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


def test_the_derived_crops_are_the_references_for_every_length():
    """Caffe's offsets for every length 1…160 and both fusions: the geometry alone, without running."""
    with torch.device("meta"):
        models = {variant: reference_model(variant) for variant in ("fcn32s", "fcn16s", "fcn8s")}
    expected = {"fcn32s": ((), 19), "fcn16s": ((5,), 27), "fcn8s": ((5, 9), 31)}
    for length in range(1, 161):
        for variant, model in models.items():
            plan = plan_context_axis(*model._axes[0], length, model.context_padding)
            assert plan.padding == (99, 99)
            assert (tuple(fusion[1].start for fusion in plan.fusions), plan.start) == expected[variant], length


# ---- the command: import-weights, its one-line errors, and the checkpoint it writes in use ----------------------

def reference_file(path, variant: str, *, drop: str | None = None, extra: str | None = None,
                   reshape: tuple[str, tuple[int, ...]] | None = None):
    """A reference state dict of ``variant`` at ``path`` whose tensors are broadcast views of small random ones,
    so the file (and the checkpoint made from it) stay small; optionally a key dropped, added or reshaped."""
    with torch.device("meta"):
        shapes = {key: tensor.shape for key, tensor in ReferenceFCN(variant).state_dict().items()}
    generator = torch.Generator().manual_seed(1)
    state = {key: (0.01 * torch.randn(shape[1:], generator=generator)).expand(shape) if len(shape) > 1
             else 0.01 * torch.randn(shape, generator=generator) for key, shape in shapes.items()}
    if drop:
        del state[drop]
    if extra:
        state[extra] = torch.zeros(3)
    if reshape:
        state[reshape[0]] = torch.zeros(()).expand(reshape[1])
    torch.save(state, path)
    return path


@pytest.mark.slow
def test_import_weights_writes_a_checkpoint_the_heatmap_command_runs(tmp_path, capsys):
    from PIL import Image

    from fcn_app.segmentation.checkpoint import load_checkpoint, load_segmentation_model
    from fcn_app.segmentation.datasets import VOC_CLASSES
    from fcn_app.segmentation.published import published_scores

    source = reference_file(tmp_path / "fcn16s.pth", "fcn16s")
    code, out, err = run_in_process(capsys, "import-weights", source, "--variant", "fcn16s", "--out",
                                    tmp_path / "fcn16s-voc.pt")
    assert code == 0, err
    payload = load_checkpoint(tmp_path / "fcn16s-voc.pt")
    assert payload["class_names"] == list(VOC_CLASSES)
    assert payload["model_config"]["context_padding"] == 99 and payload["model_config"]["ceil_mode_pooling"]
    loaded = load_segmentation_model(tmp_path / "fcn16s-voc.pt")[0]  # what --checkpoint, evaluate and export run
    assert loaded.context_padding == 99 and all(layer.ceil_mode for layer in loaded.modules()
                                                if isinstance(layer, nn.MaxPool2d))
    assert loaded.mean == pytest.approx(tuple(value / 255 for value in reversed(MEAN_BGR)))
    Image.fromarray(random_rgb(21, 30, seed=3)).save(tmp_path / "photo.png")
    code, out, err = run_in_process(capsys, tmp_path / "photo.png", "--checkpoint", tmp_path / "fcn16s-voc.pt",
                                    "--out", tmp_path / "out", "--json")
    assert code == 0, err
    labels = np.asarray(Image.open(tmp_path / "out" / "photo.labels.png"))
    assert labels.shape == (21, 30) and labels.max() < 21
    assert (tmp_path / "out" / "photo.segmentation.png").is_file()
    dataset = tmp_path / "voc2011"
    (dataset / "images").mkdir(parents=True)
    (dataset / "masks").mkdir()
    Image.fromarray(random_rgb(20, 20, seed=4)).save(dataset / "images" / "2007_000033.png")
    Image.fromarray(np.full((20, 20), 15, np.uint8)).save(dataset / "masks" / "2007_000033.png")
    (dataset / "seg11valid.txt").write_text("2007_000033\n")
    code, out, err = run_in_process(capsys, "evaluate", tmp_path / "fcn16s-voc.pt", dataset, "--split",
                                    "seg11valid.txt", "--json", "--device", "cpu")
    assert code == 0, err
    assert json.loads(out)["published"] == {
        "mean_iu": pytest.approx(0.65), "on": "PASCAL VOC 2011 seg11valid (Shelhamer, Long & Darrell, PAMI 2017)"}
    payload = load_checkpoint(tmp_path / "fcn16s-voc.pt")
    assert published_scores(payload, "val.txt") is None  # another split: nothing comparable was published


BAD_FILES = {
    "missing": (dict(drop="conv1_2.weight"), "fcn32s", "missing conv1_2.weight (expected 64×64×3×3)"),
    "wrong shape": (dict(reshape=("fc6.weight", (4096, 25088))), "fcn32s",
                    "fc6.weight is 4096×25088, expected 4096×512×7×7"),
    "extra": (dict(extra="score_pool5.weight"), "fcn32s", "unexpected score_pool5.weight (3)"),
    "wrong variant": ({}, "fcn8s", "missing upscore.weight (expected 21×21×64×64); its keys are those of fcn8s or "
                                   "fcn8s-atonce"),
}


@pytest.mark.parametrize("case", [case if case == "missing" else pytest.param(case, marks=pytest.mark.slow)
                                  for case in BAD_FILES])
def test_a_state_dict_that_does_not_fit_gets_one_line_and_nothing_is_written(tmp_path, capsys, case):
    changes, file_variant, message = BAD_FILES[case]
    source = reference_file(tmp_path / "src.pth", file_variant, **changes)
    code, out, err = run_in_process(capsys, "import-weights", source, "--variant", "fcn32s", "--out",
                                    tmp_path / "out.pt")
    assert (code, out) == (2, ""), err
    assert len(err.splitlines()) == 1 and message in err and "Traceback" not in err, err
    assert not (tmp_path / "out.pt").exists() and list(tmp_path.iterdir()) == [source]


class _RunsCode:
    def __reduce__(self):
        import os

        return os.system, ("echo this should never run",)


@pytest.mark.parametrize("case", ["code", "not a checkpoint", "no file",
                                  pytest.param("unknown variant", marks=pytest.mark.slow)])
def test_unreadable_or_unsafe_sources_get_one_line(tmp_path, capsys, case):
    source, variant = tmp_path / "src.pth", "fcn8s"
    if case == "code":
        torch.save({"conv1_1.weight": _RunsCode()}, source)
    elif case == "not a checkpoint":
        source.write_bytes(b"\x00garbage" * 10)
    elif case == "unknown variant":
        source, variant = reference_file(source, "fcn8s"), "fcn4s"
    expected = {"code": "refused to load", "not a checkpoint": "not a PyTorch checkpoint",
                "no file": "not found", "unknown variant": "--variant: unknown variant 'fcn4s'"}[case]
    code, out, err = run_in_process(capsys, "import-weights", source, "--variant", variant, "--out", tmp_path / "o.pt")
    assert (code, out) == (2, ""), err
    assert len(err.splitlines()) == 1 and expected in err, err
    assert not (tmp_path / "o.pt").exists()


@pytest.mark.slow
def test_training_from_an_imported_model_keeps_its_layout_and_gives_new_classes_new_score_layers(tmp_path):
    """model.init_from with a checkpoint laid out like an imported one (context, ceil-mode pooling, 0–255
    normalisation, 21 VOC classes) fine-tuned on other classes. On tiny_vgg, so a few steps take a second; as
    FCN-32s, since tiny_vgg's 1×1 "fc6" puts its upsampled scores before the first pool4 cell, where the
    reference's crops cannot align a skip (VGG16's 7×7 fc6 with 100 px of context can, see above)."""
    from fcn_app.segmentation.checkpoint import load_checkpoint, save_checkpoint
    from fcn_app.segmentation.datasets import VOC_CLASSES
    from fcn_app.segmentation.models import build_segmentation_model
    from fcn_app.segmentation.synthetic import SHAPE_CLASSES, write_shapes_dataset
    from fcn_app.train import loop

    from helpers import tiny_training_config

    torch.manual_seed(0)
    source = build_segmentation_model("fcn32s", len(VOC_CLASSES), backbone="tiny_vgg", pretrained=False,
                                      class_names=VOC_CLASSES, context_padding=15, ceil_mode_pooling=True,
                                      learnable_upsampling=True)
    with torch.no_grad():
        for parameter in source.parameters():
            parameter.normal_(0, 0.05)
    config = source.model_config() | {"mean": [0.48, 0.46, 0.41], "std": [1 / 255] * 3}
    save_checkpoint(tmp_path / "imported.pt", {"model_config": config, "class_names": list(VOC_CLASSES),
                                               "model": source.state_dict(), "imported_from": {"reference": "fcn32s"}})
    shapes = write_shapes_dataset(tmp_path / "shapes", train=4, val=0, size_range=(30, 36), seed=1)
    loop.train(tiny_training_config(shapes, tmp_path / "run", "model.variant=fcn32s", f"model.init_from={tmp_path / 'imported.pt'}",
                                    "data.val_split=null", "data.crop_size=[32, 32]", "train.batch_size=2",
                                    "train.iterations=2", "train.lr=1e-30", "train.device=cpu"))
    tuned = load_checkpoint(tmp_path / "run" / "best.pt")
    layout = tuned["model_config"]
    assert (layout["context_padding"], layout["ceil_mode_pooling"], layout["mean"], layout["std"]) == (
        15, True, config["mean"], config["std"])
    weights, original = tuned["model"], source.state_dict()
    backbone = [key for key in original if key.startswith(("to_pool", "head.")) and "running_" not in key
                and "num_batches" not in key]  # batch-norm statistics move with every training step
    assert backbone and all(torch.equal(weights[key], original[key]) for key in backbone)
    assert weights["score_fr.weight"].shape[0] == len(SHAPE_CLASSES) != len(VOC_CLASSES)
    assert weights["score_fr.weight"].abs().max() < 1e-20  # a new score layer starts from zero (lr 1e-30 since)


@pytest.mark.slow
def test_a_dilated_resnet50_backbone_trains_from_imagenet_weights_of_the_zoo(torch_home, tmp_path):
    """model.backbone resnet50: ImageNet weights through the zoo (here: seeded random ones under torchvision's file
    name in TORCH_HOME), output stride 8 by dilation, a few training steps, and a checkpoint that loads back."""
    from fcn_app.segmentation.checkpoint import load_segmentation_model
    from fcn_app.segmentation.synthetic import SHAPE_CLASSES, write_shapes_dataset
    from fcn_app.train import loop

    from helpers import tiny_training_config, write_default_weights

    weights_file = write_default_weights(torch_home, "resnet50", seed=5)
    shapes = write_shapes_dataset(tmp_path / "shapes", train=2, val=0, size_range=(30, 36), seed=2)
    result = loop.train(tiny_training_config(shapes, tmp_path / "run", "model.backbone=resnet50",
                                             "model.pretrained=true", "data.val_split=null", "data.crop_size=[32, 32]",
                                             "train.batch_size=2", "train.iterations=1", "train.lr=1e-30",
                                             "train.momentum=0", "train.weight_decay=0", "train.device=cpu"))
    assert len(result.losses) == 1 and np.isfinite(result.losses[0])
    model, class_names, _ = load_segmentation_model(tmp_path / "run" / "best.pt")
    assert class_names == list(SHAPE_CLASSES)
    imagenet = torch.load(weights_file, mmap=True, weights_only=True)
    torch.testing.assert_close(model.body[0].weight, imagenet["conv1.weight"], rtol=0, atol=1e-20)  # the zoo's file
    layer4 = model.body[7]
    assert layer4[0].conv2.stride == (1, 1) and layer4[0].conv2.dilation == (2, 2)  # stride traded for dilation
    with torch.no_grad():
        assert model.body(torch.zeros(1, 3, 64, 48)).shape[-2:] == (8, 6)  # output stride 8
        assert model(torch.zeros(1, 3, 37, 29)).shape == (1, len(SHAPE_CLASSES), 37, 29)
