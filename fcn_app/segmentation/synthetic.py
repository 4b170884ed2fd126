"""A generated segmentation dataset of simple shapes on textured backgrounds (folder layout).

Used by the CPU proof test and for smoke-testing a setup without downloading anything::

    python -m fcn_app.segmentation.synthetic data/shapes      # then: fcn-heatmap train configs/example_folder.yaml
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import cv2
import numpy as np

from ..io import atomic_write_png, atomic_write_text

__all__ = ["SHAPE_CLASSES", "draw_shapes_sample", "write_shapes_dataset"]

SHAPE_CLASSES = ("background", "disk", "square", "triangle")
#: Each shape class has its own base colour (jittered per shape), so a small network can learn it in seconds.
_CLASS_COLOURS = {1: (220, 60, 60), 2: (60, 200, 80), 3: (70, 90, 230)}


def draw_shapes_sample(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """One ``(image H×W×3 uint8 RGB, labels H×W uint8)`` pair: a noisy striped background and 1–3 shapes."""
    height, width = size
    base = rng.integers(60, 140, size=3)
    yy, xx = np.mgrid[0:height, 0:width]
    angle, period = rng.uniform(0, np.pi), rng.uniform(4, 12)
    stripes = 30 * np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    noise = rng.normal(0, 18, size=(height, width, 3))
    image = np.clip(base + stripes[..., None] + noise, 0, 255).astype(np.uint8)
    labels = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        label = int(rng.integers(1, len(SHAPE_CLASSES)))
        radius = int(rng.integers(min(size) // 8, min(size) // 4 + 1))
        cx, cy = int(rng.integers(radius, width - radius)), int(rng.integers(radius, height - radius))
        colour = np.array(_CLASS_COLOURS[label]) + rng.integers(-30, 31, size=3)
        mask = np.zeros((height, width), np.uint8)
        if label == 1:
            cv2.circle(mask, (cx, cy), radius, 1, -1)
        elif label == 2:
            cv2.rectangle(mask, (cx - radius, cy - radius), (cx + radius, cy + radius), 1, -1)
        else:
            points = np.array([[cx, cy - radius], [cx - radius, cy + radius], [cx + radius, cy + radius]], np.int32)
            cv2.fillPoly(mask, [points], 1)
        image[mask > 0] = np.clip(np.array(colour) + rng.normal(0, 8, size=(int(mask.sum()), 3)), 0, 255).astype(np.uint8)
        labels[mask > 0] = label
    return image, labels


def write_shapes_dataset(
    root: str | os.PathLike, *, train: int = 48, val: int = 16, size_range: tuple[int, int] = (56, 72), seed: int = 0
) -> Path:
    """Write ``root/images``, ``root/masks``, ``classes.txt``, ``train.txt``, ``val.txt`` (sizes vary per image)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = []
    for number in range(train + val):
        size = (int(rng.integers(size_range[0], size_range[1] + 1)), int(rng.integers(size_range[0], size_range[1] + 1)))
        image, labels = draw_shapes_sample(rng, size)
        sample_id = f"shape_{number:04d}"
        atomic_write_png(root / "images" / f"{sample_id}.png", image)
        atomic_write_png(root / "masks" / f"{sample_id}.png", labels)
        ids.append(sample_id)
    atomic_write_text(root / "classes.txt", "\n".join(SHAPE_CLASSES) + "\n")
    atomic_write_text(root / "train.txt", "\n".join(ids[:train]) + "\n")
    atomic_write_text(root / "val.txt", "\n".join(ids[train:]) + "\n")
    return root


if __name__ == "__main__":
    print(write_shapes_dataset(sys.argv[1] if len(sys.argv) > 1 else "data/shapes"))
