"""Writing outputs so that nothing is ever half-written.

Every writer encodes the whole file in memory, writes it to a temporary file in the destination folder,
flushes it to disk and renames it into place (``os.replace`` is atomic on POSIX and Windows). A crash at any
moment leaves either the old file or the new one, never a truncated mix; a leftover ``.*.tmp`` file is the
only trace, and :func:`remove_stale_temporaries` cleans those up.
"""

from __future__ import annotations

import errno
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable

import numpy as np
from PIL import Image

from ..errors import OutputError

__all__ = [
    "TEMP_SUFFIX",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_write_image",
    "atomic_write_png",
    "atomic_write_stream",
    "atomic_write_npz",
    "DEFAULT_QUALITY",
    "PILLOW_FORMATS",
    "encode_image",
    "encode_png",
    "ensure_output_dir",
    "image_format_for",
    "remove_stale_temporaries",
    "temporary_target",
]

TEMP_SUFFIX = ".tmp"


def ensure_output_dir(directory: str | os.PathLike) -> Path:
    """Create ``directory`` (and parents); raise :class:`OutputError` with the reason if that is impossible."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise OutputError(f"{directory}: output path exists and is a file, not a folder; choose another",
                          option="out")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{directory}: cannot create output folder ({error.strerror or error})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputError(f"{directory}: output folder is not writable; choose another or fix permissions",
                          option="out")
    return directory


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_stream(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Let ``write(stream)`` fill a temporary file next to ``path``, then fsync and rename it into place.

    For outputs too large to build in memory first (a summary of millions of rows); everything else goes
    through :func:`atomic_write_bytes`.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{path}: output path is an existing folder; choose another name")
    temp_name = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        os.fchmod(handle, 0o666 & ~_current_umask())  # mkstemp creates 0600; outputs get normal permissions
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
        temp_name = None
    except OSError as error:
        if error.errno == errno.ENOSPC:
            reason = "no space left on device"
        elif error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            reason = "permission denied; choose another output folder or fix permissions"
        else:
            reason = error.strerror or str(error)
        raise OutputError(f"{path}: cannot write ({reason}); nothing was written") from None
    finally:
        if temp_name is not None:
            try:
                os.unlink(temp_name)
            except OSError:
                pass
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    return atomic_write_stream(path, lambda stream: stream.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, payload: Any) -> Path:
    return atomic_write_text(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


#: Pillow's format for each picture extension or option value (the option's choices: ``choices.IMAGE_FORMATS``).
PILLOW_FORMATS = {"png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "webp": "WEBP"}
#: JPEG/WebP quality unless the caller says otherwise: visually lossless for overlays, ~10× smaller than PNG.
DEFAULT_QUALITY = 90


def image_format_for(path: str | os.PathLike) -> str:
    """Output format named by the extension of ``path`` (``"png"``, ``"jpg"`` or ``"webp"``)."""
    extension = Path(path).suffix.lower().lstrip(".")
    if extension not in PILLOW_FORMATS:
        raise ValueError(f"{path}: cannot tell the image format from the extension; use .png, .jpg or .webp")
    return "jpg" if extension == "jpeg" else extension


def encode_image(
    image_rgb: np.ndarray,
    format: str = "png",
    *,
    icc_profile: bytes | None = None,
    quality: int = DEFAULT_QUALITY,
) -> bytes:
    """Encode an ``H×W×3`` (RGB order) or ``H×W`` uint8 array as PNG, JPEG or WebP bytes.

    ``icc_profile`` is embedded as is, so a viewer shows the pixels in the colour space of the photo they came
    from. No EXIF is written: the pixels are already upright, and an orientation tag would rotate them again.
    PNG uses the fastest zlib level (outputs are big and written often); ``quality`` applies to JPEG and WebP.
    """
    if image_rgb.dtype != np.uint8:
        raise ValueError(f"encode_image expects uint8 pixels, got {image_rgb.dtype}")
    name = format.lower()
    if name not in PILLOW_FORMATS:
        raise ValueError(f"unknown image format {format!r}; choose one of png, jpg, webp")
    if not 1 <= quality <= 100:
        raise ValueError(f"quality must be between 1 and 100, got {quality}")
    pillow_format = PILLOW_FORMATS[name]
    options: dict[str, Any] = {"compress_level": 1} if pillow_format == "PNG" else {"quality": quality}
    if icc_profile:
        options["icc_profile"] = icc_profile
    buffer = io.BytesIO()
    Image.fromarray(image_rgb).save(buffer, format=pillow_format, **options)
    return buffer.getvalue()


def encode_png(image_rgb: np.ndarray) -> bytes:
    """Encode an ``H×W×3`` (RGB order) or ``H×W`` uint8 array as PNG bytes."""
    return encode_image(image_rgb, "png")


def atomic_write_png(path: str | os.PathLike, image_rgb: np.ndarray) -> Path:
    """Write an RGB uint8 array as a PNG file, atomically."""
    return atomic_write_bytes(path, encode_png(image_rgb))


def atomic_write_image(
    path: str | os.PathLike,
    image_rgb: np.ndarray,
    *,
    format: str | None = None,
    icc_profile: bytes | None = None,
    quality: int = DEFAULT_QUALITY,
) -> Path:
    """Write an RGB uint8 array as PNG/JPEG/WebP (``format``, else from the extension of ``path``), atomically.

    See :func:`encode_image` for ``icc_profile`` and ``quality``. The whole file is encoded before anything
    is written, so an encoding error leaves no file behind.
    """
    return atomic_write_bytes(
        path, encode_image(image_rgb, format or image_format_for(path), icc_profile=icc_profile, quality=quality)
    )


def atomic_write_npz(path: str | os.PathLike, **arrays: Any) -> Path:
    """Write arrays as a compressed ``.npz`` file, atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def temporary_target(temp: Path) -> Path:
    """The final path a temporary file ``.<name>.<random>.tmp`` was going to be renamed to."""
    return temp.parent / temp.name[1:].rsplit(".", 2)[0]


def remove_stale_temporaries(directory: str | os.PathLike, targets: set[Path] | None = None) -> int:
    """Delete temporary files an interrupted run left below ``directory``; returns how many.

    With ``targets``, only temporaries of those final paths go (other writers sharing the folder keep theirs).
    """
    removed = 0
    for temp in Path(directory).rglob(f".*{TEMP_SUFFIX}"):
        if not temp.is_file() or (targets is not None and temporary_target(temp) not in targets):
            continue
        try:
            temp.unlink()
            removed += 1
        except OSError:
            pass
    return removed
