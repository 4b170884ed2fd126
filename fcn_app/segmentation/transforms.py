"""Joint image/mask transforms, the torch ``Dataset`` around them, and batching of mixed-size samples.

Images are resized bilinearly, masks only with nearest neighbour (a label is never blended into a label that
does not exist). Crop padding fills the image with the mean colour (zero after normalisation) and the mask with
the ignore label, so padded pixels cost nothing and teach nothing.

Randomness is a pure function of ``(seed, epoch, index)``: the same sample in the same epoch gets the same
augmentation in any process, with any number of loader workers, before or after a resume.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..models.preprocess import normalize_pixels

from .datasets import IGNORE_INDEX, SegmentationDataset

__all__ = [
    "Augmentation",
    "SegmentationTorchDataset",
    "augment",
    "collate_padded",
    "normalize_image",
    "pad_to",
    "resize_nearest",
]


@dataclass(frozen=True)
class Augmentation:
    """Training augmentation: random scale in ``scale_range``, random crop to ``crop_size`` (padding with ignore
    where the image is smaller), horizontal flip. ``crop_size=None`` keeps whole images (batches then pad)."""

    scale_range: tuple[float, float] = (1.0, 1.0)
    crop_size: tuple[int, int] | None = None
    flip: bool = False


def resize_nearest(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label mask to ``size = (height, width)`` (pixel centres mapped, any dtype)."""
    height, width = labels.shape
    rows = np.minimum(((np.arange(size[0]) + 0.5) * height / size[0]).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(size[1]) + 0.5) * width / size[1]).astype(np.int64), width - 1)
    return labels[rows[:, None], cols[None, :]]


def pad_to(image: np.ndarray, labels: np.ndarray, size: tuple[int, int], fill: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """Pad at the bottom/right to at least ``size``: image with ``fill`` colour, mask with the ignore label."""
    height, width = labels.shape
    extra_h, extra_w = max(0, size[0] - height), max(0, size[1] - width)
    if not extra_h and not extra_w:
        return image, labels
    image = cv2.copyMakeBorder(image, 0, extra_h, 0, extra_w, cv2.BORDER_CONSTANT, value=tuple(int(v) for v in fill))
    labels = np.pad(labels, ((0, extra_h), (0, extra_w)), constant_values=IGNORE_INDEX)
    return image, labels


def augment(
    image: np.ndarray, labels: np.ndarray, augmentation: Augmentation, rng: np.random.Generator, fill: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Apply ``augmentation`` to one (image, mask) pair with the random generator ``rng``."""
    low, high = augmentation.scale_range
    if (low, high) != (1.0, 1.0):
        scale = float(rng.uniform(low, high))
        height, width = labels.shape
        size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        labels = resize_nearest(labels, (size[1], size[0]))
    if augmentation.crop_size is not None:
        crop_h, crop_w = augmentation.crop_size
        image, labels = pad_to(image, labels, (crop_h, crop_w), fill)
        height, width = labels.shape
        top = int(rng.integers(0, height - crop_h + 1))
        left = int(rng.integers(0, width - crop_w + 1))
        image = image[top : top + crop_h, left : left + crop_w]
        labels = labels[top : top + crop_h, left : left + crop_w]
    if augmentation.flip and rng.random() < 0.5:
        image, labels = image[:, ::-1], labels[:, ::-1]
    return np.ascontiguousarray(image), np.ascontiguousarray(labels)


def normalize_image(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``H×W×3`` uint8 RGB → ``3×H×W`` float tensor (contiguous), scaled to [0, 1] and normalised with ``mean``/``std``."""
    return normalize_pixels(image[None], mean, std)[0].contiguous()


class SegmentationTorchDataset(torch.utils.data.Dataset):
    """``dataset[index]`` → ``(image 3×H×W normalised, labels H×W int64)`` with seeded per-sample augmentation."""

    def __init__(
        self,
        dataset: SegmentationDataset,
        mean: Sequence[float],
        std: Sequence[float],
        augmentation: Augmentation | None = None,
        seed: int = 0,
    ) -> None:
        self.dataset = dataset
        self.mean, self.std = tuple(mean), tuple(std)
        self.augmentation = augmentation
        self.seed = int(seed)
        self.epoch = 0
        self.fill = tuple(int(round(255 * value)) for value in self.mean)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, labels = self.dataset.read(index)
        if self.augmentation is not None:
            rng = np.random.default_rng([self.seed, self.epoch, int(index)])
            image, labels = augment(image, labels, self.augmentation, rng, self.fill)
        return normalize_image(image, self.mean, self.std), torch.from_numpy(labels.astype(np.int64))


def collate_padded(samples: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch samples of different sizes: pad at the bottom/right to the largest, images with 0 (the mean colour
    after normalisation), masks with the ignore label — so mixed-size batches train exactly like cropped ones."""
    height = max(image.shape[1] for image, _ in samples)
    width = max(image.shape[2] for image, _ in samples)
    images = torch.zeros(len(samples), samples[0][0].shape[0], height, width)
    labels = torch.full((len(samples), height, width), IGNORE_INDEX, dtype=torch.int64)
    for number, (image, label) in enumerate(samples):
        images[number, :, : image.shape[1], : image.shape[2]] = image
        labels[number, : label.shape[0], : label.shape[1]] = label
    return images, labels
