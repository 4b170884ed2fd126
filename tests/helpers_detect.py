"""Digit scenes: a small, real, download-free detection benchmark for the classifier → FCN → boxes path.

Real data: scikit-learn's bundled UCI handwritten digits (1797 8×8 images). A digit is upscaled to 22–30 px and
blended onto a textured background. A small features+Linear classifier is trained on 32×32 crops: the ten digits
(24–28 px, centred ±2 px) and a "background" class (plain background, and digits shifted far enough off-centre
that only part is in the crop — so the classifier fires only on *centred* digits). Scenes hold several held-out
digits at known places; their boxes are the COCO ground truth.

Used by tests/test_detect_digits.py (the end-to-end proof), tests/test_detect_cli.py (ground truth for the CLI)
and by scripts/bench_detect.py / make_detect_figure.py.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch import nn

from fcn_app.coco import evaluate_detections, to_coco_results
from fcn_app.detect import DetectOptions, detect_objects
from fcn_app.models import to_fully_convolutional

WINDOW = 32
CATEGORIES = [str(digit) for digit in range(10)] + ["background"]
BACKGROUND = 10
TRAIN_DIGITS = 1000  # the first 1000 digits train the classifier; the rest (797) populate test scenes

# The documented recipe (README, "Measured on real digits"): stride 4 (one pass, filter rarefaction), three pyramid
# scales, the classifier's window at the surest scale, shrunk to the part of the window its training digits filled.
RECIPE_STRIDE = 4
RECIPE_SCALES = (0.9, 1.0, 1.1)
RECIPE_OPTIONS = DetectOptions(threshold_mode="absolute", threshold=0.5, min_score=0.5, window_fill=26 / WINDOW)


def load_digit_images() -> tuple[np.ndarray, np.ndarray]:
    """UCI digits as float32 ``N×8×8`` in [0, 1] and their labels (bundled with scikit-learn, no download)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def make_background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A dark textured background, ``H×W×3`` float32 in [0, 1]: a smooth blotchy layer plus fine noise."""
    base = rng.uniform(0.1, 0.35)
    coarse = rng.random((height // 12 + 2, width // 12 + 2, 3)).astype(np.float32)
    smooth = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    noise = rng.normal(0.0, 0.04, size=(height, width, 3)).astype(np.float32)
    return np.clip(base + 0.25 * (smooth - 0.5) + noise, 0.0, 1.0)


def paste_digit(canvas: np.ndarray, digit: np.ndarray, x: int, y: int, size: int, colour: np.ndarray) -> None:
    """Blend ``digit`` (8×8 in [0, 1]) upscaled to ``size`` px onto ``canvas`` with its top-left at ``(x, y)``.

    Parts falling outside the canvas are cut off (used for partial-digit background crops).
    """
    alpha = np.clip(cv2.resize(digit, (size, size), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)[..., None]
    height, width = canvas.shape[:2]
    top, left = max(0, y), max(0, x)
    bottom, right = min(height, y + size), min(width, x + size)
    if bottom <= top or right <= left:
        return
    patch = alpha[top - y : bottom - y, left - x : right - x]
    region = canvas[top:bottom, left:right]
    canvas[top:bottom, left:right] = region * (1.0 - patch) + colour * patch


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)


def _digit_colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0.8, 1.0, size=3).astype(np.float32)


def training_crops(seed: int = 0, copies: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """32×32 uint8 RGB crops and labels: ``copies`` augmented crops per training digit plus as many background."""
    rng = np.random.default_rng(seed)
    images, labels = load_digit_images()
    crops, targets = [], []
    for _ in range(copies):
        for digit, label in zip(images[:TRAIN_DIGITS], labels[:TRAIN_DIGITS]):
            canvas = make_background(rng, WINDOW, WINDOW)
            size = int(rng.integers(24, 29))
            offset = (WINDOW - size) // 2
            x, y = offset + int(rng.integers(-2, 3)), offset + int(rng.integers(-2, 3))
            paste_digit(canvas, digit, x, y, size, _digit_colour(rng))
            crops.append(_to_uint8(canvas))
            targets.append(int(label))
            # background: plain, or a digit pushed far enough off-centre that the crop is not "a digit"
            canvas = make_background(rng, WINDOW, WINDOW)
            if rng.random() < 0.6:
                index = int(rng.integers(0, TRAIN_DIGITS))
                size = int(rng.integers(22, 31))
                shift = rng.integers(9, 22, size=2) * rng.choice([-1, 1], size=2)
                if rng.random() < 0.4:
                    shift[int(rng.integers(0, 2))] = int(rng.integers(-3, 4))
                offset = (WINDOW - size) // 2
                paste_digit(canvas, images[index], offset + int(shift[1]), offset + int(shift[0]), size,
                            _digit_colour(rng))
            crops.append(_to_uint8(canvas))
            targets.append(BACKGROUND)
    return np.stack(crops), np.asarray(targets, dtype=np.int64)


def digit_classifier() -> nn.Sequential:
    """The classifier users would write: 3 conv-BN-ReLU-pool blocks (stride 8) → Flatten → Linear → ReLU → Linear."""
    return nn.Sequential(
        nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(12, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(24, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
        nn.Linear(64, len(CATEGORIES)),
    )


def pooled_digit_classifier() -> nn.Sequential:
    """A digit classifier ending in global average pooling (ResNet-style), so its 4×4 training window of feature
    cells is free after conversion (``--window``). Wider than :func:`digit_classifier`, with a fourth conv that
    lets each cell see past its own 8 px: an average of cells must carry what a Flatten keeps by position."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(64, 64), nn.ReLU(),
        nn.Linear(64, len(CATEGORIES)),
    )


def train_digit_classifier(seed: int = 0, epochs: int = 5, copies: int = 2,
                           make_model=digit_classifier) -> nn.Sequential:
    """Train ``make_model()`` (:func:`digit_classifier`) on :func:`training_crops` (seeded; seconds on a CPU)."""
    torch.manual_seed(seed)
    crops, labels = training_crops(seed, copies)
    inputs = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div_(255.0)
    inputs = inputs.contiguous(memory_format=torch.channels_last)  # ~2× faster convolutions on CPU
    targets = torch.from_numpy(labels)
    model = make_model().to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    generator = torch.Generator().manual_seed(seed)
    steps = epochs * ((len(inputs) + 127) // 128)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=5e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), 128):
            batch = order[start : start + 128]
            loss = nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return model.to(memory_format=torch.contiguous_format).eval()


@functools.lru_cache(maxsize=None)
def trained_digit_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """State dict of :func:`train_digit_classifier` — trained once per process and seed (tests share it)."""
    return train_digit_classifier(seed).state_dict()


def trained_digit_fcn(seed: int = 0) -> nn.Module:
    """:func:`train_digit_classifier` converted to an FCN; trained once per process and seed, a fresh copy each call."""
    classifier = digit_classifier()
    classifier.load_state_dict(trained_digit_state(seed))
    return to_fully_convolutional(classifier.eval(), input_size=WINDOW, categories=CATEGORIES)


DIGIT_WEIGHTS_ENV = "FCN_TEST_DIGIT_WEIGHTS"


def digit_fcn_from_weights():
    """``--model helpers_detect:digit_fcn_from_weights``: the digit classifier with the state dict saved at
    ``$FCN_TEST_DIGIT_WEIGHTS``, converted — how a CLI process gets the classifier a test trained."""
    classifier = digit_classifier()
    classifier.load_state_dict(torch.load(os.environ[DIGIT_WEIGHTS_ENV], weights_only=True))
    return to_fully_convolutional(classifier.eval(), input_size=WINDOW, categories=CATEGORIES)


@dataclass
class Scene:
    image: np.ndarray  # H×W×3 uint8 RGB
    boxes: list[tuple[int, int, int, int]]  # (x, y, w, h)
    labels: list[int]


def make_scenes(count: int = 12, size: tuple[int, int] = (128, 160), digits_per_scene: int = 4, seed: int = 1,
                sizes: tuple[int, int] = (22, 30)) -> list[Scene]:
    """Scenes of held-out digits (``sizes`` px) on a background, placed apart from each other and the border."""
    rng = np.random.default_rng(seed)
    images, labels = load_digit_images()
    held_out = np.arange(TRAIN_DIGITS, len(images))
    height, width = size
    scenes = []
    for _ in range(count):
        canvas = make_background(rng, height, width)
        boxes, classes = [], []
        attempts = 0
        while len(boxes) < digits_per_scene and attempts < 500:
            attempts += 1
            side = int(rng.integers(sizes[0], sizes[1] + 1))
            x, y = int(rng.integers(2, width - side - 1)), int(rng.integers(2, height - side - 1))
            gap = 4  # keep digits apart: a window centred on one should not be centred on another
            if any(x < bx + bw + gap and bx < x + side + gap and y < by + bh + gap and by < y + side + gap
                   for bx, by, bw, bh in boxes):
                continue
            index = int(rng.choice(held_out))
            paste_digit(canvas, images[index], x, y, side, _digit_colour(rng))
            boxes.append((x, y, side, side))
            classes.append(int(labels[index]))
        scenes.append(Scene(_to_uint8(canvas), boxes, classes))
    return scenes


def scenes_ground_truth(scenes: list[Scene], names: list[str] | None = None) -> dict:
    """COCO ground truth of ``scenes`` (image ids 1…, category id = digit + 1, names ``"0"``…``"9"``)."""
    names = names or [f"scene_{number:03d}.png" for number in range(len(scenes))]
    images, annotations = [], []
    for image_id, (scene, name) in enumerate(zip(scenes, names), start=1):
        height, width = scene.image.shape[:2]
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
        for box, label in zip(scene.boxes, scene.labels):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label + 1,
                                "bbox": [float(value) for value in box], "area": float(box[2] * box[3]),
                                "iscrowd": 0})
    categories = [{"id": digit + 1, "name": str(digit)} for digit in range(10)]
    return {"images": images, "annotations": annotations, "categories": categories}


def detect_scenes(network, scenes: list[Scene], truth: dict, *, scales=RECIPE_SCALES, options=RECIPE_OPTIONS,
                  fuse: str = "max") -> list[dict]:
    """COCO results of :func:`~fcn_app.detect.detect_objects` on every scene, ids and names as in ``truth``."""
    per_image = [(entry["id"], entry["file_name"], detect_objects(network, scene.image, scales=scales, fuse=fuse,
                                                                  options=options))
                 for scene, entry in zip(scenes, truth["images"])]
    return to_coco_results(per_image)


def scene_draw_metrics(network, seed: int, count: int = 12, **recipe) -> dict[str, float]:
    """COCO metrics of the recipe (or ``recipe`` overrides) on one independent draw of ``count`` scenes."""
    scenes = make_scenes(count=count, seed=seed)
    truth = scenes_ground_truth(scenes)
    return evaluate_detections(detect_scenes(network, scenes, truth, **recipe), truth)
