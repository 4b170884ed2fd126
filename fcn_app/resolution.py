"""Working resolution: the network sees a resized image, results are given on the original pixels.

Classifiers recognise objects at the scale they were trained on (ImageNet objects fill much of a 224 window).
In a 12 MP photo every window at native resolution sees a patch of texture, so the map answers a question
nobody asked — and costs minutes. The network therefore runs on the image resized to a *working size* (longer
side = a few windows), and the score map is mapped back onto the original pixels through exact per-axis scale
factors, so heatmaps, peaks and boxes refer to the original image.

The default multiple of the window comes from ``scripts/bench_scale.py``: the fastest working size whose
peak-in-object hit rate is within 1 % of the best, on scenes where objects fill 20–70 % of the frame.
"""

from __future__ import annotations

from dataclasses import replace

from .scoring import ScoreMap

__all__ = ["DEFAULT_WORK_WINDOWS", "default_work_size", "score_map_on_original"]

#: Default working size as a multiple of the model's window (longer side); chosen by scripts/bench_scale.py.
DEFAULT_WORK_WINDOWS = 4


def default_work_size(window: int | tuple[int, int], windows: float = DEFAULT_WORK_WINDOWS) -> int:
    """Longer side in pixels of the default working size for a model whose window is ``window`` pixels."""
    side = max(window) if isinstance(window, tuple) else window
    return max(1, round(windows * side))


def score_map_on_original(score_map: ScoreMap, original_size: tuple[int, int]) -> ScoreMap:
    """``score_map`` of an image resized from ``original_size = (height, width)``, placed on the original pixels.

    The factors are per axis (``working / original``; rounding to whole pixels makes them differ slightly), and
    pixel centres stay at integers in both images (see :meth:`fcn_app.geometry.ScoreGeometry.scaled`).
    """
    height, width = score_map.image_size
    if (height, width) == tuple(original_size):
        return score_map
    factor = (height / original_size[0], width / original_size[1])
    return replace(score_map, geometry=score_map.geometry.scaled(factor),
                   image_size=(int(original_size[0]), int(original_size[1])))
