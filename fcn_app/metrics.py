"""Faithfulness of heatmaps: does the map show what the model uses?

Each measure perturbs the image the way its paper does and asks the model again, through a *score function*:
``score(images)`` takes a batch ``B×C×H×W`` (the network's normalised input) and returns ``B`` scores of one class
(e.g. its probability). Perturbations are built and scored in batches, so a 100-step deletion curve on a 224² image
costs a few batched forward passes, not a hundred single ones. Saliency maps are ``H×W`` arrays (any scale; only
their order or, for Average Drop, their values in [0, 1] matter).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import OptionError
from .geometry import ScoreGeometry
from .heatmaps import peak_at_cell_centers

__all__ = [
    "PerturbationCurve",
    "ScoreFunction",
    "average_drop",
    "blurred",
    "deletion_curve",
    "explanation_map_scores",
    "increase_in_confidence",
    "insertion_curve",
    "perturbation_order",
    "pointing_game_accuracy",
    "pointing_game_hit",
]

#: ``B×C×H×W`` images → ``B`` scores of the class being explained.
ScoreFunction = Callable[[torch.Tensor], torch.Tensor]

#: Zhang et al. (2016) count a hit within 15 pixels of the annotated object.
POINTING_TOLERANCE = 15


@dataclass
class PerturbationCurve:
    """Scores of the model as pixels change, most salient first: ``scores[k]`` after ``fractions[k]`` of them."""

    fractions: np.ndarray
    scores: np.ndarray

    @property
    def auc(self) -> float:
        """Area under the curve over fractions 0 → 1 (trapezoid rule)."""
        return float(np.sum((self.scores[1:] + self.scores[:-1]) / 2 * np.diff(self.fractions)))


def perturbation_order(saliency: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Rank of every pixel (``H×W`` int64): 0 for the most salient; ties in raster order."""
    values = torch.as_tensor(np.asarray(saliency, dtype=np.float64)).flatten()
    order = torch.argsort(-values, stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(order.numel())
    return rank.view(np.asarray(saliency).shape)


def _check_steps(steps: int, pixels: int) -> int:
    if steps < 1:
        raise OptionError("steps", f"must be at least 1, got {steps}")
    return min(int(steps), pixels)


def _curve(score: ScoreFunction, start: torch.Tensor, end: torch.Tensor, saliency, steps: int,
           batch_size: int, on_scored: Callable[[int], None] | None = None) -> PerturbationCurve:
    """Pixels move from ``start`` to ``end`` in order of ``saliency``; ``steps + 1`` images scored in batches
    (``on_scored`` is told how many after each batch)."""
    if start.shape != end.shape:
        raise ValueError(f"image {tuple(start.shape)} and baseline {tuple(end.shape)} differ in shape")
    if tuple(np.asarray(saliency).shape) != tuple(start.shape[-2:]):
        raise ValueError(f"saliency {np.asarray(saliency).shape} does not match the image's {tuple(start.shape[-2:])}")
    rank = perturbation_order(saliency).to(start.device)
    pixels = rank.numel()
    steps = _check_steps(steps, pixels)
    counts = torch.round(torch.linspace(0, pixels, steps + 1, dtype=torch.float64)).long().to(start.device)
    scores = []
    with torch.no_grad():
        for first in range(0, len(counts), batch_size):
            changed = rank[None] < counts[first:first + batch_size, None, None]  # B×H×W: pixels already moved
            images = torch.where(changed[:, None], end[None], start[None])
            scores.append(torch.as_tensor(score(images)).detach().double().cpu().flatten())
            if on_scored is not None:
                on_scored(len(images))
    return PerturbationCurve((counts.cpu().double() / pixels).numpy(), torch.cat(scores).double().numpy())


def deletion_curve(score: ScoreFunction, image: torch.Tensor, saliency, *, baseline: torch.Tensor | None = None,
                   steps: int = 100, batch_size: int = 32,
                   on_scored: Callable[[int], None] | None = None) -> PerturbationCurve:
    """Deletion (Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box Models",
    BMVC 2018): remove pixels, most salient first, replacing them by ``baseline`` (default zeros — in a
    normalised input, the mean colour), and record the score; a faithful map makes it fall fast (low AUC ↓).

    ``image`` is ``C×H×W``; ``steps`` equal groups of pixels are removed (``steps + 1`` images, batched;
    ``on_scored(count)`` after each batch, for a progress bar).
    """
    baseline = torch.zeros_like(image) if baseline is None else baseline
    return _curve(score, image, baseline, saliency, steps, batch_size, on_scored)


def blurred(image: torch.Tensor, kernel_size: int = 11, sigma: float = 5.0) -> torch.Tensor:
    """A Gaussian-blurred copy of ``image`` (``C×H×W``): RISE's insertion start, the image without its details."""
    from torchvision.transforms.functional import gaussian_blur

    kernel_size = min(kernel_size, 2 * (min(image.shape[-2:]) // 2) - 1) if min(image.shape[-2:]) > 1 else 1
    return gaussian_blur(image[None], [kernel_size, kernel_size], [sigma, sigma])[0] if kernel_size > 1 else image


def insertion_curve(score: ScoreFunction, image: torch.Tensor, saliency, *, baseline: torch.Tensor | None = None,
                    steps: int = 100, batch_size: int = 32,
                    on_scored: Callable[[int], None] | None = None) -> PerturbationCurve:
    """Insertion (Petsiuk et al., RISE, BMVC 2018): start from ``baseline`` (default :func:`blurred` ``image``)
    and put the image's pixels back, most salient first; a faithful map makes the score rise fast (high AUC ↑).
    ``on_scored`` as for :func:`deletion_curve`."""
    baseline = blurred(image) if baseline is None else baseline
    return _curve(score, baseline, image, saliency, steps, batch_size, on_scored)


def explanation_map_scores(score: ScoreFunction, images: Sequence[torch.Tensor], saliencies: Sequence,
                           baselines: Sequence[torch.Tensor] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(Y, O)``: the score of each full image and of its *explanation map* — the image weighted pixel-wise by its
    saliency in [0, 1] (Chattopadhay et al. 2018, eq. 23: ``E = I ∘ L``; here ``baseline + L·(I − baseline)``,
    the paper's form for a zero baseline). Inputs for :func:`average_drop` and :func:`increase_in_confidence`."""
    full, masked = [], []
    with torch.no_grad():
        for index, (image, saliency) in enumerate(zip(images, saliencies)):
            weights = torch.as_tensor(np.asarray(saliency, dtype=np.float32), device=image.device)
            if float(weights.min()) < 0 or float(weights.max()) > 1:
                raise ValueError("explanation maps need saliency values in [0, 1]")
            baseline = torch.zeros_like(image) if baselines is None else baselines[index]
            pair = torch.stack([image, baseline + weights * (image - baseline)])
            scores = torch.as_tensor(score(pair)).detach().double().cpu().flatten()
            full.append(float(scores[0]))
            masked.append(float(scores[1]))
    return np.asarray(full), np.asarray(masked)


def average_drop(full_scores, masked_scores) -> float:
    """Average Drop % (Chattopadhay, Sarkar, Howlader & Balasubramanian, "Grad-CAM++: Generalized Gradient-Based
    Visual Explanations for Deep Convolutional Networks", WACV 2018): ``100 · mean(max(0, Y − O) / Y)`` over
    images, ``Y`` the full image's score, ``O`` its explanation map's. Lower ↓ is better."""
    full, masked = np.asarray(full_scores, dtype=np.float64), np.asarray(masked_scores, dtype=np.float64)
    if np.any(full <= 0):
        raise ValueError("Average Drop needs positive scores of the full images (e.g. probabilities)")
    return float(100.0 * np.mean(np.maximum(0.0, full - masked) / full))


def increase_in_confidence(full_scores, masked_scores) -> float:
    """Increase in Confidence % (Chattopadhay et al., Grad-CAM++, WACV 2018): ``100 · mean(Y < O)``, the share of
    images whose explanation map alone scores higher than the whole image. Higher ↑ is better."""
    full, masked = np.asarray(full_scores, dtype=np.float64), np.asarray(masked_scores, dtype=np.float64)
    return float(100.0 * np.mean(full < masked))


def pointing_game_hit(saliency, boxes: Sequence[Sequence[float]], tolerance: float = POINTING_TOLERANCE, *,
                      cells: ScoreGeometry | None = None) -> bool:
    """Pointing game (Zhang, Lin, Brandt, Shen & Sclaroff, "Top-down Neural Attention by Excitation Backprop",
    ECCV 2016): a hit when the map's maximum lies within ``tolerance`` pixels of one of the class's ``boxes``
    (``x, y, w, h`` covering pixel columns ``x … x+w−1`` and rows ``y … y+h−1``).

    The maximum is the peak the heatmap reports — the hottest cell's centre
    (:func:`~fcn_app.heatmaps.peak_at_cell_centers`) — when the map's ``cells`` are given, else the map's first
    maximum in raster order (a map with no cells)."""
    values = np.asarray(saliency)
    if cells is not None:
        _, (peak_x, peak_y) = peak_at_cell_centers(lambda rows, cols: values[np.ix_(rows, cols)], [cells],
                                                    values.shape[:2])
    else:
        peak_y, peak_x = divmod(int(np.argmax(values)), values.shape[1])
    for x, y, width, height in boxes:
        dx = max(x - peak_x, peak_x - (x + width - 1), 0.0)
        dy = max(y - peak_y, peak_y - (y + height - 1), 0.0)
        if math.hypot(dx, dy) <= tolerance:
            return True
    return False


def pointing_game_accuracy(hits: Sequence[bool]) -> float:
    """``hits / (hits + misses)`` (Zhang et al. 2016)."""
    hits = list(hits)
    if not hits:
        raise ValueError("the pointing game needs at least one cue")
    return float(sum(bool(hit) for hit in hits) / len(hits))
