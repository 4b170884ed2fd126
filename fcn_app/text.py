"""Text on pictures in any script: pure functions, ``H×W×3`` uint8 RGB arrays in and out.

OpenCV's Hershey fonts are ASCII-only (``cv2.putText`` draws "café" as "caf?"), so every label is rendered with
FreeType through Pillow instead. The default font is DejaVu Sans, shipped inside the package
(``fcn_app/fonts/``, licence in ``LICENSE_DEJAVU``) so that it installs with the package: it covers Latin with
accents, Greek and Cyrillic. A character the font lacks is drawn as the font's empty box, never an error; a
different ``font`` file (e.g. one covering CJK) can be given by path.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from .errors import FontError

__all__ = ["DEFAULT_FONT", "TextSize", "check_font", "draw_text", "font_size_for_scale", "format_probability",
           "ink_text", "load_font", "text_size"]

DEFAULT_FONT = Path(__file__).resolve().parent / "fonts" / "DejaVuSans.ttf"

# Pixel size of DejaVu Sans that matches cv2.FONT_HERSHEY_SIMPLEX at scale 1 (capital height ≈ 19 px vs 20 px,
# "Hello tabby cat 0.91" 263 px wide vs 257 px), so labels keep the size they had when cv2 drew them.
_PIXELS_PER_CV2_SCALE = 26.0


class TextSize(NamedTuple):
    """Extent of one line of text in pixels: ``ascent`` above the baseline, ``descent`` below it.

    Ascent and descent are the font's, not the string's, so label boxes have the same height whatever the text
    (and leave room for accents and descenders).
    """

    width: int
    ascent: int
    descent: int


def format_probability(value: float) -> str:
    """``value`` (a probability) as every legend, box label, panel and table writes it: three decimals
    (``"0.912"``, ``"0.003"``), or two significant digits where three decimals would read ``0.000``
    (``"0.00042"``, ``"1.2e-05"``).

    One function for pictures and tables alike, so a small peak never reads ``0.00`` on the overlay while the
    table says 0.003. Raises :class:`ValueError` for NaN or a value outside [0, 1].
    """
    value = float(value)
    if not -1e-6 <= value <= 1.0 + 1e-6:  # NaN fails too
        raise ValueError(f"a probability lies in [0, 1], got {value}")
    value = min(max(value, 0.0), 1.0)  # float32 softmax and interpolation may overshoot by an ulp
    return f"{value:.3f}" if value == 0.0 or value >= 0.0005 else f"{value:.2g}"


def font_size_for_scale(scale: float) -> int:
    """Pixel size giving text as large as ``cv2.FONT_HERSHEY_SIMPLEX`` at ``scale``."""
    return max(6, int(round(_PIXELS_PER_CV2_SCALE * scale)))


@functools.lru_cache(maxsize=64)
def _cached_font(path: str, size: int) -> ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype(path, size)
    except (OSError, ValueError) as error:  # Pillow says OSError for missing and unreadable files alike
        reason = "no such file" if not os.path.exists(path) else f"not a usable TrueType/OpenType font ({error})"
        raise FontError(f"cannot load font {path}: {reason}; give a .ttf or .otf font file") from None


def load_font(font: str | os.PathLike | None, size: int) -> ImageFont.FreeTypeFont:
    """The FreeType font at path ``font`` (default: the bundled DejaVu Sans) at ``size`` pixels, cached.

    Raises :class:`fcn_app.errors.FontError` when the file is missing or not a font.
    """
    if size < 1:
        raise ValueError(f"font size must be at least 1 pixel, got {size}")
    return _cached_font(os.fspath(DEFAULT_FONT if font is None else font), int(size))


def check_font(font: str | os.PathLike | None) -> None:
    """Raise :class:`fcn_app.errors.FontError` now if ``font`` cannot be used (before any work is done)."""
    load_font(font, 12)


def _one_line(text: str) -> str:
    # Class names come from user files; a stray tab or newline would otherwise start a second line.
    return "".join(" " if character.isspace() else character for character in text)


def text_size(text: str, size: int, font: str | os.PathLike | None = None) -> TextSize:
    """Width, ascent and descent in pixels of ``text`` drawn by :func:`draw_text` at ``size``."""
    face = load_font(font, size)
    text = _one_line(text)
    ascent, descent = face.getmetrics()
    if not text:
        return TextSize(0, ascent, descent)
    right = face.getbbox(text, anchor="ls")[2]
    return TextSize(max(int(right), int(math.ceil(face.getlength(text)))), ascent, descent)


def draw_text(
    image: np.ndarray,
    text: str,
    origin: tuple[int, int],
    size: int,
    colour: tuple[int, int, int],
    font: str | os.PathLike | None = None,
) -> np.ndarray:
    """A copy of ``image`` with anti-aliased ``text`` whose baseline starts at ``origin = (x, y)`` (as cv2).

    The glyph coverage blends ``colour`` over the image: ``(1 − a)·pixel + a·colour``. Text running off the
    image is clipped.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an H×W×3 uint8 RGB image, got shape {image.shape} dtype {image.dtype}")
    result = image.copy()
    ink_text(result, text, origin, size, colour, font)
    return result


def ink_text(
    image: np.ndarray,
    text: str,
    origin: tuple[int, int],
    size: int,
    colour: tuple[int, int, int],
    font: str | os.PathLike | None = None,
) -> None:
    """:func:`draw_text` into ``image`` itself (no copy of a photo-sized picture per line)."""
    result = image
    face = load_font(font, size)
    text = _one_line(text)
    if not text:
        return
    left, top, right, bottom = face.getbbox(text, anchor="ls")
    if right <= left or bottom <= top:
        return  # only spaces: nothing to ink
    coverage_image = Image.new("L", (right - left, bottom - top), 0)
    ImageDraw.Draw(coverage_image).text((-left, -top), text, fill=255, font=face, anchor="ls")
    coverage = np.asarray(coverage_image, dtype=np.float32) / 255.0
    x0, y0 = int(origin[0]) + left, int(origin[1]) + top
    height, width = result.shape[:2]
    clip_x0, clip_y0 = max(0, x0), max(0, y0)
    clip_x1, clip_y1 = min(width, x0 + coverage.shape[1]), min(height, y0 + coverage.shape[0])
    if clip_x0 >= clip_x1 or clip_y0 >= clip_y1:
        return
    alpha = coverage[clip_y0 - y0 : clip_y1 - y0, clip_x0 - x0 : clip_x1 - x0, None]
    region = result[clip_y0:clip_y1, clip_x0:clip_x1].astype(np.float32)
    blended = (1.0 - alpha) * region + alpha * np.asarray(colour, dtype=np.float32)
    result[clip_y0:clip_y1, clip_x0:clip_x1] = np.clip(np.rint(blended), 0, 255).astype(np.uint8)
