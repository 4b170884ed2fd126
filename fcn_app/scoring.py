"""Running a fully convolutional network on an image: pixels in, a grid of class scores (with geometry) out.

The inference path is tuned for throughput without changing results by default:

- ``torch.inference_mode`` (no autograd bookkeeping) and channels-last memory format for network and input,
  which lets oneDNN (CPU) and cuDNN pick their fastest convolution kernels — same values, ~1.5× faster on CPU;
- optional reduced precision (``precision="bf16"``/``"fp16"`` via autocast); ``"auto"`` picks it only where
  ``scripts/bench.py`` printed both the speed-up and the top-1 agreement with fp32 (see :func:`resolve_precision`);
- exact tiling (:mod:`fcn_app.tiling`) when the activations would exceed a memory budget: the stitched score
  map equals the untiled one, so an 8000×8000 photo runs in a few GB;
- :func:`load_scoring_network` loads and prepares each model once per process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .geometry import ScoreGeometry, centered_padding, network_geometry, output_grid_size
from .models import DEFAULT_ARCH, WEIGHTS_ENV, cached_weights_path, default_weights, load_network
from .models.convert import FullyConvolutionalNet
from .tiling import AxisTile, Tile, default_max_memory, format_bytes, parse_memory_size, plan_tiles

__all__ = [
    "PRECISIONS",
    "ScoreMap",
    "compute_score_map",
    "compute_score_maps",
    "cpu_has_native_bf16",
    "load_scoring_network",
    "normalize_pixels",
    "prepare_batch",
    "prepare_network",
    "resolve_device",
    "resolve_precision",
    "window_conv_as_matmul",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_REDUCED_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

ProgressCallback = Callable[[int, int], None]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` → CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA GPU is available; use --device cpu or auto")
    return device


@functools.lru_cache(maxsize=1)
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 dot products in hardware (AVX-512 BF16 or AMX), per ``/proc/cpuinfo``."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or ``None`` for plain fp32.

    ``"auto"`` means: bf16 on CUDA GPUs that support it (else fp16) and fp32 on CPUs. On CPU, bf16 was measured
    by ``scripts/bench.py`` on the development machine (AVX-512 BF16, no AMX) to be *slower* than fp32
    channels-last, and its top-1 agreement can only be checked against real weights — so fp32 stays the CPU
    default and bf16 is opt-in (``--precision bf16``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return None
    if device.type == "cpu" and precision == "bf16" and not cpu_has_native_bf16():
        logger.warning("this CPU has no native bf16 (AVX-512 BF16/AMX); bf16 will be emulated and slow")
    return _REDUCED_DTYPES[precision]


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


def _normalized_region(
    network: FullyConvolutionalNet,
    pixels: np.ndarray,
    padding: tuple[int, int, int, int],
    rows: tuple[int, int],
    cols: tuple[int, int],
) -> torch.Tensor:
    """Rows/cols ``[start, stop)`` of the padded, normalised ``N×3×H×W`` input, built from uint8 ``N×H×W×3``.

    Only the requested region is converted to float, so a tile of a huge image never needs the whole image in
    float. The result is channels-last (NHWC in memory), the layout the convolutions prefer.
    """
    top, _, left, _ = padding
    height, width = pixels.shape[1:3]
    image_rows = (max(0, rows[0] - top), min(height, rows[1] - top))
    image_cols = (max(0, cols[0] - left), min(width, cols[1] - left))
    region = pixels[:, image_rows[0]:image_rows[1], image_cols[0]:image_cols[1]]
    batch = normalize_pixels(region, network.mean, network.std)
    pad_top = (top + image_rows[0]) - rows[0]
    pad_bottom = rows[1] - (top + image_rows[1])
    pad_left = (left + image_cols[0]) - cols[0]
    pad_right = cols[1] - (left + image_cols[1])
    if pad_top or pad_bottom or pad_left or pad_right:
        # the mean colour, i.e. zero after normalisation, so the padding carries no signal
        batch = F.pad(batch, (pad_left, pad_right, pad_top, pad_bottom), value=0.0)
    return batch.contiguous(memory_format=torch.channels_last)


def _stack(images: Sequence[np.ndarray]) -> np.ndarray:
    if not images:
        raise ValueError("no images to score")
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise ValueError(f"prepare_batch needs images of one size, got {sorted(shapes)}")
    return images[0][None] if len(images) == 1 else np.stack(images)  # no copy of a single (possibly huge) image


def prepare_batch(
    network: FullyConvolutionalNet, images: list[np.ndarray]
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Stack same-size ``H×W×3`` uint8 RGB arrays into a normalised ``N×3×H'×W'`` tensor (channels-last).

    Sides smaller than the network's window are padded (centred) with the mean colour — zero after
    normalisation — so at least one score cell exists. Returns the tensor and the ``(top, bottom, left, right)``
    padding.
    """
    pixels = _stack(images)
    padding = centered_padding(pixels.shape[1:3], network.input_size)
    top, bottom, left, right = padding
    full_rows = (0, pixels.shape[1] + top + bottom)
    full_cols = (0, pixels.shape[2] + left + right)
    return _normalized_region(network, pixels, padding, full_rows, full_cols), padding


def _network_device(network: torch.nn.Module) -> torch.device:
    parameter = next(network.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def prepare_network(network: torch.nn.Module) -> torch.nn.Module:
    """Put ``network``'s convolution weights in channels-last format (in place, values unchanged); returns it.

    Cheap when already done, so :func:`compute_score_maps` calls it on every network it is given.
    """
    weight = next((parameter for parameter in network.parameters() if parameter.dim() == 4), None)
    if weight is not None and not weight.is_contiguous(memory_format=torch.channels_last):
        network.to(memory_format=torch.channels_last)
    return network


def _is_window_conv(layer: torch.nn.Module) -> bool:
    """A converted first FC layer: a plain (unpadded, unstrided, undilated, ungrouped) conv with a big kernel."""
    return (isinstance(layer, torch.nn.Conv2d) and layer.kernel_size != (1, 1) and layer.stride == (1, 1)
            and layer.padding == (0, 0) and layer.dilation == (1, 1) and layer.groups == 1)


def window_conv_as_matmul(conv: torch.nn.Conv2d, feature_map: torch.Tensor) -> torch.Tensor:
    """``conv(feature_map)`` computed as one matrix product over all windows (im2col + GEMM), channels-last.

    The converted fc6 of VGG16 (4096 kernels of 512×7×7) on a grid of a few dozen cells is where oneDNN's direct
    convolution is weakest; as a GEMM the same arithmetic runs at the matrix unit's speed (``scripts/bench.py``
    prints both). In channels-last memory a window is ``(y, x, c)``-ordered and so is a channels-last weight, so
    neither needs reordering: only the windows are gathered. Same sums in another order: equal up to fp32 rounding.
    """
    batch, _, height, width = feature_map.shape
    kernel_height, kernel_width = conv.kernel_size
    rows, cols = height - kernel_height + 1, width - kernel_width + 1
    if rows < 1 or cols < 1:
        return conv(feature_map)
    pixels = feature_map.permute(0, 2, 3, 1)  # N×H×W×C view, contiguous for channels-last input
    if not pixels.is_contiguous():
        pixels = pixels.contiguous()
    channels = pixels.shape[-1]
    batch_step, row_step, col_step, channel_step = pixels.stride()
    windows = pixels.as_strided(
        (batch, rows, cols, kernel_height, kernel_width, channels),
        (batch_step, row_step, col_step, row_step, col_step, channel_step),
    ).reshape(batch * rows * cols, kernel_height * kernel_width * channels)
    weight = conv.weight.permute(0, 2, 3, 1).reshape(conv.out_channels, -1)  # a view for a channels-last weight
    if conv.bias is not None:
        scores = torch.addmm(conv.bias, windows, weight.t())
    else:
        scores = windows @ weight.t()
    return scores.view(batch, rows, cols, conv.out_channels).permute(0, 3, 1, 2)


def _forward(network: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """``network(batch)``, with the head's window convolution run as a GEMM (see :func:`window_conv_as_matmul`)."""
    head = getattr(network, "head", None)
    if not isinstance(network, FullyConvolutionalNet) or not isinstance(head, torch.nn.Sequential):
        return network(batch)
    scores = network.forward_features(batch)
    for layer in head:
        scores = window_conv_as_matmul(layer, scores) if _is_window_conv(layer) else layer(scores)
    return scores


def _run(network: torch.nn.Module, batch: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    device = _network_device(network)
    batch = batch.to(device, non_blocking=True)
    precision = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with precision:
        return _forward(network, batch).float().cpu()


def _whole(length: int, cells: int) -> AxisTile:
    return AxisTile(0, length, 0, cells, 0)


@torch.inference_mode()
def compute_score_maps(
    network: FullyConvolutionalNet,
    images: list[np.ndarray],
    *,
    precision: str = "auto",
    max_memory: int | str | None = None,
    progress: ProgressCallback | None = None,
) -> list[ScoreMap]:
    """Score maps for a batch of same-size RGB uint8 images.

    Args:
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"`` (see :func:`resolve_precision`).
        max_memory: activation budget in bytes (or ``"2G"``-style text); inputs whose activations would exceed it
            are scored in exact tiles. Default: :func:`fcn_app.tiling.default_max_memory`.
        progress: called as ``progress(done, total)`` after each tile.

    One forward pass when the batch fits the budget; otherwise image by image, each in tiles whose stitched
    score map equals the untiled one.
    """
    pixels = _stack(images)
    device = _network_device(network)
    dtype = resolve_precision(precision, device)
    budget = default_max_memory() if max_memory is None else parse_memory_size(max_memory)
    prepare_network(network)

    padding = centered_padding(pixels.shape[1:3], network.input_size)
    top, bottom, left, right = padding
    padded_size = (pixels.shape[1] + top + bottom, pixels.shape[2] + left + right)
    grid = output_grid_size(network, padded_size)
    bytes_per_value = 4 if dtype is None else 2
    tiles = plan_tiles(network, padded_size, budget, batch=len(images), bytes_per_value=bytes_per_value)
    if tiles is not None and len(images) > 1:  # too big as a batch: one image at a time, tiled if need be
        return [
            score_map
            for image in images
            for score_map in compute_score_maps(network, [image], precision=precision, max_memory=budget,
                                                progress=progress)
        ]
    if tiles is None:
        tiles = [Tile(_whole(padded_size[0], grid[0]), _whole(padded_size[1], grid[1]))]
    else:
        logger.info("%d×%d px image exceeds the %s activation budget: %d exact tiles", pixels.shape[1],
                    pixels.shape[2], format_bytes(budget), len(tiles))

    logits = None
    for done, tile in enumerate(tiles, start=1):
        rows, cols = tile.rows, tile.cols
        batch = _normalized_region(network, pixels, padding, (rows.input_start, rows.input_stop),
                                   (cols.input_start, cols.input_stop))
        tile_logits = _run(network, batch, dtype)
        tile_grid = tuple(tile_logits.shape[-2:])
        expected = output_grid_size(network, tile.input_size)
        if tile_grid != expected or rows.cell_stop - rows.cell_offset > tile_grid[0] \
                or cols.cell_stop - cols.cell_offset > tile_grid[1]:
            raise RuntimeError(f"network produced grid {tile_grid} for a {tile.input_size} tile, geometry expects "
                               f"{expected} covering cells up to {(rows.cell_stop, cols.cell_stop)}")
        if logits is None:
            logits = torch.empty((len(images), tile_logits.shape[1], *grid), dtype=torch.float32)
        logits[:, :, rows.cell_start:rows.cell_stop, cols.cell_start:cols.cell_stop] = tile_logits[
            :, :, rows.cell_start - rows.cell_offset:rows.cell_stop - rows.cell_offset,
            cols.cell_start - cols.cell_offset:cols.cell_stop - cols.cell_offset]
        del batch, tile_logits
        if progress is not None:
            progress(done, len(tiles))

    geometry = ScoreGeometry.for_network(network_geometry(network), grid, network.input_size, offset=(top, left))
    image_size = tuple(pixels.shape[1:3])
    return [
        ScoreMap(logits=logits[index], geometry=geometry, image_size=image_size, categories=network.categories)
        for index in range(len(images))
    ]


def compute_score_map(network: FullyConvolutionalNet, image: np.ndarray, **options) -> ScoreMap:
    """Score map of one ``H×W×3`` uint8 RGB image (any size); ``options`` as for :func:`compute_score_maps`."""
    return compute_score_maps(network, [image], **options)[0]


def _weights_identity(arch: str, weights_path: str | os.PathLike | None) -> tuple:
    """What decides which weights :func:`~fcn_app.models.load_network` would read: the file with its size and mtime."""
    if ":" in arch:  # module:callable loads its own weights
        return (arch, None, None)
    if weights_path is None and os.environ.get(WEIGHTS_ENV):
        weights_path = os.environ[WEIGHTS_ENV]
    path = Path(weights_path) if weights_path is not None else cached_weights_path(default_weights(arch))
    try:
        status = path.stat()
        return (str(path.resolve()), status.st_size, status.st_mtime_ns)
    except OSError:
        return (str(path), None, None)


@functools.lru_cache(maxsize=4)
def _load_prepared(arch: str, weights_identity: tuple, weights_path: str | None, device: str,
                   classes_identity: tuple = (None, None, None), classes_path: str | None = None
                   ) -> FullyConvolutionalNet:
    network = load_network(arch, weights_path=weights_path, classes_path=classes_path).to(device)
    logger.debug("loaded %s (%s) on %s", arch, weights_identity[0], device)
    return prepare_network(network.eval())


def load_scoring_network(
    arch: str = DEFAULT_ARCH,
    *,
    weights_path: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    classes_path: str | os.PathLike | None = None,
) -> FullyConvolutionalNet:
    """:func:`~fcn_app.models.load_network`, on ``device`` and ready for :func:`compute_score_maps` — loaded once per
    process: later calls with the same model, weights file (same size and mtime) and device return the same
    network object. Treat it as read-only."""
    device = resolve_device(device)
    path = str(weights_path) if weights_path is not None else None
    if classes_path is None:
        return _load_prepared(arch, _weights_identity(arch, weights_path), path, str(device))
    classes = Path(classes_path)
    try:
        classes_identity = (str(classes.resolve()), classes.stat().st_size, classes.stat().st_mtime_ns)
    except OSError:
        classes_identity = (str(classes), None, None)
    return _load_prepared(arch, _weights_identity(arch, weights_path), path, str(device), classes_identity,
                          str(classes))


load_scoring_network.cache_clear = _load_prepared.cache_clear  # type: ignore[attr-defined]
