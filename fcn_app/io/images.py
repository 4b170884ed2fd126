"""Decoding images into RGB arrays, the way a photo viewer shows them.

- EXIF orientation is applied (a portrait photo stays portrait).
- Every mode becomes 8-bit RGB: gray and 1-bit are replicated, 16-bit is scaled (65535 → 255), CMYK and YCbCr
  are converted, palette images are expanded. Transparency (RGBA, LA, P with a transparent colour) is composited
  on **white**, so a transparent background does not become black.
- Animated GIFs and multi-page TIFFs: the first frame/page.
- No resizing unless asked: :func:`load_image` with ``max_side`` reduces the longer side to it;
  :func:`decode_image` resizes to a *working size* for the network (JPEGs decoded at reduced scale when that
  allows) and says how the working pixels map onto the original ones, and returns the ICC colour profile.
- A decompression bomb (a header declaring more than ``max_pixels`` pixels) is refused before any pixel data
  is allocated.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import warnings
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from ..choices import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS
from ..errors import InputImageError, OptionError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "GLOB_CHARACTERS",
    "IMAGE_EXTENSIONS",
    "DecodeRequest",
    "DecodedImage",
    "InputImage",
    "check_image_path",
    "decode_image",
    "decode_input",
    "is_glob_pattern",
    "is_image_path",
    "load_image",
    "missing_path_reason",
    "start_decoding",
    "to_rgb_array",
    "working_size",
]

logger = logging.getLogger(__name__)

#: Characters that make an input a glob pattern (when no file has that name).
GLOB_CHARACTERS = frozenset("*?[")


def is_glob_pattern(text: str | os.PathLike) -> bool:
    """True when ``text`` contains a glob character (``*``, ``?`` or ``[``)."""
    return any(character in GLOB_CHARACTERS for character in str(text))


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


#: EXIF orientation → the transpose that shows the image upright (as :func:`PIL.ImageOps.exif_transpose` does).
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SWAPS_AXES = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class DecodedImage:
    """An image decoded at a working size, with what is needed to map results back to the original.

    Attributes:
        pixels: ``H×W×3`` uint8 RGB at the working size, upright (EXIF orientation applied).
        original_size: ``(height, width)`` of the whole upright image as stored in the file.
        decoded_size: ``(height, width)`` (upright) the codec produced before the final resize; smaller than
            ``original_size`` when a JPEG was decoded at 1/2, 1/4 or 1/8 scale.
        icc_profile: the embedded ICC colour profile (bytes) or ``None``; write it into outputs so viewers show
            the same colours as for the original.
    """

    pixels: np.ndarray
    original_size: tuple[int, int]
    decoded_size: tuple[int, int]
    icc_profile: bytes | None = None

    @property
    def scale(self) -> tuple[float, float]:
        """``(y, x)`` factors from original to working pixels (exact per axis; 1.0 at native size)."""
        return (self.pixels.shape[0] / self.original_size[0], self.pixels.shape[1] / self.original_size[1])


def working_size(size: tuple[int, int], longer_side: int) -> tuple[int, int]:
    """``(height, width)`` of an image of ``size`` resized so its longer side is ``longer_side`` (sides ≥ 1 px)."""
    height, width = size
    scale = longer_side / max(height, width)
    return (max(1, round(height * scale)), max(1, round(width * scale)))


def load_image(
    path: str | os.PathLike,
    *,
    max_side: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """Read ``path`` into an ``H×W×3`` uint8 RGB array, oriented as a viewer shows it.

    With ``max_side``, images whose longer side is larger are reduced to it (never enlarged).
    Raises :class:`InputImageError` with a one-line reason for anything that is not a readable image.
    """
    if max_side is not None and max_side < 1:
        raise OptionError("max_side", f"must be a positive number of pixels, got {max_side}")
    return decode_image(path, max_side, enlarge=False, max_pixels=max_pixels).pixels


def missing_path_reason(path: str | os.PathLike) -> str:
    """Why a missing input is missing, in the words a user looks for: ``no such file`` for an image file name,
    ``no such folder`` for a name that ends with a separator or has no image extension (``photos/``, ``photos``);
    and the first folder on the way that does not exist either, when one does not."""
    text = os.fspath(path)
    folder_like = text.endswith(("/", os.sep)) or not is_image_path(text)
    reason = "no such folder" if folder_like else "no such file"
    parent = Path(text.rstrip("/" + os.sep) or text).parent
    first_missing = None
    while str(parent) not in ("", ".") and not parent.exists():
        first_missing, parent = parent, parent.parent
    return f"{reason} ({first_missing} does not exist either)" if first_missing is not None else reason


def check_image_path(path: str | os.PathLike) -> Path:
    """``path`` if it names a non-empty file, else :class:`InputImageError` saying what it is instead.

    Cheap (no decoding): a command checks its input with it before loading a model.
    """
    given, path = path, Path(path)
    if path.is_dir():
        raise InputImageError(f"{path}: is a directory, not an image file")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise InputImageError(f"{path}: {missing_path_reason(given)}") from None
    except OSError as error:
        raise InputImageError(f"{path}: cannot be read ({error.strerror or error})") from None
    if size == 0:
        raise InputImageError(f"{path}: empty file (0 bytes), not an image")
    return path


def decode_image(
    path: str | os.PathLike,
    work_size: int | None = None,
    *,
    enlarge: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """Decode ``path`` with its longer side resized to ``work_size`` pixels (``None``: native size, no resizing).

    A JPEG is decoded directly at 1/2, 1/4 or 1/8 scale when that is still at least the working size (libjpeg's
    DCT scaling via :meth:`PIL.Image.Image.draft`: a fraction of the time and memory of a full decode); the
    result is then resized to exactly the working size with Pillow's antialiased LANCZOS filter. The resize
    reads the region the original image covers (``box``), so working pixel ``j`` covers original pixels
    ``[j·W/w, (j+1)·W/w)`` exactly even when a scaled JPEG has a partial last block: scale factors are
    ``working/original`` per axis (:attr:`DecodedImage.scale`). The resize happens before the EXIF rotation,
    in the file's own orientation (cheaper; the same filter, so the pixels differ from rotate-then-resize by
    rounding only).

    With ``enlarge=False`` images already within ``work_size`` keep their native size. Transparency is
    composited on white *before* resizing, so edges do not darken. Raises :class:`InputImageError` with a
    one-line reason for anything that is not a readable image, or that declares more than ``max_pixels``.
    """
    if work_size is not None and work_size < 1:
        raise OptionError("work_size", f"must be a positive number of pixels, got {work_size}")
    path = check_image_path(path)
    if _started:
        started = _take_started(path, work_size, enlarge, max_pixels)
        if started is not None:
            logger.debug("%s: decoded while the program started", path)
            return started
    return _decode_now(path, work_size, enlarge, max_pixels)


def _decode_now(path: Path, work_size: int | None, enlarge: bool, max_pixels: int) -> DecodedImage:
    try:
        with warnings.catch_warnings():
            # Our own limit below replaces Pillow's global one, which would otherwise refuse at 179 MP.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _pillow_pixel_limit(max_pixels), Image.open(path) as image:
                return _decode_open_image(path, image, work_size, enlarge, max_pixels)
    except InputImageError:
        raise
    except Image.DecompressionBombError:
        raise InputImageError(
            f"{path}: declares more than {max_pixels:,} pixels, a possible decompression bomb; refusing to decode "
            f"(raise the limit if the file is trusted)", option="max_pixels"
        ) from None
    except UnidentifiedImageError:
        raise InputImageError(f"{path}: not a recognised image format (corrupt, or not an image)") from None
    except FileNotFoundError:  # a listed input that is not there (a folder run reports it and goes on)
        raise InputImageError(f"{path}: {missing_path_reason(path)}") from None
    except MemoryError:
        raise InputImageError(f"{path}: too large to decode in the available memory; downscale it while decoding",
                              option="max_side") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        reason = str(error).strip() or type(error).__name__
        if "truncated" in reason.lower() or isinstance(error, EOFError):
            reason = f"truncated or corrupt image data ({reason})"
        raise InputImageError(f"{path}: cannot decode: {reason}") from None


#: Decodes begun ahead of need by :func:`start_decoding`, by file and arguments (see :func:`_started_key`).
_started: dict[tuple, Future] = {}
_started_lock = threading.Lock()


def _started_key(path: Path, work_size: int | None, enlarge: bool, max_pixels: int) -> tuple | None:
    """A decode's arguments and the file's identity (resolved path, size, modification time); ``None`` when the
    file cannot be looked at (the decode itself then says why)."""
    try:
        status = path.stat()
        return (str(path.resolve()), status.st_size, status.st_mtime_ns, work_size,
                enlarge and work_size is not None, max_pixels)
    except OSError:
        return None


def start_decoding(
    path: str | os.PathLike, work_size: int | None = None, *, enlarge: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> bool:
    """Begin ``decode_image(path, work_size, enlarge=…, max_pixels=…)`` in a background thread; the first call of
    :func:`decode_image` with the same arguments, on the file unchanged, takes that result (waiting for it if it
    is not done) instead of decoding again.

    For a decode that can overlap a slow start: the command line decodes the photo while ``import torch`` keeps
    one core busy and leaves the other idle (:mod:`fcn_app.startup`). Pillow decodes without holding the GIL.
    Errors are not raised here: the later call decodes again and raises its own one-line error. Returns whether
    a decode was started (not when the file cannot be looked at, or the same one is already under way).
    """
    path = Path(path)
    key = _started_key(path, work_size, enlarge, max_pixels)
    if key is None:
        return False
    result: Future = Future()
    with _started_lock:
        if key in _started:
            return False
        _started[key] = result

    def decode() -> None:
        try:
            result.set_result(_decode_now(path, work_size, enlarge, max_pixels))
        except Exception as error:  # kept for the consumer, which decodes again and reports its own way
            result.set_exception(error)

    threading.Thread(target=decode, name=f"decode {path.name}", daemon=True).start()
    return True


def _take_started(path: Path, work_size: int | None, enlarge: bool, max_pixels: int) -> DecodedImage | None:
    """The result of a decode :func:`start_decoding` began that serves these arguments — one begun with them, or a
    full-size one when the image is within ``work_size`` and not to be enlarged (the same decode) — removed from
    the table; ``None`` when there is none, or it failed."""
    for start_size in dict.fromkeys((work_size, None)):
        key = _started_key(path, start_size, enlarge, max_pixels)
        with _started_lock:
            started = _started.get(key) if key is not None else None
        if started is None:
            continue
        if started.exception() is not None:  # (waits for the decode to end) failed: decoded again, and reported
            with _started_lock:
                _started.pop(key, None)
            continue
        decoded = started.result()
        if start_size is None and work_size is not None and (enlarge or max(decoded.original_size) > work_size):
            continue  # the full-size pixels are not what was asked; a later full-size decode may take them
        with _started_lock:
            if _started.get(key) is not started:  # another thread took it meanwhile
                continue
            del _started[key]
        return decoded
    return None


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # a broken EXIF block must not make the image unreadable; viewers ignore it too
        return 1
    return value if isinstance(value, int) and value in _ORIENTATION_TRANSPOSE else 1


def _decode_open_image(
    path: Path, image: Image.Image, work_size: int | None, enlarge: bool, max_pixels: int
) -> DecodedImage:
    width, height = image.size
    if width * height > max_pixels:
        raise InputImageError(
            f"{path}: declares {width}×{height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,}; refusing to decode (raise the limit if the file is trusted)", option="max_pixels"
        )
    if getattr(image, "n_frames", 1) > 1:
        logger.debug("%s: %d frames, using the first", path, image.n_frames)
        image.seek(0)
    icc_profile = image.info.get("icc_profile") or None
    orientation = _orientation(image)
    swap = orientation in _SWAPS_AXES
    original_size = (width, height) if swap else (height, width)  # upright (height, width)

    target = None  # (width, height) in the file's own orientation
    if work_size is not None and (enlarge or max(width, height) > work_size):
        upright = working_size(original_size, work_size)
        target = (upright[0], upright[1]) if swap else (upright[1], upright[0])
        if target == (width, height):
            target = None
    box = None
    if target is not None and image.format == "JPEG" and target[0] < width and target[1] < height:
        drafted = image.draft("RGB", target)  # picks the largest reduction that stays ≥ target on both axes
        if drafted is not None:
            box = drafted[1]
    image.load()
    decoded = image.size
    decoded_size = (decoded[0], decoded[1]) if swap else (decoded[1], decoded[0])
    if target is None:
        rgb = to_rgb_array(image)
    else:
        # Composite transparency / convert modes first: resizing premultiplied or 16-bit data is not what we want.
        source = image if image.mode == "RGB" else Image.fromarray(to_rgb_array(image))
        rgb = np.asarray(source.resize(target, Image.Resampling.LANCZOS, box=box))
    if orientation in _ORIENTATION_TRANSPOSE:
        rgb = np.asarray(Image.fromarray(rgb).transpose(_ORIENTATION_TRANSPOSE[orientation]))
    if not rgb.flags.writeable:
        rgb = rgb.copy()
    return DecodedImage(rgb, original_size, decoded_size, icc_profile)


@dataclass(frozen=True)
class DecodeRequest:
    """How an input is decoded for a task: the *picture* the outputs are drawn on and refer to, and the copy the
    network sees. Small and picklable: decode worker processes get this, never the task and its model.

    Attributes:
        max_side: the picture's longer side is reduced to this (never enlarged); ``None``: as stored.
        max_pixels: refuse files declaring more pixels (decompression bombs).
        work_size: longer side of the network's copy, decoded from the file directly (JPEG draft);
            ``None``: the network sees the picture itself.
        enlarge: whether a picture smaller than ``work_size`` is enlarged to it (else the network sees it as is).
    """

    max_side: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    work_size: int | None = None
    enlarge: bool = False

    @property
    def network_side(self) -> int | None:
        """Longer side of the network's copy (``None``: as stored), with ``max_side`` applied unless enlarging."""
        if self.work_size is None:
            return self.max_side
        if self.max_side is not None and not self.enlarge:
            return min(self.work_size, self.max_side)
        return self.work_size


@dataclass(frozen=True)
class InputImage:
    """One input decoded for a task (:func:`decode_input`): the network's pixels now, the picture when drawn.

    Attributes:
        path: the file.
        network_pixels: ``H×W×3`` uint8 RGB at the working size, upright.
        picture_size: ``(height, width)`` of the picture outputs refer to (the upright image after ``max_side``).
        icc_profile: the file's ICC colour profile (bytes) or ``None``; outputs embed it.
        request: how it was decoded (to decode the picture the same way).
    """

    path: Path
    network_pixels: np.ndarray
    picture_size: tuple[int, int]
    icc_profile: bytes | None
    request: DecodeRequest

    @property
    def is_resized(self) -> bool:
        """Whether the network sees other pixels than the picture's (then :meth:`picture` decodes the file again)."""
        return tuple(self.network_pixels.shape[:2]) != tuple(self.picture_size)

    def picture(self) -> np.ndarray:
        """The picture's pixels: the network's own when they are the same size (the same decode), else the file
        decoded again at ``max_side`` — only a task that draws calls this."""
        if not self.is_resized:
            return self.network_pixels
        return decode_image(self.path, self.request.max_side, enlarge=False, max_pixels=self.request.max_pixels).pixels


def decode_input(path: str | os.PathLike, request: DecodeRequest = DecodeRequest()) -> InputImage:
    """Decode ``path`` for the network as ``request`` says (see :class:`DecodeRequest`); raises
    :class:`InputImageError` with a one-line reason for anything that is not a readable image."""
    decoded = decode_image(path, request.network_side, enlarge=request.enlarge and request.work_size is not None,
                           max_pixels=request.max_pixels)
    picture_size = decoded.original_size
    if request.max_side is not None and max(picture_size) > request.max_side:
        picture_size = working_size(picture_size, request.max_side)
    return InputImage(Path(path), decoded.pixels, picture_size, decoded.icc_profile, request)
