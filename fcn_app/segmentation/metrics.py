"""Segmentation scores from one confusion matrix — the set of FCN's ``score.py``.

``hist[t, p]`` counts pixels of true class ``t`` predicted as ``p`` (ignored pixels left out). Everything else
is derived from it, so the matrix is all that crosses processes: summing the per-rank matrices (``all_reduce``)
gives exactly the scores of the whole validation set.
"""

from __future__ import annotations

import numpy as np
import torch

from .datasets import IGNORE_INDEX

__all__ = ["confusion_matrix", "segmentation_scores"]


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``num_classes × num_classes`` int64 counts of (true, predicted) over pixels whose label is not ignored."""
    labels = labels.reshape(-1)
    predictions = predictions.reshape(-1).to(labels.device)
    valid = (labels != IGNORE_INDEX) & (labels >= 0) & (labels < num_classes)
    pairs = labels[valid] * num_classes + predictions[valid]
    counts = torch.bincount(pairs, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).to(torch.int64)


def segmentation_scores(hist: torch.Tensor | np.ndarray, class_names: list[str] | None = None) -> dict:
    """Pixel accuracy, mean class accuracy, mean IU, frequency-weighted IU and per-class IU (NaN: class absent
    from both labels and predictions — left out of the means, as in FCN's ``score.py``)."""
    hist = np.asarray(hist.cpu() if isinstance(hist, torch.Tensor) else hist, dtype=np.float64)
    diagonal = np.diag(hist)
    total = hist.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        class_accuracy = diagonal / hist.sum(axis=1)
        iu = diagonal / (hist.sum(axis=1) + hist.sum(axis=0) - diagonal)
    frequency = hist.sum(axis=1) / total if total else np.zeros(len(hist))
    present = frequency > 0

    def nanmean(values: np.ndarray) -> float:
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    names = class_names or [str(i) for i in range(len(hist))]
    return {
        "pixel_accuracy": float(diagonal.sum() / total) if total else float("nan"),
        "mean_class_accuracy": nanmean(class_accuracy),
        "mean_iu": nanmean(iu),
        "fw_iu": float((frequency[present] * iu[present]).sum()),
        "per_class_iu": {name: (None if np.isnan(value) else float(value)) for name, value in zip(names, iu)},
        "pixels": int(total),
    }
