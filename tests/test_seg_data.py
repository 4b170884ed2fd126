"""Datasets (VOC and folder layouts, their errors), joint transforms, mixed-size batches, metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from fcn_app.errors import DatasetError
from fcn_app.segmentation.datasets import IGNORE_INDEX, FolderSegmentation, VOCSegmentation, voc_palette
from fcn_app.segmentation.metrics import confusion_matrix, segmentation_scores
from fcn_app.segmentation.transforms import Augmentation, augment, collate_padded, resize_nearest

from helpers import random_rgb


def _palette_png(path, labels):
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(voc_palette().reshape(-1).tolist())
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)


def make_voc(root, ids=("a", "b"), size=(20, 30), label=7):
    (root / "JPEGImages").mkdir(parents=True)
    for number, sample_id in enumerate(ids):
        Image.fromarray(random_rgb(*size, seed=number)).save(root / "JPEGImages" / f"{sample_id}.jpg")
        labels = np.zeros(size, np.uint8)
        labels[5:10, 5:15] = label
        labels[0, :] = IGNORE_INDEX
        _palette_png(root / "SegmentationClass" / f"{sample_id}.png", labels)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("\n".join(ids) + "\n")
    return root


def test_voc_layout_reads_palette_masks_with_ignore(tmp_path):
    dataset = VOCSegmentation(make_voc(tmp_path / "VOC2012"), "train")
    image, labels = dataset.read(1)
    assert image.shape == (20, 30, 3) and labels.shape == (20, 30)
    assert set(np.unique(labels)) == {0, 7, IGNORE_INDEX}
    assert dataset.num_classes == 21 and dataset.class_names[7] == "car"


@pytest.mark.parametrize("problem,match", [
    ("missing_mask", "mask not found"),
    ("size_mismatch", "mask is 31×20 but image"),
    ("label_out_of_range", "label 30 but the dataset has 21 classes"),
    ("escaping_entry", "points outside the dataset root"),
])
def test_voc_errors_are_clear(tmp_path, problem, match):
    root = make_voc(tmp_path / "VOC2012")
    if problem == "missing_mask":
        (root / "SegmentationClass" / "b.png").unlink()
    elif problem == "size_mismatch":
        _palette_png(root / "SegmentationClass" / "b.png", np.zeros((20, 31), np.uint8))
    elif problem == "label_out_of_range":
        _palette_png(root / "SegmentationClass" / "b.png", np.full((20, 30), 30, np.uint8))
    else:
        (root / "ImageSets" / "Segmentation" / "train.txt").write_text("a\n../../etc/passwd\n")
    with pytest.raises(DatasetError, match=match):
        dataset = VOCSegmentation(root, "train")
        dataset.read(1)


def test_folder_layout_with_class_file_and_label_check(tmp_path):
    (tmp_path / "images").mkdir()
    Image.fromarray(random_rgb(12, 16)).save(tmp_path / "images" / "x.png")
    _palette_png(tmp_path / "masks" / "x.png", np.full((12, 16), 2, np.uint8))
    with pytest.raises(DatasetError, match="class-names file not found"):
        FolderSegmentation(tmp_path)
    (tmp_path / "classes.txt").write_text("bg\nthing\nother\n")
    dataset = FolderSegmentation(tmp_path)
    assert dataset.class_names == ["bg", "thing", "other"] and dataset.read(0)[1].max() == 2
    (tmp_path / "classes.txt").write_text("bg\nthing\n")
    with pytest.raises(DatasetError, match="label 2 but the dataset has 2 classes"):
        FolderSegmentation(tmp_path).read(0)


def test_transforms_keep_labels_nearest_and_pad_crops_with_ignore():
    image = random_rgb(10, 12)
    labels = np.random.default_rng(0).choice([0, 3, 5, IGNORE_INDEX], size=(10, 12))
    augmentation = Augmentation(scale_range=(0.7, 1.6), crop_size=(16, 16), flip=True)
    for seed in range(5):
        out_image, out_labels = augment(image, labels, augmentation, np.random.default_rng(seed), (124, 116, 104))
        assert out_image.shape == (16, 16, 3) and out_labels.shape == (16, 16)
        assert set(np.unique(out_labels)) <= {0, 3, 5, IGNORE_INDEX}  # no blended labels
    # smaller than the crop: the padding is ignore
    _, padded = augment(image, np.zeros((10, 12), np.int64), Augmentation(crop_size=(16, 16)),
                        np.random.default_rng(0), (0, 0, 0))
    assert (padded == IGNORE_INDEX).sum() == 16 * 16 - 10 * 12
    # nearest resize of an integer upscale repeats each label exactly
    np.testing.assert_array_equal(resize_nearest(labels, (20, 24)), labels.repeat(2, 0).repeat(2, 1))


def test_mixed_size_batch_is_padded_with_ignore():
    samples = [(torch.ones(3, 5, 7), torch.full((5, 7), 1)), (torch.ones(3, 9, 4), torch.full((9, 4), 2))]
    images, labels = collate_padded(samples)
    assert images.shape == (2, 3, 9, 7) and labels.shape == (2, 9, 7)
    assert (labels[0, 5:] == IGNORE_INDEX).all() and (labels[1, :, 4:] == IGNORE_INDEX).all()
    assert images[0, :, 5:].abs().sum() == 0 and (labels[1, :, :4] == 2).all()


def test_metrics_match_an_independent_computation():
    rng = np.random.default_rng(1)
    labels = rng.choice([0, 1, 2, 3, IGNORE_INDEX], size=(3, 20, 20), p=[0.4, 0.3, 0.15, 0.05, 0.1])
    predictions = np.where(rng.random(labels.shape) < 0.7, labels, rng.integers(0, 5, labels.shape)) % 5
    predictions[predictions == 4] = 0
    hist = confusion_matrix(torch.from_numpy(predictions), torch.from_numpy(labels), 5)
    valid = labels != IGNORE_INDEX
    expected = sk_confusion_matrix(labels[valid], predictions[valid], labels=range(5))
    np.testing.assert_array_equal(hist.numpy(), expected)
    scores = segmentation_scores(hist)
    y, p = labels[valid], predictions[valid]
    ious = []
    for cls in range(5):
        union = np.logical_or(y == cls, p == cls).sum()
        if union:
            ious.append(np.logical_and(y == cls, p == cls).sum() / union)
    assert scores["pixel_accuracy"] == pytest.approx((y == p).mean())
    assert scores["mean_iu"] == pytest.approx(np.mean(ious))
    accuracies = [(p[y == cls] == cls).mean() for cls in range(5) if (y == cls).any()]
    assert scores["mean_class_accuracy"] == pytest.approx(np.mean(accuracies))
    frequencies = [(y == cls).mean() for cls in range(4)]
    assert scores["fw_iu"] == pytest.approx(sum(f * iou for f, iou in zip(frequencies, ious[:4])))
    assert scores["per_class_iu"]["4"] == 0.0 or scores["per_class_iu"]["4"] is None
