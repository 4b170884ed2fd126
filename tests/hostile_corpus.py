"""A generated corpus of hostile inputs (nothing binary is committed): each case knows what should happen."""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Case:
    name: str  # file name inside the corpus folder
    ok: bool  # processed normally (True) or refused with one line (False)
    message: str = ""  # regular expression the one-line error must contain
    shape: tuple[int, int] | None = None  # (height, width) of the output when ok and not the file's own size


def _photo(height: int, width: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = np.linspace(0, 255, width, dtype=np.float32)[None, :, None] * np.ones((height, 1, 3), np.float32)
    noise = rng.normal(0, 20, (height, width, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _png_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kwargs)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A valid-looking PNG header declaring ``width × height`` pixels, with a tiny body."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", body) + _chunk(b"IEND", b"")


def build_corpus(folder: Path) -> list[Case]:
    """Write every hostile input into ``folder`` and return the cases."""
    folder.mkdir(parents=True, exist_ok=True)
    cases: list[Case] = []

    def add(name: str, data: bytes | Image.Image, ok: bool, message: str = "", shape=None, **save) -> None:
        path = folder / name
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            data.save(path, **save)
        cases.append(Case(name, ok, message, shape))

    photo = _photo(240, 260)
    jpeg = io.BytesIO()
    photo.save(jpeg, format="JPEG", quality=90)
    png = _png_bytes(photo)

    # --- refused, one line each
    add("empty.jpg", b"", False, "empty file")
    add("truncated.jpg", jpeg.getvalue()[: len(jpeg.getvalue()) // 3], False, "cannot decode")
    add("truncated.png", png[: len(png) // 3], False, "cannot decode")
    add("random-bytes.jpg", np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes(), False,
        "not a recognised image")
    add("text.png", b"this is a text file, not a picture\n" * 20, False, "not a recognised image")
    add("bomb.png", bomb_png(), False, "refusing to decode")
    add("header-only.png", png[:33], False, "cannot decode|not a recognised image")
    corrupt = bytearray(png)
    corrupt[40:80] = b"\xff" * 40  # garbage inside the first IDAT: CRC and zlib stream break
    add("corrupt-crc.png", bytes(corrupt), False, "cannot decode|not a recognised image")
    add("html.jpg", b"<!DOCTYPE html><html><body>404 Not Found</body></html>", False, "not a recognised image")

    # --- odd but valid: processed, output the size a viewer shows
    add("cmyk.jpg", photo.convert("CMYK"), True, format="JPEG")
    add("gray16.png", Image.fromarray((np.asarray(photo.convert("L"), np.uint16) * 257)), True)
    add("gray-alpha.png", Image.merge("LA", (photo.convert("L"), photo.convert("L"))), True)
    palette = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    add("palette-transparent.png", palette, True, transparency=0)
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    add("rgba.png", rgba, True)
    add("one-bit.png", photo.convert("1"), True)
    add("one-pixel.png", Image.new("RGB", (1, 1), (200, 10, 10)), True)
    add("strip-1x50000.png", Image.new("L", (50_000, 1), 128), True)
    rotated = _photo(120, 260)
    exif = rotated.getexif()
    exif[0x0112] = 6
    add("exif-rotated.jpg", rotated, True, shape=(260, 120), exif=exif, quality=90)
    frames = [_photo(100, 120, seed) for seed in range(3)]
    add("animated.gif", frames[0], True, save_all=True, append_images=frames[1:], duration=100)
    add("multipage.tif", frames[0], True, save_all=True, append_images=frames[1:])
    add("jpeg-named.png", jpeg.getvalue(), True)
    add("café ☕ photo.png", photo, True)
    add("with space.webp", photo, True, format="WEBP")
    add("bitmap.BMP", photo, True, format="BMP")
    add("float.tif", Image.fromarray(np.asarray(photo.convert("L"), np.float32) / 255.0), True)
    return cases
