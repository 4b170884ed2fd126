"""Running a fully convolutional network on an image: pixels in, a grid of class scores (with geometry) out."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import ScoreGeometry, centered_padding, network_geometry, output_grid_size
from .models.convert import FullyConvolutionalNet

__all__ = ["ScoreMap", "compute_score_map", "compute_score_maps", "prepare_batch", "resolve_device"]

logger = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA GPU is available; use --device cpu or auto")
    return device


@dataclass
class ScoreMap:
    """Class scores for every window of one image.

    ``logits`` is ``K × rows × cols`` (float32, CPU); ``geometry`` places each cell on the original image of
    ``image_size = (height, width)`` pixels.
    """

    logits: torch.Tensor
    geometry: ScoreGeometry
    image_size: tuple[int, int]
    categories: list[str]

    def probabilities(self) -> torch.Tensor:
        """Softmax over classes, per cell: ``K × rows × cols``."""
        return torch.softmax(self.logits.float(), dim=0)


def prepare_batch(
    network: FullyConvolutionalNet, images: list[np.ndarray]
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Stack same-size ``H×W×3`` uint8 RGB arrays into a normalised ``N×3×H'×W'`` tensor.

    Sides smaller than the network's window are padded (centred) with the mean colour — zero after
    normalisation — so at least one score cell exists. Returns the tensor and the ``(top, bottom, left, right)``
    padding.
    """
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise ValueError(f"prepare_batch needs images of one size, got {sorted(shapes)}")
    height, width = images[0].shape[:2]
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(network.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(network.std, dtype=torch.float32).view(1, -1, 1, 1)
    batch = batch.sub_(mean).div_(std)
    padding = centered_padding((height, width), network.input_size)
    if any(padding):
        top, bottom, left, right = padding
        batch = F.pad(batch, (left, right, top, bottom), value=0.0)
    return batch, padding


def _network_device(network: torch.nn.Module) -> torch.device:
    parameter = next(network.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


@torch.inference_mode()
def compute_score_maps(network: FullyConvolutionalNet, images: list[np.ndarray]) -> list[ScoreMap]:
    """Score maps for a batch of same-size RGB uint8 images, computed in one forward pass."""
    batch, (top, _, left, _) = prepare_batch(network, images)
    device = _network_device(network)
    batch = batch.to(device).contiguous(memory_format=torch.channels_last)
    logits = network(batch).float().cpu()
    expected_grid = output_grid_size(network, tuple(batch.shape[-2:]))
    if tuple(logits.shape[-2:]) != expected_grid:
        raise RuntimeError(f"network produced grid {tuple(logits.shape[-2:])}, geometry expects {expected_grid}")
    geometry = ScoreGeometry.for_network(
        network_geometry(network), tuple(logits.shape[-2:]), network.input_size, offset=(top, left)
    )
    image_size = images[0].shape[:2]
    return [
        ScoreMap(logits=logits[index], geometry=geometry, image_size=image_size, categories=network.categories)
        for index in range(len(images))
    ]


def compute_score_map(network: FullyConvolutionalNet, image: np.ndarray) -> ScoreMap:
    """Score map of one ``H×W×3`` uint8 RGB image (any size)."""
    return compute_score_maps(network, [image])[0]
