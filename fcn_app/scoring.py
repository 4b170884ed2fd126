"""Running a fully convolutional network on an image: pixels in, a grid of class scores (with geometry) out.

This is the one inference path: classifier FCNs (their score grid, one cell per window) and segmentation FCNs
(one cell per pixel) both run here, with the same precision, tiling and progress reporting. What the path needs
from a network: ``mean``/``std``/``categories``, ``min_input_size``, and its geometry
(:func:`fcn_app.geometry.score_layout`).

The inference path is tuned for throughput without changing results by default:

- ``torch.inference_mode`` (no autograd bookkeeping) and channels-last memory format for network and input,
  which lets oneDNN (CPU) and cuDNN pick their fastest convolution kernels — same values, ~1.5× faster on CPU;
- reduced precision (``precision="bf16"``/``"fp16"`` via autocast); ``"auto"`` picks bf16 only where
  ``scripts/bench.py`` and ``scripts/bench_precision.py`` measured both the speed-up and the agreement with fp32
  (CPUs with AMX-bf16, CUDA GPUs; see :func:`choose_precision`);
- another runtime (``backend="openvino"``/``"onnxruntime"``, :mod:`fcn_app.runtimes`) fed the same normalised
  input; ``"auto"`` picks OpenVINO on a CPU where it is installed (see :func:`choose_backend`);
- exact tiling (:mod:`fcn_app.tiling`) when the activations would exceed a memory budget: the stitched score
  map equals the untiled one, so an 8000×8000 photo runs in a few GB;
- :func:`load_scoring_network` loads and prepares each model once per process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .choices import PRECISIONS, check_precision
from .device import (cpu_flags, cpu_has_amx_bf16, cpu_has_native_bf16, cpu_isa_cap, cpu_model, module_device,
                     resolve_device)
from .errors import OptionError, RuntimeCompileError
from .geometry import AxisTile, ScoreGeometry, Tile, centered_padding, score_layout
from .models import DEFAULT_ARCH, load_network, resolve_weights_path
from .models.convert import FullyConvolutionalNet
from .models.preprocess import normalize_pixels
from .runtimes import BACKENDS, check_backend, resolve_backend, run_on_runtime, runtime_precisions
from .tiling import default_max_memory, format_bytes, parse_memory_size, plan_tiles

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "PRECISION_ENV",
    "ProgressCallback",
    "ScoreMap",
    "ScoringOptions",
    "compute_score_map",
    "choose_backend",
    "choose_precision",
    "compute_score_maps",
    "load_scoring_network",
    "prepare_batch",
    "prepare_network",
    "resolve_precision",
    "scoring_summary",
    "window_conv_as_matmul",
]

logger = logging.getLogger(__name__)

_REDUCED_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: What ``precision="auto"`` means on this machine when set (``fp32``, ``bf16`` or ``fp16``): pins a deployment,
#: or a test suite that compares bit for bit, without changing every command line.
PRECISION_ENV = "FCN_HEATMAP_PRECISION"
#: The CPU flags behind the precision and runtime choice, as logged and written in ``--json``.
_DECISIVE_FLAG_PREFIXES = ("amx", "avx512")

ProgressCallback = Callable[[int, int], None]


def choose_precision(precision: str, device: str | torch.device = "cpu", backend: str = "torch") -> str:
    """The precision (``"fp32"``, ``"bf16"`` or ``"fp16"``) that ``precision`` means on ``device`` for the
    concrete ``backend``.

    ``"auto"``: :data:`PRECISION_ENV` when set; else bf16 on CUDA GPUs that support it (fp16 on older ones) and on
    CPUs with AMX-bf16 (``amx_bf16`` in ``/proc/cpuinfo``), fp32 elsewhere — on an AMD EPYC with AVX-512 BF16 but
    no AMX, bf16 was measured *slower* than fp32, and ``scripts/bench_precision.py`` measures what bf16 changes on
    trained weights. A runtime that cannot run the choice (ONNX Runtime: fp32 only) gets fp32.
    """
    check_precision(precision)
    device = torch.device(device)
    if precision != "auto":
        return precision
    pinned = os.environ.get(PRECISION_ENV) or "auto"
    if pinned not in PRECISIONS:
        raise OptionError("precision", f"{PRECISION_ENV}={pinned!r} is not a precision; choose one of "
                                       f"{', '.join(PRECISIONS)}")
    if pinned != "auto":
        chosen = pinned
    elif device.type == "cuda":
        chosen = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    else:
        chosen = "bf16" if device.type == "cpu" and cpu_has_amx_bf16() else "fp32"
    return chosen if chosen in runtime_precisions(backend) else "fp32"


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> torch.dtype | None:
    """The torch autocast dtype for ``precision`` on ``device`` (see :func:`choose_precision`), or ``None`` for
    plain fp32."""
    chosen = choose_precision(precision, device)
    device = torch.device(device)
    if chosen == "fp32":
        return None
    if device.type == "cpu" and chosen == "bf16" and not cpu_has_native_bf16():
        logger.warning("this CPU has no native bf16 (AVX-512 BF16/AMX); bf16 will be emulated and slow")
    return _REDUCED_DTYPES[chosen]


def choose_backend(backend: str, device: str | torch.device = "cpu") -> str:
    """The runtime ``backend`` means on ``device`` (see :func:`fcn_app.runtimes.resolve_backend`)."""
    return resolve_backend(backend, device)


def scoring_summary(precision: str, backend: str, device: str | torch.device = "cpu") -> dict:
    """How :func:`compute_score_maps` runs with these options on ``device``: the runtime, the precision, what
    ``auto`` was asked, and the CPU (model and ``amx*``/``avx512*`` flags) the choice rests on — logged once,
    written in ``--json``."""
    device = torch.device(device)
    chosen_backend = resolve_backend(backend, device)
    return {
        "backend": chosen_backend,
        "precision": choose_precision(precision, device, chosen_backend),
        "requested": {"backend": backend, "precision": precision},
        "device": str(device),
        "cpu": {"model": cpu_model(),
                "flags": sorted(flag for flag in cpu_flags() if flag.startswith(_DECISIVE_FLAG_PREFIXES)),
                "isa_cap": cpu_isa_cap()},
    }


_logged_choices: set[tuple] = set()


def _log_choice_once(summary: dict) -> None:
    key = (summary["backend"], summary["precision"], tuple(summary["requested"].values()), summary["device"])
    if key in _logged_choices:
        return
    _logged_choices.add(key)
    cap = summary["cpu"]["isa_cap"]
    logger.info("scoring on %s with backend %s (asked: %s), precision %s (asked: %s); CPU %s, flags: %s%s",
                summary["device"], summary["backend"], summary["requested"]["backend"], summary["precision"],
                summary["requested"]["precision"], summary["cpu"]["model"],
                " ".join(summary["cpu"]["flags"]) or "no amx/avx512", f" (capped at {cap})" if cap else "")


@dataclass(frozen=True)
class ScoringOptions:
    """How :func:`compute_score_maps` runs: ``precision`` (see :func:`choose_precision`), ``max_memory``, the
    activation budget above which inputs are scored in exact tiles (bytes or ``"2G"``-style text; ``None``: the
    default budget), and ``backend``, the runtime (see :func:`choose_backend`). Checked when made, so a bad value
    fails before any image is read."""

    precision: str = "auto"
    max_memory: int | str | None = None
    backend: str = "auto"

    def __post_init__(self) -> None:
        check_precision(self.precision)
        check_backend(self.backend)
        if self.max_memory is not None:
            parse_memory_size(self.max_memory)

    def summary(self, network: torch.nn.Module) -> dict:
        """How ``network`` is scored with these options (:func:`scoring_summary`), as written in ``--json``."""
        return _network_summary(network, self.precision, self.backend)


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


def _normalized_region(
    network: torch.nn.Module,
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
    return batch.contiguous(memory_format=_memory_format(network))


def _memory_format(network: torch.nn.Module) -> torch.memory_format:
    """Channels-last unless the network asks for NCHW (``channels_last = False``)."""
    return torch.channels_last if network.channels_last else torch.contiguous_format


def _stack(images: Sequence[np.ndarray]) -> np.ndarray:
    if not images:
        raise ValueError("no images to score")
    shapes = {image.shape for image in images}
    if len(shapes) != 1:
        raise ValueError(f"prepare_batch needs images of one size, got {sorted(shapes)}")
    return images[0][None] if len(images) == 1 else np.stack(images)  # no copy of a single (possibly huge) image


def prepare_batch(
    network: torch.nn.Module, images: list[np.ndarray]
) -> tuple[torch.Tensor, tuple[int, int, int, int]]:
    """Stack same-size ``H×W×3`` uint8 RGB arrays into a normalised ``N×3×H'×W'`` tensor (channels-last).

    Sides smaller than the network's ``min_input_size`` (a classifier's window) are padded (centred) with the
    mean colour — zero after normalisation — so at least one score cell exists. Returns the tensor and the
    ``(top, bottom, left, right)`` padding.
    """
    pixels = _stack(images)
    padding = centered_padding(pixels.shape[1:3], network.min_input_size)
    top, bottom, left, right = padding
    full_rows = (0, pixels.shape[1] + top + bottom)
    full_cols = (0, pixels.shape[2] + left + right)
    return _normalized_region(network, pixels, padding, full_rows, full_cols), padding


def prepare_network(network: torch.nn.Module) -> torch.nn.Module:
    """Put ``network``'s convolution weights in channels-last format (in place, values unchanged) unless it asks for
    NCHW (``channels_last = False``); returns it.

    The head's window convolution (VGG16's fc6: 411 MB) keeps its own layout: it runs as a GEMM that reads the
    weight as it is (:func:`window_conv_as_matmul`), so converting it would only copy it. Cheap when already
    done, so :func:`compute_score_maps` calls it on every network it is given.
    """
    memory_format = _memory_format(network)
    weight = next((parameter for parameter in network.parameters() if parameter.dim() == 4), None)
    if weight is None or weight.is_contiguous(memory_format=memory_format):
        return network
    gemm_layers = {id(layer) for layer in _head_layers(network) if _is_window_conv(layer)}
    for module in network.modules():
        if id(module) not in gemm_layers and next(module.children(), None) is None:
            module.to(memory_format=memory_format)
    return network


def _head_layers(network: torch.nn.Module) -> list[torch.nn.Module]:
    """The layers of a converted classifier's head, in order; empty for any other network."""
    if not isinstance(network, FullyConvolutionalNet) or not isinstance(network.head, torch.nn.Sequential):
        return []
    return list(network.head)


def _is_window_conv(layer: torch.nn.Module) -> bool:
    """A converted first FC layer: a plain (unpadded, unstrided, undilated, ungrouped) conv with a big kernel."""
    return (isinstance(layer, torch.nn.Conv2d) and layer.kernel_size != (1, 1) and layer.stride == (1, 1)
            and layer.padding == (0, 0) and layer.dilation == (1, 1) and layer.groups == 1)


def window_conv_as_matmul(conv: torch.nn.Conv2d, feature_map: torch.Tensor) -> torch.Tensor:
    """``conv(feature_map)`` computed as one matrix product over all windows (im2col + GEMM), channels-last.

    The converted fc6 of VGG16 (4096 kernels of 512×7×7) on a grid of a few dozen cells is where oneDNN's direct
    convolution is weakest; as a GEMM the same arithmetic runs at the matrix unit's speed (``scripts/bench.py``
    prints both). The windows are gathered in the weight's own order — ``(c, y, x)`` for an NCHW weight (what
    :func:`prepare_network` leaves), ``(y, x, c)`` for a channels-last one — so the weight is never copied. Same
    sums in another order: equal up to fp32 rounding.
    """
    batch, _, height, width = feature_map.shape
    kernel_height, kernel_width = conv.kernel_size
    rows, cols = height - kernel_height + 1, width - kernel_width + 1
    if rows < 1 or cols < 1:
        return conv(feature_map)
    if conv.weight.is_contiguous():  # NCHW weight (prepare_network leaves it so): windows gathered (c, y, x)
        pixels = feature_map.contiguous()  # the feature map is small; the weight is not copied
        batch_step, channel_step, row_step, col_step = pixels.stride()
        shape = (batch, rows, cols, pixels.shape[1], kernel_height, kernel_width)
        strides = (batch_step, row_step, col_step, channel_step, row_step, col_step)
        weight = conv.weight.reshape(conv.out_channels, -1)  # a view
    else:  # channels-last weight: windows gathered (y, x, c)
        pixels = feature_map.permute(0, 2, 3, 1)  # N×H×W×C view, contiguous for channels-last input
        if not pixels.is_contiguous():
            pixels = pixels.contiguous()
        batch_step, row_step, col_step, channel_step = pixels.stride()
        shape = (batch, rows, cols, kernel_height, kernel_width, pixels.shape[-1])
        strides = (batch_step, row_step, col_step, row_step, col_step, channel_step)
        weight = conv.weight.permute(0, 2, 3, 1).reshape(conv.out_channels, -1)  # a view for a channels-last weight
    windows = pixels.as_strided(shape, strides).reshape(batch * rows * cols, -1)
    if conv.bias is not None:
        scores = torch.addmm(conv.bias, windows, weight.t())
    else:
        scores = windows @ weight.t()
    return scores.view(batch, rows, cols, conv.out_channels).permute(0, 3, 1, 2)


#: Set when this torch's fused convolution refused a call: the plain layers from then on.
_conv_relu_failed = False


def _conv_relu_op() -> Callable | None:
    """oneDNN's convolution with a fused ReLU (what torch.compile's CPU backend calls), where this torch has it."""
    if _conv_relu_failed or not torch.backends.mkldnn.is_available():
        return None
    try:
        return torch.ops.mkldnn._convolution_pointwise
    except (AttributeError, RuntimeError):
        return None


def _hooked(module: torch.nn.Module) -> bool:
    """Whether calling ``module`` (or a module inside it) would run hooks, its own or global ones: then its layers
    are called as they are, so the hooks see every call."""
    from torch.nn.modules import module as modules

    if modules._global_forward_hooks or modules._global_forward_pre_hooks:
        return True
    return any(layer._forward_hooks or layer._forward_pre_hooks for layer in module.modules())


def _plain_conv(layer: torch.nn.Module) -> bool:
    return (type(layer) is torch.nn.Conv2d and layer.padding_mode == "zeros" and not isinstance(layer.padding, str))


def run_features(network: torch.nn.Module, batch: torch.Tensor, fuse: bool = False) -> torch.Tensor:
    """``network.forward_features(batch)``; with ``fuse``, on the CPU in fp32 without autocast, each ``Conv2d``
    followed by a ``ReLU`` in a sequential feature extractor (VGG, AlexNet) without hooks runs as one oneDNN
    convolution with the ReLU fused, without the extra pass over each activation (3 % of VGG16 at 896×672,
    ``scripts/bench_photo.py``). The clamp is exact; the convolution is oneDNN's even where torch's own ``Conv2d``
    would pick another kernel (a small single-image input), so the values equal the layers' within fp32 summation
    order: ``tests/test_perf.py`` bounds the difference relative to the largest activation, and
    ``scripts/bench_fused_relu.py`` measures it on the CPU at hand (VGG16 at 224² to 512² on an AVX2 EPYC:
    bit-identical)."""
    features = network.features if isinstance(network, FullyConvolutionalNet) else None
    op = _conv_relu_op() if fuse and batch.device.type == "cpu" and batch.dtype == torch.float32 \
        and not torch.is_autocast_enabled("cpu") and type(features) is torch.nn.Sequential \
        and type(network).forward_features is FullyConvolutionalNet.forward_features and not _hooked(features) \
        else None
    if op is None:
        return network.forward_features(batch)
    try:
        return _fused_sequential(list(features), batch, op)
    except (RuntimeError, TypeError) as error:  # an internal op whose signature another torch may change
        global _conv_relu_failed
        _conv_relu_failed = True
        logger.debug("fused convolution + ReLU unavailable (%s); plain layers", error)
        return network.forward_features(batch)


def _fused_sequential(layers: list[torch.nn.Module], batch: torch.Tensor, op: Callable) -> torch.Tensor:
    index = 0
    while index < len(layers):
        layer = layers[index]
        following = layers[index + 1] if index + 1 < len(layers) else None
        if _plain_conv(layer) and type(following) is torch.nn.ReLU:
            batch = op(batch, layer.weight, layer.bias, list(layer.padding), list(layer.stride),
                       list(layer.dilation), layer.groups, "relu", [], "")
            index += 2
        else:
            batch = layer(batch)
            index += 1
    return batch


def _forward(network: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    """``network(batch)``, with the head's window convolution run as a GEMM (see :func:`window_conv_as_matmul`)."""
    head = _head_layers(network)
    if not head:
        return network(batch)
    scores = run_features(network, batch, fuse=True)
    for layer in head:
        scores = window_conv_as_matmul(layer, scores) if _is_window_conv(layer) else layer(scores)
    return scores


def _run(network: torch.nn.Module, batch: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    device = module_device(network)
    batch = batch.to(device, non_blocking=True)
    precision = torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
    with precision:
        return _forward(network, batch).float().cpu()


def _whole(length: int, cells: int) -> AxisTile:
    return AxisTile(0, length, 0, cells, 0)


@torch.inference_mode()
def compute_score_maps(
    network: torch.nn.Module,
    images: Sequence[np.ndarray],
    *,
    precision: str = "auto",
    max_memory: int | str | None = None,
    progress: ProgressCallback | None = None,
    backend: str = "auto",
) -> list[ScoreMap]:
    """Score maps of RGB uint8 images (any sizes), from a classifier FCN or a segmentation FCN.

    Args:
        precision: ``"fp32"``, ``"bf16"``, ``"fp16"`` or ``"auto"`` (see :func:`choose_precision`).
        max_memory: activation budget in bytes (or ``"2G"``-style text); inputs whose activations would exceed it
            are scored in exact tiles. Default: :func:`fcn_app.tiling.default_max_memory`.
        progress: called as ``progress(done, total)`` after each tile of an image.
        backend: ``"torch"``, ``"openvino"``, ``"onnxruntime"`` or ``"auto"`` (see :func:`choose_backend`); with
            ``"auto"``, a network the chosen runtime cannot compile is scored by torch (a warning, once).

    Every image is scored alone, so its score map is the same whatever images come with it: a joint forward pass
    over same-size images sums in another order for some batch sizes (VGG16 logits moved by up to 4.5e-6), and
    ``scripts/bench_batching.py`` shows what it would buy. An image over the budget is scored in tiles whose
    stitched score map equals the untiled one.
    """
    if not len(images):
        raise ValueError("no images to score")
    summary = _network_summary(network, precision, backend)
    _log_choice_once(summary)
    budget = default_max_memory() if max_memory is None else parse_memory_size(max_memory)
    prepare_network(network)
    try:
        return [_score_image(network, image, summary, budget, progress) for image in images]
    except RuntimeCompileError as error:
        if backend != "auto" or summary["backend"] == "torch":
            raise
        logger.warning("%s; backend auto scores this network with torch", str(error).rsplit(";", 1)[0])
        _torch_only.add(network)
        return compute_score_maps(network, images, precision=precision, max_memory=max_memory, progress=progress,
                                  backend=backend)


#: Networks a runtime chosen by ``backend="auto"`` failed to compile: torch scores them from then on.
_torch_only: weakref.WeakSet = weakref.WeakSet()


def _network_summary(network: torch.nn.Module | None, precision: str, backend: str) -> dict:
    """:func:`scoring_summary` for ``network``: on its device, and torch where ``auto``'s runtime failed it. No
    network (a task rendering score maps it was handed): as on the CPU."""
    fell_back = backend == "auto" and network is not None and network in _torch_only
    device = module_device(network) if network is not None else torch.device("cpu")
    summary = scoring_summary(precision, "torch" if fell_back else backend, device)
    if fell_back:
        summary["requested"]["backend"] = "auto"
    return summary


def _forward_with(summary: dict, network: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The function from a normalised input batch to float32 CPU scores, for the runtime in ``summary``."""
    if summary["backend"] == "torch":
        dtype = resolve_precision(summary["precision"], module_device(network))
        return lambda batch: _run(network, batch, dtype)
    return lambda batch: run_on_runtime(summary["backend"], network, batch, summary["precision"])


def _score_image(
    network: torch.nn.Module, image: np.ndarray, summary: dict, budget: int,
    progress: ProgressCallback | None,
) -> ScoreMap:
    pixels = image[None]
    padding = centered_padding(pixels.shape[1:3], network.min_input_size)
    top, bottom, left, right = padding
    padded_size = (pixels.shape[1] + top + bottom, pixels.shape[2] + left + right)
    layout = score_layout(network, padded_size)
    grid = layout.grid
    forward = _forward_with(summary, network)
    tiles = plan_tiles(network, padded_size, budget, bytes_per_value=4 if summary["precision"] == "fp32" else 2)
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
        tile_logits = forward(batch)[0]
        tile_grid = tuple(tile_logits.shape[-2:])
        expected = score_layout(network, tile.input_size).grid
        if tile_grid != expected or rows.cell_stop - rows.cell_offset > tile_grid[0] \
                or cols.cell_stop - cols.cell_offset > tile_grid[1]:
            raise RuntimeError(f"network produced grid {tile_grid} for a {tile.input_size} tile, geometry expects "
                               f"{expected} covering cells up to {(rows.cell_stop, cols.cell_stop)}")
        if len(tiles) == 1:
            logits = tile_logits.contiguous()
        else:
            if logits is None:
                logits = torch.empty((tile_logits.shape[0], *grid), dtype=torch.float32)
            logits[:, rows.cell_start:rows.cell_stop, cols.cell_start:cols.cell_stop] = tile_logits[
                :, rows.cell_start - rows.cell_offset:rows.cell_stop - rows.cell_offset,
                cols.cell_start - cols.cell_offset:cols.cell_stop - cols.cell_offset]
        del batch, tile_logits
        if progress is not None:
            progress(done, len(tiles))

    geometry = ScoreGeometry.for_network(layout.geometry, grid, layout.window, offset=(top, left))
    return ScoreMap(logits=logits, geometry=geometry, image_size=tuple(pixels.shape[1:3]),
                    categories=network.categories)


def compute_score_map(network: torch.nn.Module, image: np.ndarray, **options) -> ScoreMap:
    """Score map of one ``H×W×3`` uint8 RGB image (any size); ``options`` as for :func:`compute_score_maps`."""
    return compute_score_maps(network, [image], **options)[0]


def _file_identity(path: str | os.PathLike) -> tuple:
    """A file as the model cache tells versions apart: resolved path, size and modification time."""
    path = Path(path)
    try:
        status = path.stat()
        return (str(path.resolve()), status.st_size, status.st_mtime_ns)
    except OSError:
        return (str(path), None, None)


@functools.lru_cache(maxsize=4)
def _load_prepared(arch: str, weights_identity: tuple, weights_path: str | None, device: str,
                   classes_identity: tuple | None, classes_path: str | None) -> FullyConvolutionalNet:
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
    process: later calls with the same model, weights file and class-names file (same size and mtime) and device
    return the same network object. Treat it as read-only."""
    device = resolve_device(device)
    # a module:callable loads its own weights; otherwise the file that would be read decides (zoo's resolution)
    weights_identity = ((arch,) if weights_path is None else _file_identity(weights_path)) if ":" in arch else \
        _file_identity(resolve_weights_path(arch, weights_path))
    classes_identity = _file_identity(classes_path) if classes_path is not None else None
    return _load_prepared(arch, weights_identity, None if weights_path is None else str(weights_path), str(device),
                          classes_identity, None if classes_path is None else str(classes_path))


load_scoring_network.cache_clear = _load_prepared.cache_clear  # type: ignore[attr-defined]
