"""Pixels to network input: uint8 RGB scaled to [0, 1] and normalised with the weights' own mean and std."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["normalize_pixels"]


def normalize_pixels(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 ``N×H×W×3`` RGB → float ``N×3×H×W`` scaled to [0, 1] and normalised with ``mean``/``std``.

    The result keeps the NHWC memory of the input (a channels-last tensor), the layout convolutions prefer.
    """
    if not (pixels.flags.c_contiguous and pixels.flags.writeable):  # torch wants its own, writable memory
        pixels = np.array(pixels)
    batch = torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return batch.sub_(mean_t).div_(std_t)
