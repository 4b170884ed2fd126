"""How far a score cell is from classifying its window's crop.

A cell of the converted network is the classifier's head applied to the window's part of the *feature map* of the
whole image: near the window's borders those features saw the neighbouring pixels (VGG16's pool5 cells see 212 px,
a cell 404 px in all). Classifying the 224-px crop itself sees zeros there instead (the convolutions' padding at
the crop's borders). This script measures the difference on every cell of non-square images:

* **random weights** (``--models``, default VGG16 and ResNet-18, seeded torchvision initialisation, ``--seeds``
  seeds): the bundled photo ``examples/chelsea.jpg`` resized to ``--size`` (width×height);
* **a trained classifier** on real bundled data: the digit classifier of ``tests/helpers_detect.py`` (conv blocks,
  stride 8, Flatten → Linear, 32-px crops of scikit-learn's 8×8 digits upscaled onto textured backgrounds) trained
  per seed (``--epochs``), converted with ``to_fully_convolutional``, on held-out digit scenes (128×160 px).

Per cell: the classifier's logits on the crop (``crop``) and the cell's logits (``cell``). Reported: the relative
gap ``max_k |cell − crop| / max_k |crop|`` (its median and maximum over cells) and the top-1 agreement (the cell's
best class is the crop's), for the digits also over the cells where the cell or the crop names a digit (most cells
of a scene are background for both). At the training size (one cell, the whole image) the two are the same
function.

    PYTHONPATH=$PWD python scripts/bench_crop_verdict.py [--models vgg16,resnet18] [--seeds 2]
        [--size 384x288] [--digit-seeds 3] [--epochs 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from bench import PHOTO, cpu_flags, cpu_model  # noqa: E402

from fcn_app.geometry import ScoreGeometry, score_layout  # noqa: E402
from fcn_app.models import build_classifier, default_weights, to_fully_convolutional  # noqa: E402
from fcn_app.scoring import prepare_batch  # noqa: E402


@dataclass(frozen=True)
class CropGap:
    """Cells of one image compared with the classifier on their crops."""

    relative_gaps: tuple[float, ...]  # per cell: max_k |cell − crop| / max_k |crop|
    top_classes: tuple[tuple[int, int], ...]  # per cell: (the cell's top-1 class, the crop's)

    @property
    def cells(self) -> int:
        return len(self.top_classes)

    @property
    def agreements(self) -> int:
        """Cells whose top-1 class is the crop's."""
        return sum(cell == crop for cell, crop in self.top_classes)

    def agreement(self, excluding: int | None = None) -> tuple[int, int]:
        """(agreeing cells, cells) over the cells where the cell or the crop names a class other than
        ``excluding`` (e.g. a background class), or over all cells."""
        kept = [pair for pair in self.top_classes if excluding is None or pair != (excluding, excluding)]
        return sum(cell == crop for cell, crop in kept), len(kept)


def crop_verdict_gap(classifier: torch.nn.Module, network: torch.nn.Module, image: np.ndarray) -> CropGap:
    """Every cell of ``network`` (``classifier`` converted) on ``image`` (``H×W×3`` uint8 RGB, at least the training
    size) whose window lies inside the image, against ``classifier`` on that window cut from the same normalised
    input."""
    batch, padding = prepare_batch(network, [image])
    if any(padding):
        raise ValueError(f"image {image.shape[1]}×{image.shape[0]} is smaller than the window; no crop is whole")
    layout = score_layout(network, tuple(batch.shape[-2:]))
    geometry = ScoreGeometry.for_network(layout.geometry, layout.grid, layout.window)
    crops, positions = [], []
    for row in range(layout.grid[0]):
        for col in range(layout.grid[1]):
            left, top, width, height = (round(value) for value in geometry.window_box(row, col))
            if top < 0 or left < 0 or top + height > batch.shape[-2] or left + width > batch.shape[-1]:
                continue  # no whole crop (e.g. ResNet's outermost cells: their windows start 16 px outside)
            crops.append(batch[0, :, top:top + height, left:left + width])
            positions.append((row, col))
    if not crops:
        raise ValueError(f"no cell's window lies inside the {image.shape[1]}×{image.shape[0]} image")
    with torch.inference_mode():
        cells = network(batch)[0]
        crop_logits = torch.cat([classifier(torch.stack(crops[start:start + 8]))
                                 for start in range(0, len(crops), 8)]).float()
    gaps, top_classes = [], []
    for (row, col), crop in zip(positions, crop_logits):
        cell = cells[:, row, col].float()
        gaps.append(float((cell - crop).abs().max() / crop.abs().max().clamp_min(torch.finfo(torch.float32).tiny)))
        top_classes.append((int(cell.argmax()), int(crop.argmax())))
    return CropGap(tuple(gaps), tuple(top_classes))


def photo(size: tuple[int, int]) -> np.ndarray:
    """The bundled photo resized to ``size`` = (width, height)."""
    with Image.open(PHOTO) as source:
        return np.asarray(source.convert("RGB").resize(size, Image.Resampling.BILINEAR))


def random_weights_gap(arch: str, seed: int, image: np.ndarray) -> CropGap:
    """``arch`` with seeded random (torchvision-initialised) weights, converted at 224."""
    torch.manual_seed(seed)
    classifier = build_classifier(arch).eval()
    transforms = default_weights(arch).transforms()
    network = to_fully_convolutional(classifier, input_size=224, mean=transforms.mean, std=transforms.std).eval()
    return crop_verdict_gap(classifier, network, image)


def digit_gaps(seed: int, epochs: int, scenes: int = 6, copies: int = 2) -> CropGap:
    """The digit classifier trained with ``seed`` (``epochs`` passes over ``copies`` augmented crops per training
    digit), converted, on ``scenes`` held-out 128×160 digit scenes: all their cells together."""
    from helpers_detect import CATEGORIES, WINDOW, make_scenes, train_digit_classifier

    classifier = train_digit_classifier(seed, epochs=epochs, copies=copies)
    network = to_fully_convolutional(classifier, input_size=WINDOW, categories=CATEGORIES).eval()
    gaps = [crop_verdict_gap(classifier, network, scene.image) for scene in make_scenes(scenes, seed=seed + 1)]
    return CropGap(tuple(value for gap in gaps for value in gap.relative_gaps),
                   tuple(pair for gap in gaps for pair in gap.top_classes))


def agreement_text(gaps: list[CropGap], excluding: int | None = None) -> str:
    """Top-1 agreement over all seeds' cells, then per seed."""
    counts = [gap.agreement(excluding) for gap in gaps]
    agreeing, cells = sum(count[0] for count in counts), sum(count[1] for count in counts)
    per_seed = ", ".join(f"{count[0] / max(count[1], 1):.1%}" for count in counts)
    return f"{agreeing / max(cells, 1):.1%} of {cells} ({per_seed})"


def row(name: str, gaps: list[CropGap], excluding: int | None = None) -> str:
    relative = [value for gap in gaps for value in gap.relative_gaps]
    return (f"| {name} | {sum(gap.cells for gap in gaps)} | {statistics.median(relative):.2f} | "
            f"{max(relative):.2f} | {agreement_text(gaps)} | "
            f"{'—' if excluding is None else agreement_text(gaps, excluding)} |")


def parse_size(text: str) -> tuple[int, int]:
    width, height = (int(part) for part in text.lower().split("x"))
    return width, height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="vgg16,resnet18", help="comma-separated; empty: none")
    parser.add_argument("--seeds", type=int, default=2, help="random-weight seeds per model")
    parser.add_argument("--size", type=parse_size, default=(384, 288), help="photo size WIDTHxHEIGHT (non-square)")
    parser.add_argument("--digit-seeds", type=int, default=3, help="digit classifiers trained (0: none)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {cpu_model()}, torch threads {args.threads}, load average {os.getloadavg()[0]:.1f}")
    print(f"cpu flags: {cpu_flags()}")
    print(f"versions: torch {torch.__version__}\n")
    print("| classifier | cells | median relative gap | max relative gap | top-1 agreement (per seed) | "
          "same, cells where either names a digit |")
    print("|---|---:|---:|---:|---|---|")
    start = time.perf_counter()
    image = photo(args.size)
    for arch in filter(None, args.models.split(",")):
        gaps = [random_weights_gap(arch, seed, image) for seed in range(args.seeds)]
        print(row(f"{arch}, random weights, {args.size[0]}×{args.size[1]} photo, seeds 0–{args.seeds - 1}", gaps),
              flush=True)
    if args.digit_seeds:
        from helpers_detect import BACKGROUND

        gaps = [digit_gaps(seed, args.epochs) for seed in range(args.digit_seeds)]
        print(row(f"digit classifier trained {args.epochs} epochs, 128×160 held-out scenes, seeds "
                  f"0–{args.digit_seeds - 1}", gaps, excluding=BACKGROUND), flush=True)
    print(f"\nrelative gap: max_k |cell − crop| / max_k |crop| per cell. {time.perf_counter() - start:.0f} s; "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
