"""Every documented training path, each against a second path written here: gradient accumulation, the step
and fixed schedules, summed loss and the bias/no-decay parameter groups (a hand-written SGD replay), staged
``init_from`` (32s → 16s → 8s), VOC + SBD merging with ``.mat`` masks, and the command-line failures (NaN loss,
damaged or foreign checkpoints) as one line on stderr.
"""

from __future__ import annotations

import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from helpers import assert_close_scaled, tiny_training_config
from fcn_app.errors import DatasetError, WeightsError
from fcn_app.segmentation.checkpoint import load_checkpoint, load_segmentation_model
from fcn_app.segmentation.datasets import VOCSegmentation, read_label_mask, voc_palette
from fcn_app.models import tiny_vgg_classifier
from fcn_app.segmentation.models import build_segmentation_model
from fcn_app.segmentation.synthetic import draw_shapes_sample, write_shapes_dataset
from fcn_app.segmentation.transforms import Augmentation, SegmentationTorchDataset
from fcn_app.train import loop
from fcn_app.train.config import load_config
from fcn_app.train.ddp import DistributedContext

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
IGNORE = 255


pytestmark = pytest.mark.usefixtures("one_thread")  # shared machines: one torch thread


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_shapes_dataset(tmp_path_factory.mktemp("paths_shapes"), train=8, val=2, size_range=(36, 44), seed=3)


def config_for(shapes: Path, run: Path, *extra: str):
    return tiny_training_config(shapes, run, "data.val_split=null", "data.crop_size=[32, 32]", "data.flip=false",
                                "train.batch_size=2", "train.log_interval=1000", "train.val_interval=1000",
                                "train.device=cpu", *extra)


def hand_written_sgd_replay(config) -> tuple[dict, list[float]]:
    """The training the config describes, written out by hand: plain SGD (no momentum) with the learning rate
    of the documented schedule, biases at 2× the rate without weight decay, ``accumulate`` micro-batches whose
    loss (mean over labelled pixels, or their sum) is averaged before one update. Same seed, same model init,
    same micro-batches (``loop._micro_batches``, whose order and resume offset are tested separately)."""
    train = config.train
    torch.manual_seed(train.seed)
    dataset, _ = loop.open_datasets(config)
    model = build_segmentation_model(config.model.variant, dataset.num_classes, backbone=config.model.backbone,
                                     pretrained=False, class_names=dataset.class_names)
    augmentation = Augmentation(tuple(config.data.scale_range), tuple(config.data.crop_size), config.data.flip)
    torch_set = SegmentationTorchDataset(dataset, model.mean, model.std, augmentation, seed=train.seed)
    context = DistributedContext(rank=0, world_size=1, device=torch.device("cpu"))
    batches = loop._micro_batches(torch_set, config, context, 0)
    model.train()
    losses = []
    for iteration in range(train.iterations):
        if train.scheduler == "step":
            lr = train.lr * train.step_gamma ** (iteration // train.step_size)
        else:
            assert train.scheduler == "fixed"
            lr = train.lr
        step_loss = 0.0
        for _ in range(train.accumulate):
            _, (images, labels) = next(batches)
            loss = F.cross_entropy(model(images), labels, ignore_index=IGNORE, reduction="sum")
            if train.loss_reduction == "mean":
                loss = loss / (labels != IGNORE).sum()
            (loss / train.accumulate).backward()
            step_loss += float(loss.detach()) / train.accumulate
        losses.append(step_loss)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if parameter.grad is None:
                    continue
                if name.endswith("bias"):
                    parameter -= 2 * lr * parameter.grad
                else:
                    parameter -= lr * (parameter.grad + train.weight_decay * parameter)
                parameter.grad = None
    return model.state_dict(), losses


@pytest.mark.parametrize("settings", [
    ("train.scheduler=step", "train.step_size=2", "train.step_gamma=0.5", "train.loss_reduction=mean", "train.lr=0.05"),
    pytest.param(("train.scheduler=fixed", "train.loss_reduction=sum", "train.lr=0.00002"), marks=pytest.mark.slow),
], ids=["step-schedule-mean-loss", "fixed-schedule-summed-loss"])
def test_accumulation_schedule_loss_and_parameter_groups_match_a_hand_written_sgd(shapes, tmp_path, settings):
    # 8 images, batch 2: 4 micro-batches per epoch; 3 steps of 3 micro-batches cross two epoch boundaries
    config = config_for(shapes, tmp_path / "run", "train.accumulate=3", "train.iterations=3", "train.optimizer=sgd",
                        "train.momentum=0", "train.weight_decay=0.5", *settings)
    result = loop.train(config)
    expected, expected_losses = hand_written_sgd_replay(config)
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    # float32 sums in another order (torch.optim's fused add vs the hand-written update): 1e-5 relative, plus 1e-5 of
    # the largest value of each tensor
    for key, value in expected.items():
        assert_close_scaled(checkpoint["model"][key], value, rtol=1e-5, msg=lambda m, key=key: f"{key}: {m}")
    assert_close_scaled(torch.tensor(result.losses), torch.tensor(expected_losses), rtol=1e-5)
    groups = checkpoint["optimizer"]["param_groups"]
    names = [name for name, parameter in build_segmentation_model(
        "fcn8s", 4, backbone="tiny_vgg", pretrained=False).named_parameters() if parameter.requires_grad]
    assert [(group["lr_factor"], group["weight_decay"]) for group in groups] == [(1.0, 0.5), (2.0, 0.0)]
    biases = [name for name in names if name.endswith("bias")]
    weights = [name for name in names if not name.endswith("bias")]
    numbered = weights + biases  # torch numbers parameters group after group
    assert [numbered[i] for i in groups[0]["params"]] == weights
    assert [numbered[i] for i in groups[1]["params"]] == biases and len(biases) > 10
    lrs = [entry["lr"] for entry in checkpoint["history"]["train"]]
    assert lrs == ([0.05, 0.05, 0.025] if "train.scheduler=step" in settings else [0.00002] * 3)


def test_resume_offset_of_accumulated_micro_batches(shapes):
    """Resuming at step ``s`` with ``accumulate`` a starts at micro-batch ``s·a``: the same batches, mid-epoch or not."""
    config = config_for(shapes, Path("unused"), "data.scale_range=[0.7, 1.3]", "data.flip=true")
    dataset, _ = loop.open_datasets(config)
    torch_set = SegmentationTorchDataset(dataset, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25),
                                         Augmentation((0.7, 1.3), (32, 32), True), seed=0)
    context = DistributedContext(rank=0, world_size=1, device=torch.device("cpu"))
    whole = loop._micro_batches(torch_set, config, context, 0)
    reference = [next(whole) for _ in range(11)]
    for start in (3, 4, 7):  # mid-epoch, an epoch boundary, the last batch of an epoch
        resumed = loop._micro_batches(torch_set, config, context, start)
        for epoch_images_labels in reference[start:]:
            epoch, (images, labels) = next(resumed)
            assert epoch == epoch_images_labels[0]
            torch.testing.assert_close(images, epoch_images_labels[1][0], rtol=0, atol=0)
            torch.testing.assert_close(labels, epoch_images_labels[1][1], rtol=0, atol=0)


def test_staged_init_from_32s_to_16s_to_8s_copies_every_matching_tensor(shapes, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fcn_app.train")
    common = ("train.optimizer=sgd", "train.momentum=0", "train.weight_decay=0", "train.scheduler=fixed")
    loop.train(config_for(shapes, tmp_path / "32s", "model.variant=fcn32s", "train.iterations=2",
                          "train.optimizer=adamw", "train.lr=0.003"))
    previous = tmp_path / "32s" / "best.pt"
    for variant in ("fcn16s", "fcn8s"):
        # one step at a learning rate too small to move any weight: what comes out is what init_from put in
        loop.train(config_for(shapes, tmp_path / variant, f"model.variant={variant}", f"model.init_from={previous}",
                              "train.iterations=1", "train.lr=1e-30", *common))
        source = load_checkpoint(previous)["model"]
        stage = load_checkpoint(tmp_path / variant / "best.pt")["model"]
        matching = {key for key in source if key in stage and stage[key].shape == source[key].shape}
        # everything but the final upsampler, whose factor changes (32 → 16 → 8); the finer stage adds a skip
        final_upsampler = max(key for key in source if key.startswith("upsamplers."))
        assert set(source) - matching == {final_upsampler} and len(stage) == len(source) + 3
        assert f"initialised {len(matching)} tensors from {previous}" in caplog.text
        for key in sorted(matching):
            value = source[key]
            if key.endswith("num_batches_tracked"):
                assert int(stage[key]) == int(value) + 1, key  # the count went on from the earlier stage
            elif "running_" in key:
                continue  # batch-norm statistics move with every forward pass in training mode
            else:
                torch.testing.assert_close(stage[key], value, rtol=0, atol=1e-20, msg=lambda m, key=key: f"{key}: {m}")
        previous = tmp_path / variant / "best.pt"


def test_a_broken_sample_read_by_a_loader_worker_is_a_one_line_dataset_error(tmp_path):
    shapes = write_shapes_dataset(tmp_path / "shapes", train=6, val=0, size_range=(36, 40), seed=0)
    (shapes / "masks" / "shape_0003.png").unlink()
    config = config_for(shapes, tmp_path / "run", "data.num_workers=2", "train.iterations=3")
    with pytest.raises(DatasetError) as error:
        loop.train(config)
    assert str(error.value) == (f"{shapes / 'masks' / 'shape_0003.png'}: mask not found; every image needs a mask "
                                "with the same id")


# --- VOC + SBD -------------------------------------------------------------------------------------------------

def write_voc_and_sbd(root: Path) -> tuple[Path, Path, dict[str, np.ndarray]]:
    """A VOC2012 folder (train a, b; val c) and an SBD folder (train b, c, d, e as .mat, f as .png): the SBD
    layout ``img/<id>.jpg``, ``cls/<id>.mat`` holding the MATLAB struct ``GTcls.Segmentation``."""
    from scipy.io import savemat

    rng = np.random.default_rng(7)
    voc, sbd = root / "VOC2012", root / "benchmark_RELEASE" / "dataset"
    for folder in (voc / "JPEGImages", voc / "SegmentationClass", voc / "ImageSets" / "Segmentation",
                   sbd / "img", sbd / "cls"):
        folder.mkdir(parents=True)
    labels_by_id = {}
    for sample_id in "abcdef":
        image, labels = draw_shapes_sample(rng, (40, 44))
        labels[0, :] = IGNORE  # an object border, as VOC and SBD masks have
        labels_by_id[sample_id] = labels
        if sample_id in "abc":
            Image.fromarray(image).save(voc / "JPEGImages" / f"{sample_id}.jpg", quality=95)
            mask = Image.fromarray(labels, mode="P")
            mask.putpalette(voc_palette().tobytes())
            mask.save(voc / "SegmentationClass" / f"{sample_id}.png")
        if sample_id in "bcdef":
            Image.fromarray(image).save(sbd / "img" / f"{sample_id}.jpg", quality=95)
        if sample_id in "bcde":
            savemat(sbd / "cls" / f"{sample_id}.mat", {"GTcls": {
                "Segmentation": labels, "Boundaries": np.zeros((1, 1), dtype=object),
                "CategoriesPresent": np.unique(labels[labels != IGNORE]).astype(np.uint8)}})
        if sample_id == "f":
            Image.fromarray(labels).save(sbd / "cls" / "f.png")
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("a\nb\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("c\n")
    (sbd / "train.txt").write_text("b\nc\nd\ne\nf\n")
    return voc, sbd, labels_by_id


@pytest.mark.slow
def test_sbd_merging_reads_mat_masks_and_leaves_out_voc_ids(tmp_path):
    voc, sbd, labels_by_id = write_voc_and_sbd(tmp_path)
    dataset = VOCSegmentation(voc, "train", sbd_root=sbd, exclude_split="val")
    assert [entry.sample_id for entry in dataset.entries] == ["a", "b", "d", "e", "f"]  # b once, c (val) never
    assert [entry.mask.suffix for entry in dataset.entries] == [".png", ".png", ".mat", ".mat", ".png"]
    for index, entry in enumerate(dataset.entries):
        image, labels = dataset.read(index)
        np.testing.assert_array_equal(labels, labels_by_id[entry.sample_id].astype(np.int64))
        assert image.shape == (40, 44, 3)
    # and a training run over the merged set, validated on VOC val
    config = load_config(REPO / "configs" / "voc_fcn32s.yaml", [
        f"data.root={voc}", f"data.sbd_root={sbd}", "model.backbone=tiny_vgg", "model.pretrained=false",
        "data.num_workers=0", "data.crop_size=[32, 32]", "train.batch_size=5", "train.iterations=1",
        "train.val_interval=1", "train.lr=1e-3", "train.loss_reduction=mean", "train.device=cpu",
        f"run.output_dir={tmp_path / 'run'}", "run.progress=false",
    ])
    result = loop.train(config)
    assert result.iterations == 1 and np.isfinite(result.losses[0])
    assert result.last_scores["pixels"] == int((labels_by_id["c"] != IGNORE).sum())


def test_sbd_without_scipy_is_one_line_with_the_install_hint(tmp_path, monkeypatch):
    voc, sbd, _ = write_voc_and_sbd(tmp_path)
    monkeypatch.setitem(sys.modules, "scipy", None)  # `import scipy.io` now raises ImportError
    monkeypatch.setitem(sys.modules, "scipy.io", None)
    with pytest.raises(DatasetError) as error:
        VOCSegmentation(voc, "train", sbd_root=sbd, exclude_split="val")
    assert "pip install 'fcn-heatmap[voc]'" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(DatasetError, match=r"pip install 'fcn-heatmap\[voc\]'"):
        read_label_mask(sbd / "cls" / "d.mat")
    VOCSegmentation(voc, "train")  # VOC alone needs no scipy


# --- the command line: one line on stderr, nothing on stdout, the right exit code ----------------------------

def run_cli(*arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fcn_app", *arguments], env=ENV, cwd=cwd, capture_output=True,
                          text=True, timeout=240)


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert result.stdout == "", result.stdout
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


@pytest.mark.slow
def test_nan_loss_exits_1_with_one_line(shapes, tmp_path):
    result = run_cli("train", str(REPO / "configs" / "example_folder.yaml"), f"data.root={shapes}",
                     f"run.output_dir={tmp_path / 'run'}", "run.progress=false", "data.crop_size=[32, 32]",
                     "train.optimizer=sgd", "train.lr=1e30", "train.iterations=5", "train.batch_size=2",
                     "train.val_interval=1000", "train.log_interval=1000", cwd=tmp_path)
    assert_one_line_error(result, 1, "loss became", "Lower train.lr")


@pytest.fixture(scope="module")
def bad_checkpoints(shapes, tmp_path_factory):
    """A trained checkpoint cut in half, one whose model description is gone, a classifier's state dict, a pickle
    of a Python object, and a pickle of plain data."""
    folder = tmp_path_factory.mktemp("bad_checkpoints")
    loop.train(config_for(shapes, folder / "run", "train.iterations=1", "train.optimizer=adamw", "train.lr=1e-3"))
    good = (folder / "run" / "best.pt").read_bytes()
    (folder / "truncated.pt").write_bytes(good[: len(good) // 2])
    payload = load_checkpoint(folder / "run" / "best.pt")
    del payload["model_config"]
    torch.save(payload, folder / "no_model_config.pt")
    torch.save(tiny_vgg_classifier().state_dict(), folder / "classifier.pt")
    (folder / "object.pkl").write_bytes(pickle.dumps(Path("x")))
    (folder / "plain.pkl").write_bytes(pickle.dumps([1, 2, 3]))
    return folder


BAD_NAMES = ["truncated.pt", "no_model_config.pt", "classifier.pt", "object.pkl", "plain.pkl"]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_a_damaged_or_foreign_checkpoint_is_a_one_line_weights_error(bad_checkpoints, name):
    with pytest.raises(WeightsError) as error:
        load_segmentation_model(bad_checkpoints / name)
    assert name in str(error.value) and "\n" not in str(error.value)
    assert WeightsError.exit_code == 2


@pytest.mark.slow
@pytest.mark.parametrize("name", ["truncated.pt", "no_model_config.pt", "object.pkl"])
def test_evaluate_with_a_damaged_or_foreign_checkpoint_is_one_line_exit_2(shapes, bad_checkpoints, name, tmp_path):
    result = run_cli("evaluate", str(bad_checkpoints / name), str(shapes), "--split", "val.txt", cwd=tmp_path)
    assert_one_line_error(result, 2, name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["truncated.pt", "classifier.pt"])
def test_heatmap_with_a_damaged_or_foreign_checkpoint_is_one_line_exit_2(shapes, bad_checkpoints, name, tmp_path):
    image = shapes / "images" / "shape_0000.png"
    result = run_cli(str(image), "--checkpoint", str(bad_checkpoints / name), "--out", str(tmp_path / "out"),
                     cwd=tmp_path)
    assert_one_line_error(result, 2, name)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
