"""Exact tiling: scoring images too large for memory in pieces whose stitched score map equals the untiled one.

A score cell depends only on the input pixels in its receptive field (404 px for VGG16). Cell ``i`` of a network
with stride ``s``, first centre ``c₀`` and receptive field ``R`` reads input pixels
``[c₀ + s·i − (R − 1)/2, c₀ + s·i + (R − 1)/2]`` (VGG16: ``[32·i − 90, 32·i + 313]``). A tile computes cell ``i``
exactly as the whole image would when

- the tile starts at a multiple of the network stride ``s`` (every pooling/strided layer then sees the same
  phase, so tile cell ``j`` *is* image cell ``j + start/s``), and
- the cell's receptive field lies inside the tile — or reaches past it only where the tile edge is the image
  edge, where both see the same zero padding.

So the plan splits the score grid into runs of cells, and gives each run the smallest stride-aligned input range
that contains all their receptive fields. Neighbouring tiles overlap by about one receptive field; every cell is
computed by exactly one tile and copied into place. Tile sizes come from a memory budget and an estimate of the
activation memory, read off the layer shapes (no forward pass needed).
"""

from __future__ import annotations

import logging
import math
import os
import re

from .errors import OptionError
from .contracts import ScoringNetwork
from .geometry import Tile, plan_axis, score_layout

__all__ = [
    "activation_bytes",
    "available_memory_bytes",
    "default_max_memory",
    "format_bytes",
    "parse_memory_size",
    "plan_tiles",
]

logger = logging.getLogger(__name__)

_MiB = 1 << 20
_GiB = 1 << 30
#: The default budget is this share of the memory currently available, clamped to the bounds below: enough for
#: tiles of ~1400² px (VGG16, fp32) so the halo overhead stays moderate, small enough that an 8000² photo stays
#: under 3 GB resident in total (weights, image and score grid included).
DEFAULT_MEMORY_SHARE = 0.25
DEFAULT_MEMORY_BOUNDS = (256 * _MiB, 1 * _GiB)
#: Activations are not the only allocations during a pass (oneDNN scratch pads, weight reorders, allocator
#: slack); the estimate is multiplied by this before it is compared with the budget (measured on VGG16).
ACTIVATION_OVERHEAD = 1.25


def activation_bytes(network: ScoringNetwork, input_size: tuple[int, int], batch: int = 1, bytes_per_value: int = 4) -> int:
    """Estimated peak activation memory of one forward pass: the network's ``activation_values`` × batch × value size ×
    :data:`ACTIVATION_OVERHEAD`."""
    return int(network.activation_values(input_size) * batch * bytes_per_value * ACTIVATION_OVERHEAD)


def _tile_side(network: ScoringNetwork, image_side: int, other_side: int, batch: int, bytes_per_value: int, budget: int,
               stride: int) -> int:
    """Largest multiple of ``stride`` (or the whole ``image_side``) whose square-ish tile fits ``budget``."""
    low, high = 1, max(1, math.ceil(image_side / stride))
    while low < high:  # binary search on the number of strides
        middle = (low + high + 1) // 2
        side = min(image_side, middle * stride)
        if activation_bytes(network, (side, min(side, other_side)), batch, bytes_per_value) <= budget:
            low = middle
        else:
            high = middle - 1
    return min(image_side, low * stride)


def plan_tiles(
    network: ScoringNetwork,
    input_size: tuple[int, int],
    max_memory: int,
    *,
    batch: int = 1,
    bytes_per_value: int = 4,
) -> list[Tile] | None:
    """Tiles covering an input of ``input_size`` (already padded to the network's window), or ``None`` if the
    whole input fits ``max_memory`` bytes of activations in one pass."""
    if not network.tileable:  # no tile computes what the whole input does
        return None
    if activation_bytes(network, input_size, batch, bytes_per_value) <= max_memory:
        return None
    layout = score_layout(network, input_size)
    geometry, grid = layout.geometry, layout.grid
    plans = []
    too_small = False
    for axis in range(2):
        stride = geometry.stride[axis]
        alignment = layout.alignment[axis]
        field = geometry.receptive_field[axis]
        side = _tile_side(network, input_size[axis], input_size[1 - axis], batch, bytes_per_value, max_memory,
                          alignment)
        # a run of m cells needs (m − 1)·stride + field pixels, plus up to one alignment step to start aligned
        cells_per_tile = (side - field - alignment) // stride + 1
        if side >= input_size[axis]:  # the whole axis fits: one run of cells
            cells_per_tile = max(1, grid[axis])
        elif cells_per_tile * stride < alignment:  # at least one alignment step of cells (a per-pixel output: 32 px)
            too_small, cells_per_tile = True, max(1, alignment // stride)
        plans.append(plan_axis(input_size[axis], grid[axis], stride, geometry.first_center[axis], field,
                               cells_per_tile, alignment))
    if too_small:
        logger.warning("memory budget %s is below one exact tile (receptive field %s px); using the smallest tiles",
                       format_bytes(max_memory), "×".join(map(str, geometry.receptive_field)))
    tiles = [Tile(rows, cols) for rows in plans[0] for cols in plans[1]]
    if network.global_context and len(tiles) > 1:
        logger.warning("%s gates channels by averages over the whole input (squeeze-and-excitation): tiles are "
                       "close to but not exactly the whole-image scores; raise the memory budget for exact ones",
                       network.arch)
    logger.info("scoring %d×%d px in %d tiles (budget %s)", input_size[0], input_size[1], len(tiles),
                format_bytes(max_memory))
    return tiles


def available_memory_bytes() -> int | None:
    """Memory the system can give this process now (``MemAvailable``), or ``None`` if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def default_max_memory() -> int:
    """Activation budget used when none is given: a quarter of the available memory, within 256 MiB … 1 GiB."""
    available = available_memory_bytes()
    low, high = DEFAULT_MEMORY_BOUNDS
    if available is None:
        return high
    return int(min(high, max(low, available * DEFAULT_MEMORY_SHARE)))


_SIZE_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.IGNORECASE)


def parse_memory_size(text: str | int) -> int:
    """``"2G"``, ``"1.5GB"``, ``"512MiB"``, ``"800m"`` or plain bytes → bytes (binary units: 1G = 2³⁰)."""
    if isinstance(text, int):
        value = text
    else:
        match = _SIZE_PATTERN.match(str(text))
        if not match:
            raise OptionError("max_memory", f"cannot read memory size {text!r}; write e.g. 2G, 1.5GB, 512M or a "
                              "number of bytes")
        power = "bkmgt".index(match.group(2).lower() or "b")
        value = int(float(match.group(1)) * (1024**power))
    if value <= 0:
        raise OptionError("max_memory", f"memory size must be positive, got {text!r}")
    return value


def format_bytes(value: int) -> str:
    for unit, size in (("GiB", _GiB), ("MiB", _MiB)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value} B"
