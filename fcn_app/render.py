"""Pictures from heatmaps, segmentations and detections: pure functions, arrays in and arrays out.

All images here are ``H×W×3`` uint8 in **RGB** order. OpenCV works in BGR; the one place that crosses over is
:func:`colorize`, which converts OpenCV's colormap output to RGB explicitly.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import cv2
import numpy as np

from .choices import COLORMAP_NAMES, DEFAULT_COLORMAP, check_colormap, check_normalize
from .errors import OptionError
from .text import font_size_for_scale, format_probability, ink_text, text_size

__all__ = [
    "COLORMAPS",
    "DEFAULT_COLORMAP",
    "blend",
    "check_colormap",
    "colorize",
    "draw_detections",
    "draw_legend",
    "draw_legend_and_marker",
    "draw_marker",
    "legend_box",
    "marker_box",
    "normalize_heat",
    "overlay",
    "tile_panels",
]

COLORMAPS = {name: getattr(cv2, f"COLORMAP_{name.upper()}") for name in COLORMAP_NAMES}
#: Pixels blended per step: small enough that the float intermediates stay in the CPU cache.
_BLEND_CHUNK_PIXELS = 32 * 1024


def _check_rgb(image: np.ndarray) -> None:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")


def colorize(heatmap: np.ndarray, colormap: str = DEFAULT_COLORMAP) -> np.ndarray:
    """Map values in [0, 1] (clipped) to RGB colours of an OpenCV colormap."""
    check_colormap(colormap)
    bgr = cv2.applyColorMap(_heat_levels(heatmap), COLORMAPS[colormap])
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def normalize_heat(heatmap: np.ndarray, mode: str) -> np.ndarray:
    """The values :func:`colorize` gets for ``heatmap`` (probabilities in [0, 1]) under ``mode``, as float32:

    - ``"none"``: the probabilities themselves (colours comparable across classes and images);
    - ``"peak"``: divided by the map's maximum, so colours span 0 → the peak (unchanged if the map is all 0);
    - ``"minmax"``: the minimum → 0 and the maximum → 1, as pytorch-grad-cam and torch-cam scale their maps; a
      constant map has no range to show and becomes all 0 (never NaN).

    ``heatmap`` itself is left unchanged. Unknown modes raise :class:`~fcn_app.errors.OptionError`.
    """
    heat = np.asarray(heatmap, dtype=np.float32)
    mode = check_normalize(mode)
    if mode == "none":
        return heat
    low, high = (float(heat.min()), float(heat.max())) if heat.size else (0.0, 0.0)
    if mode == "peak":
        return heat / np.float32(high) if high > 0 else heat.copy()
    span = high - low
    if not span > 0:  # constant (or not finite): nothing is higher than anything else
        return np.zeros_like(heat)
    # subtract and divide in float64: float32 would round (max − min) / span just below 1 for some maps
    return ((heat.astype(np.float64) - low) / span).astype(np.float32)


def overlay(
    image: np.ndarray, heatmap: np.ndarray, *, colormap: str = DEFAULT_COLORMAP, alpha: float = 0.5
) -> np.ndarray:
    """Blend the colorized ``heatmap`` over ``image`` (see :func:`blend`)."""
    if heatmap.shape != image.shape[:2]:
        raise ValueError(f"heatmap shape {heatmap.shape} does not match image size {image.shape[:2]}")
    return blend(image, colorize(heatmap, colormap), alpha)


def blend(image: np.ndarray, colours: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """``(1 − alpha)·image + alpha·colours`` per pixel, rounded: both ``H×W×3`` uint8 RGB."""
    _check_rgb(image)
    if colours.shape != image.shape:
        raise ValueError(f"colours of shape {colours.shape} do not match the image's {image.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise OptionError("alpha", f"opacity must be between 0 and 1, got {alpha}")
    # Same arithmetic as rint((1 − alpha)·image + alpha·colour) in float32, but each term is a 256-entry table
    # looked up by OpenCV, and a few rows at a time so the float intermediates stay in cache: bit-identical to
    # the formula, several times faster on a 12 MP photo.
    levels = np.arange(256, dtype=np.float32)
    image_terms = (np.float32(1.0 - alpha) * levels).reshape(1, 256, 1)
    colour_terms = (np.float32(alpha) * levels).reshape(1, 256, 1)
    blended = np.empty_like(image)
    rows = max(1, _BLEND_CHUNK_PIXELS // image.shape[1])
    for top in range(0, image.shape[0], rows):
        terms = cv2.add(cv2.LUT(image[top : top + rows], image_terms),
                        cv2.LUT(np.ascontiguousarray(colours[top : top + rows]), colour_terms))
        blended[top : top + rows] = cv2.convertScaleAbs(terms)  # rounds half to even, saturates: np.rint + clip
    return blended


def _heat_levels(heatmap: np.ndarray) -> np.ndarray:
    """``rint(clip(heatmap, 0, 1)·255)`` as uint8 (NaN → 0), as :func:`colorize` quantises."""
    # fmax/fmin skip NaN (NaN → 0) in two passes over a photo-sized map, where nan_to_num + maximum take four; values
    # above 1 saturate to 255 either way. (numpy's, not cv2.max: that reads a 1-pixel map as a 4-element Scalar.)
    heat = np.fmax(heatmap.astype(np.float32, copy=False), np.float32(0.0))
    np.fmin(heat, np.float32(1.0), out=heat)
    return cv2.convertScaleAbs(heat, alpha=255.0)


def _font_scale(width: int) -> float:
    return float(np.clip(width / 1100.0, 0.3, 1.1))


#: Where a legend may sit, in the order tried when the cross would be under it.
LEGEND_CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def _legend_layout(width: int, lines: Sequence[str], colormap: str | None, font) -> dict:
    scale = _font_scale(width)
    font_size = font_size_for_scale(scale)
    sizes = [text_size(line, font_size, font) for line in lines]
    line_height = max([size.ascent for size in sizes] + [int(12 * scale)]) + int(10 * scale) + 2
    margin = max(2, int(8 * scale))
    bar_height = max(4, int(12 * scale)) if colormap else 0
    box_width = max([size.width for size in sizes] + [int(120 * scale)]) + 2 * margin
    box_height = line_height * len(lines) + 2 * margin + (bar_height + margin if bar_height else 0)
    return {"scale": scale, "font_size": font_size, "line_height": line_height, "margin": margin,
            "bar_height": bar_height, "width": box_width, "height": box_height}


def legend_box(image_shape: tuple[int, ...], lines: Sequence[str], *, colormap: str | None = DEFAULT_COLORMAP,
               font: str | os.PathLike | None = None, corner: str = "top-left") -> tuple[int, int, int, int]:
    """``(x, y, w, h)``: the pixels :func:`draw_legend` darkens for these arguments."""
    if corner not in LEGEND_CORNERS:
        raise ValueError(f"corner must be one of {', '.join(LEGEND_CORNERS)}, got {corner!r}")
    height, width = image_shape[:2]
    layout = _legend_layout(width, lines, colormap, font)
    box_width, box_height = min(width, layout["width"]), min(height, layout["height"])
    left = width - box_width if corner.endswith("right") else 0
    top = height - box_height if corner.startswith("bottom") else 0
    return (left, top, box_width, box_height)


def draw_legend(
    image: np.ndarray, lines: Sequence[str], *, colormap: str | None = DEFAULT_COLORMAP,
    font: str | os.PathLike | None = None, corner: str = "top-left",
) -> np.ndarray:
    """Return a copy of ``image`` with a dark legend box (text lines, optional colour bar 0 → 1) in a ``corner``
    (top left by default; :func:`legend_box` gives its pixels).

    ``font``: a TrueType/OpenType file for the text (default: the bundled DejaVu Sans, see :mod:`fcn_app.text`).
    """
    _check_rgb(image)
    result = image.copy()
    left, top, box_width, box_height = legend_box(image.shape, lines, colormap=colormap, font=font, corner=corner)
    layout = _legend_layout(image.shape[1], lines, colormap, font)
    scale, margin, line_height, bar_height = layout["scale"], layout["margin"], layout["line_height"], \
        layout["bar_height"]
    region = result[top : top + box_height, left : left + box_width].astype(np.float32)
    result[top : top + box_height, left : left + box_width] = np.clip(region * 0.35, 0, 255).astype(np.uint8)
    # the text is drawn into a view of the box, so nothing spills out of it in any corner
    box = result[top : top + box_height, left : left + box_width]
    for number, line in enumerate(lines):
        baseline = margin + line_height * (number + 1) - int(6 * scale) - 2
        ink_text(box, line, (margin, baseline), layout["font_size"], (255, 255, 255), font)  # our own copy
    if colormap and box_height > bar_height + margin:
        bar_top = box_height - margin - bar_height
        bar_width = max(1, box_width - 2 * margin)
        ramp = np.tile(np.linspace(0.0, 1.0, bar_width, dtype=np.float32), (bar_height, 1))
        box[bar_top : bar_top + bar_height, margin : margin + bar_width] = colorize(ramp, colormap)
    return result


def marker_box(point: tuple[int, int], image_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """``(x, y, w, h)``: the square :func:`draw_marker` draws its cross in for a peak at ``point = (x, y)`` —
    ``3 %`` of the shorter side across, moved as little as needed to lie wholly inside the image."""
    height, width = image_shape[:2]
    side = min(max(5, int(min(height, width) * 0.03)) | 1, height - (1 - height % 2), width - (1 - width % 2))
    half = max(0, side // 2)  # an odd side, so the cross has a centre pixel; at most the image's own size
    center_x = int(np.clip(int(point[0]), half, width - 1 - half))
    center_y = int(np.clip(int(point[1]), half, height - 1 - half))
    return (center_x - half, center_y - half, 2 * half + 1, 2 * half + 1)


def draw_marker(image: np.ndarray, point: tuple[int, int], colour: tuple[int, int, int] = (255, 255, 255)) -> np.ndarray:
    """Return a copy of ``image`` with a cross at ``point = (x, y)``, wholly inside the image (:func:`marker_box`:
    a cross at a peak on the image's edge is moved inwards just enough to be seen whole, not cut in half)."""
    _check_rgb(image)
    result = image.copy()
    left, top, side, _ = marker_box(point, image.shape)
    thickness = max(1, side // 6)
    middle = side // 2 - thickness // 2
    result[top + middle : top + middle + thickness, left : left + side] = colour  # horizontal bar
    result[top : top + side, left + middle : left + middle + thickness] = colour  # vertical bar
    return result


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def draw_legend_and_marker(
    image: np.ndarray, lines: Sequence[str], point: tuple[int, int] | None, *,
    colormap: str | None = DEFAULT_COLORMAP, font: str | os.PathLike | None = None,
) -> np.ndarray:
    """:func:`draw_legend` and, at ``point`` (unless None), :func:`draw_marker`: the legend goes in the first of
    :data:`LEGEND_CORNERS` clear of the cross, so the cross is never under it. Where every corner's legend would
    cover it (a picture about the legend's size), the cross is drawn over the legend."""
    corner = LEGEND_CORNERS[0]
    if point is not None:
        cross = marker_box(point, image.shape)
        clear = [option for option in LEGEND_CORNERS if not _overlaps(
            legend_box(image.shape, lines, colormap=colormap, font=font, corner=option), cross)]
        corner = clear[0] if clear else corner
    result = draw_legend(image, lines, colormap=colormap, font=font, corner=corner)
    return result if point is None else draw_marker(result, point)


def tile_panels(panels: Sequence[np.ndarray], columns: int | None = None, gap: int = 4) -> np.ndarray:
    """Arrange same-size RGB panels in a grid (``columns`` defaults to up to 3), white gaps between them."""
    if not panels:
        raise ValueError("tile_panels needs at least one panel")
    for panel in panels:
        _check_rgb(panel)
    height, width = panels[0].shape[:2]
    if any(panel.shape[:2] != (height, width) for panel in panels):
        raise ValueError("all panels must have the same size")
    columns = columns or min(3, len(panels))
    rows = math.ceil(len(panels) / columns)
    canvas = np.full((rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap, 3), 255, np.uint8)
    for number, panel in enumerate(panels):
        row, column = divmod(number, columns)
        top, left = row * (height + gap), column * (width + gap)
        canvas[top : top + height, left : left + width] = panel
    return canvas


#: Box colours, one per class index (cycled), chosen to stay distinct on photos.
_BOX_PALETTE = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
    (240, 50, 230), (210, 245, 60), (250, 190, 212), (0, 128, 128), (220, 190, 255),
)


def draw_detections(image: np.ndarray, detections: Sequence, *, thickness: int | None = None,
                    font: str | os.PathLike | None = None) -> np.ndarray:
    """A copy of ``image`` (RGB) with each detection's box and ``"name score"`` label, a colour per class.

    ``detections`` are :class:`fcn_app.detect.Detection` objects (``box`` as ``(x, y, w, h)``, ``class_index``,
    ``class_name``, ``score``); the best-scoring is drawn last, on top. ``font``: as for :func:`draw_legend`.
    """
    _check_rgb(image)
    result = np.ascontiguousarray(image.copy())
    height, width = result.shape[:2]
    thickness = thickness or max(1, int(round(min(height, width) / 250)))
    font_size = font_size_for_scale(float(np.clip(min(height, width) / 700.0, 0.3, 1.0)))
    for detection in sorted(detections, key=lambda d: d.score):
        colour = _BOX_PALETTE[detection.class_index % len(_BOX_PALETTE)]
        x, y, w, h = detection.box
        top_left = (int(round(x)), int(round(y)))
        cv2.rectangle(result, top_left, (int(round(x + w)) - 1, int(round(y + h)) - 1), colour, thickness)
        label = f"{detection.class_name} {format_probability(detection.score)}"
        text_w, text_h, baseline = text_size(label, font_size, font)
        text_top = max(0, top_left[1] - text_h - baseline - 2)
        cv2.rectangle(result, (top_left[0], text_top), (top_left[0] + text_w + 2, text_top + text_h + baseline + 2),
                      colour, -1)
        text_colour = (0, 0, 0) if sum(colour) > 380 else (255, 255, 255)
        ink_text(result, label, (top_left[0] + 1, text_top + text_h + 1), font_size, text_colour, font)
    return result
