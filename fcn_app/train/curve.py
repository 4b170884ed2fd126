"""The training-curve picture (loss and validation mean IU against iterations), drawn with OpenCV and
:mod:`fcn_app.text`."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from ..text import draw_text, font_size_for_scale

__all__ = ["draw_training_curve"]

_PANEL = (360, 480)  # height, width of one plot


def _plot(points: Sequence[tuple[float, float]], title: str, colour: tuple[int, int, int], fixed_range=None) -> np.ndarray:
    height, width = _PANEL
    canvas = np.full((height, width, 3), 255, np.uint8)
    left, right, top, bottom = 60, 15, 30, 40
    canvas = draw_text(canvas, title, (left, 20), font_size_for_scale(0.55), (0, 0, 0))
    cv2.rectangle(canvas, (left, top), (width - right, height - bottom), (0, 0, 0), 1)
    finite = [(x, y) for x, y in points if math.isfinite(y)]
    if not finite:
        canvas = draw_text(canvas, "no data yet", (left + 10, height // 2), font_size_for_scale(0.5), (120, 120, 120))
        return canvas
    xs = np.array([x for x, _ in finite], dtype=np.float64)
    ys = np.array([y for _, y in finite], dtype=np.float64)
    x_low, x_high = float(xs.min()), float(xs.max())
    y_low, y_high = fixed_range if fixed_range else (float(ys.min()), float(ys.max()))
    if x_high == x_low:
        x_low, x_high = x_low - 1, x_high + 1
    if y_high == y_low:
        y_low, y_high = y_low - 0.5, y_high + 0.5
    plot_w, plot_h = width - left - right, height - top - bottom
    px = left + (xs - x_low) / (x_high - x_low) * plot_w
    py = top + (1 - (ys - y_low) / (y_high - y_low)) * plot_h
    curve = np.stack([px, py], axis=1).round().astype(np.int32)
    if len(curve) > 1:
        cv2.polylines(canvas, [curve.reshape(-1, 1, 2)], False, colour, 2, cv2.LINE_AA)
    for point in curve[-1:]:
        cv2.circle(canvas, (int(point[0]), int(point[1])), 3, colour, -1, cv2.LINE_AA)
    small = font_size_for_scale(0.4)
    for value, y in ((y_high, top), (y_low, height - bottom)):
        canvas = draw_text(canvas, f"{value:.3g}", (4, y + 5), small, (0, 0, 0))
    canvas = draw_text(canvas, f"{x_low:.0f}", (left, height - bottom + 18), small, (0, 0, 0))
    canvas = draw_text(canvas, f"{x_high:.0f} it", (width - right - 70, height - bottom + 18), small, (0, 0, 0))
    return canvas


def draw_training_curve(history: dict) -> np.ndarray:
    """RGB picture: training loss (left) and validation mean IU (right) against the iteration."""
    losses = [(entry["iteration"], entry["loss"]) for entry in history.get("train", [])]
    mean_ius = [(entry["iteration"], entry["mean_iu"]) for entry in history.get("val", [])]
    left = _plot(losses, "training loss", (31, 119, 180))
    right = _plot(mean_ius, "validation mean IU", (214, 39, 40), fixed_range=(0.0, 1.0))
    gap = np.full((_PANEL[0], 8, 3), 255, np.uint8)
    return np.concatenate([left, gap, right], axis=1)
