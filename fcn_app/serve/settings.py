"""What one server runs: :class:`ServeSettings` (the network, loaded once, and the server's limits)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..io import DEFAULT_MAX_PIXELS
from ..methods import FCN
from ..scoring import ScoringOptions

__all__ = ["DEFAULT_MAX_UPLOAD_BYTES", "ServeSettings"]

DEFAULT_MAX_UPLOAD_BYTES = 32 * 1024 * 1024


@dataclass
class ServeSettings:
    """What one server runs: ``network`` (loaded once), and its limits.

    ``segmentation``: the network is a segmentation checkpoint's (``/api/segment``; ``/api/heatmap`` refuses);
    ``model`` and ``stride`` are reported in detection JSON as ``fcn-heatmap detect`` reports them;
    ``method`` is the heatmap method of requests that name none (``serve --method``);
    ``job_threads``: jobs in progress at once — one runs the network, the others decode, draw and encode.
    """

    network: torch.nn.Module
    segmentation: bool = False
    model: str = "vgg16"
    stride: int | None = None
    scoring: ScoringOptions = field(default_factory=ScoringOptions)
    root: Path | None = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS
    queue_size: int = 8
    timeout_s: float = 120.0
    method: str = FCN
    job_threads: int = 2
