"""Decoding: every mode to RGB, EXIF orientation, and one clear error per bad file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fcn_app.errors import InputImageError
from fcn_app.io import is_image_path, load_image


def _save(tmp_path, name, image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


def test_rgb_png_round_trips_exactly(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    loaded = load_image(_save(tmp_path, "a.png", Image.fromarray(pixels)))
    np.testing.assert_array_equal(loaded, pixels)


def test_gray_and_one_bit_are_replicated(tmp_path):
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    loaded = load_image(_save(tmp_path, "g.png", Image.fromarray(gray, "L")))
    np.testing.assert_array_equal(loaded, np.repeat(gray[:, :, None], 3, axis=2))
    bits = Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1")
    np.testing.assert_array_equal(load_image(_save(tmp_path, "b.png", bits))[:, :, 0], [[0, 255], [255, 0]])


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (255, 0, 0, 0)  # fully transparent → white
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black → mid gray
    loaded = load_image(_save(tmp_path, "t.png", Image.fromarray(rgba, "RGBA")))
    assert tuple(loaded[0, 0]) == (255, 0, 0)
    assert tuple(loaded[0, 1]) == (255, 255, 255)
    assert all(abs(int(value) - 127) <= 1 for value in loaded[1, 0])


def test_palette_with_transparency_and_la(tmp_path):
    palette = Image.new("P", (3, 3), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.info["transparency"] = 0
    palette.putpixel((0, 0), 0)
    loaded = load_image(_save(tmp_path, "p.png", palette, transparency=0))
    assert tuple(loaded[0, 0]) == (255, 255, 255) and tuple(loaded[1, 1]) == (0, 255, 0)
    la = Image.fromarray(np.full((2, 2, 2), (40, 0), np.uint8), "LA")
    assert tuple(load_image(_save(tmp_path, "la.png", la))[0, 0]) == (255, 255, 255)


def test_sixteen_bit_is_scaled(tmp_path):
    values = np.array([[0, 65535], [32896, 257]], dtype=np.uint16)
    loaded = load_image(_save(tmp_path, "d.png", Image.fromarray(values)))
    np.testing.assert_array_equal(loaded[:, :, 0], [[0, 255], [128, 1]])


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red in CMYK
    loaded = load_image(_save(tmp_path, "c.jpg", cmyk))
    assert loaded.shape == (8, 8, 3) and loaded[..., 0].mean() > 200 and loaded[..., 1].mean() < 60


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :10] = 255  # left half white
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise when shown
    loaded = load_image(_save(tmp_path, "r.jpg", image, exif=exif, quality=100))
    assert loaded.shape == (20, 10, 3)  # portrait, as a viewer shows it
    assert loaded[:10].mean() > 200 and loaded[10:].mean() < 50  # white half now on top


def test_animated_gif_uses_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert load_image(path)[0, 0, 0] > 200


def test_max_side_downscales_keeping_aspect(tmp_path):
    path = _save(tmp_path, "big.png", Image.new("RGB", (400, 100), (10, 20, 30)))
    assert load_image(path, max_side=100).shape == (25, 100, 3)
    assert load_image(path).shape == (100, 400, 3)  # no resizing by default


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"hello, not an image"), "not a recognised image"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
)
def test_bad_files_raise_one_line_errors(tmp_path, make, message):
    path = tmp_path / "bad.jpg"
    make(path)
    with pytest.raises(InputImageError, match=message) as info:
        load_image(path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_truncated_and_missing_files(tmp_path):
    full = _save(tmp_path, "full.png", Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)))
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(full.read_bytes()[: 200])
    with pytest.raises(InputImageError, match="cannot decode"):
        load_image(truncated)
    with pytest.raises(InputImageError, match="no such file"):
        load_image(tmp_path / "missing.png")


def test_decompression_bomb_is_refused_before_decoding(tmp_path):
    path = _save(tmp_path, "bomb.png", Image.new("L", (3000, 3000)))
    with pytest.raises(InputImageError, match="refusing to decode|decompression bomb"):
        load_image(path, max_pixels=1_000_000)


def test_image_extensions_are_case_insensitive():
    assert is_image_path("A.JPG") and is_image_path("b.TiFf") and not is_image_path("notes.txt")
