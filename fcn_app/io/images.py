"""Decoding images into RGB arrays, the way a photo viewer shows them.

- EXIF orientation is applied (a portrait photo stays portrait).
- Every mode becomes 8-bit RGB: gray and 1-bit are replicated, 16-bit is scaled (65535 → 255), CMYK and YCbCr
  are converted, palette images are expanded. Transparency (RGBA, LA, P with a transparent colour) is composited
  on **white**, so a transparent background does not become black.
- Animated GIFs and multi-page TIFFs: the first frame/page.
- No resizing unless ``max_side`` is given (then the longer side is reduced to it, keeping the aspect ratio).
- A decompression bomb (a header declaring more than ``max_pixels`` pixels) is refused before any pixel data
  is allocated.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import InputImageError, OptionError

__all__ = ["IMAGE_EXTENSIONS", "DEFAULT_MAX_PIXELS", "is_image_path", "load_image", "to_rgb_array"]

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
#: Refuse images with more pixels than this (about 17k × 17k) unless the caller raises the limit.
DEFAULT_MAX_PIXELS = 300_000_000


def is_image_path(path: str | os.PathLike) -> bool:
    """True when the file name has an image extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def to_rgb_array(image: Image.Image) -> np.ndarray:
    """Convert a decoded Pillow image of any mode to an ``H×W×3`` uint8 RGB array (see module docstring)."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or values.max(initial=0) > 255 else 255.0
        gray = np.clip(np.round(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.round(values * (255.0 if values.max(initial=0) <= 1.0 else 1.0)), 0, 255)
        return np.repeat(gray.astype(np.uint8)[:, :, None], 3, axis=2)
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or (mode == "P" and "transparency" in image.info)
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"), dtype=np.uint8).copy()
    return np.asarray(image.convert("RGB"), dtype=np.uint8).copy()


@contextlib.contextmanager
def _pillow_pixel_limit(max_pixels: int):
    previous = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = previous


def load_image(
    path: str | os.PathLike,
    *,
    max_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read ``path`` into an ``H×W×3`` uint8 RGB array, oriented as a viewer shows it.

    Raises :class:`InputImageError` with a one-line reason for anything that is not a readable image.
    """
    path = Path(path)
    if max_side is not None and max_side < 1:
        raise OptionError("max_side", f"must be a positive number of pixels, got {max_side}")
    if path.is_dir():
        raise InputImageError(f"{path}: is a directory, not an image file")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputImageError(f"{path}: no such file") from None
    except OSError as error:
        raise InputImageError(f"{path}: cannot be read ({error.strerror or error})") from None
    if size == 0:
        raise InputImageError(f"{path}: empty file (0 bytes), not an image")
    try:
        with warnings.catch_warnings():
            # Our own limit below replaces Pillow's global one, which would otherwise refuse at 179 MP.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _pillow_pixel_limit(max_pixels), Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise InputImageError(
                        f"{path}: declares {width}×{height} = {width * height:,} pixels, more than the limit of "
                        f"{max_pixels:,}; refusing to decode (raise the limit if the file is trusted)", option="max_pixels"
                    )
                if getattr(image, "n_frames", 1) > 1:
                    logger.debug("%s: %d frames, using the first", path, image.n_frames)
                    image.seek(0)
                if max_side is not None and max(width, height) > max_side and image.format == "JPEG":
                    # JPEG can decode at 1/2, 1/4, 1/8 scale directly: much less memory for huge photos.
                    image.draft("RGB", (max_side, max_side))
                image.load()
                image = ImageOps.exif_transpose(image) or image
                if max_side is not None and max(image.size) > max_side:
                    scale = max_side / max(image.size)
                    new_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
                    if image.mode not in ("RGB", "RGBA", "L", "LA"):
                        image = Image.fromarray(to_rgb_array(image))
                    image = image.resize(new_size, Image.Resampling.LANCZOS, reducing_gap=3.0)
                return to_rgb_array(image)
    except InputImageError:
        raise
    except Image.DecompressionBombError as error:
        raise InputImageError(
            f"{path}: declares more than {max_pixels:,} pixels, a possible decompression bomb; refusing to decode "
            f"(raise the limit if the file is trusted)", option="max_pixels"
        ) from None
    except UnidentifiedImageError:
        raise InputImageError(f"{path}: not a recognised image format (corrupt, or not an image)") from None
    except MemoryError:
        raise InputImageError(f"{path}: too large to decode in the available memory; downscale it while decoding",
                              option="max_side") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        reason = str(error).strip() or type(error).__name__
        if "truncated" in reason.lower() or isinstance(error, EOFError):
            reason = f"truncated or corrupt image data ({reason})"
        raise InputImageError(f"{path}: cannot decode: {reason}") from None
