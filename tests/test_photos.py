"""Photos as people have them: decoding at a working size (JPEG draft), EXIF orientation, ICC profiles, overlays
at the original size, score geometry mapped back to original pixels, and the image writers."""

from __future__ import annotations

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

from fcn_app.errors import OutputError
from fcn_app.geometry import ScoreGeometry, network_geometry, upsample_to_pixels
from fcn_app.heatmaps import ClassHeatmap, ClassSelection, class_heatmaps
from fcn_app.io import atomic_write_image, decode_image, encode_image, image_format_for, load_image, working_size
from fcn_app.models import to_fully_convolutional
from fcn_app.tasks import HeatmapOptions, HeatmapTask
from fcn_app.render import COLORMAPS, colorize, overlay
from fcn_app.resolution import default_work_size, peak_on_pixels, score_map_on_original
from fcn_app.scoring import ScoreMap, compute_score_map
from helpers import tiny_classifier

SRGB_PROFILE = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def photo_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth gradients plus a few flat shapes and mild noise: compresses like a photo, asymmetric on purpose."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([255 * x / width, 255 * y / height, 128 + 60 * np.sin(x / 37.0 + y / 53.0)], axis=-1)
    image[: height // 3, : width // 4] = (250, 20, 20)  # a red block in the top-left corner only
    image += rng.normal(0, 4, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def save(path, pixels: np.ndarray, *, orientation: int | None = None, icc: bytes | None = None, **options):
    image = Image.fromarray(pixels)
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        options["exif"] = exif.tobytes()
    if icc is not None:
        options["icc_profile"] = icc
    image.save(path, **options)
    return path


def mean_abs_difference(first: np.ndarray, second: np.ndarray) -> float:
    return float(np.abs(first.astype(np.float64) - second.astype(np.float64)).mean())


# --- decoding ------------------------------------------------------------------------------------------------


def test_big_jpeg_is_decoded_at_reduced_scale_then_resized_exactly(tmp_path):
    path = save(tmp_path / "big.jpg", photo_like(1200, 1600), quality=92)
    decoded = decode_image(path, 300)
    # 1600×1200 → 300×225 allows a 1/4 draft (400×300 ≥ target on both axes), not 1/8 (200×150 < target).
    assert decoded.decoded_size == (300, 400)
    assert decoded.pixels.shape == (225, 300, 3)
    assert decoded.original_size == (1200, 1600)
    assert decoded.scale == (225 / 1200, 300 / 1600)
    # Independent second path: full decode, then one LANCZOS resize. DCT scaling is not bit-equal, but close.
    with Image.open(path) as image:
        reference = np.asarray(image.convert("RGB").resize((300, 225), Image.Resampling.LANCZOS))
    assert mean_abs_difference(decoded.pixels, reference) < 2.0


def test_draft_box_keeps_geometry_exact_when_sides_are_not_multiples_of_the_block(tmp_path):
    # 1201 = 8·150 + 1: the 1/8 draft is 151 px wide and its last column holds 1 original pixel. Stretching all
    # 151 columns over the working width would move the right part ~0.8 working px; the resize box must not.
    pixels = np.zeros((801, 1201, 3), np.uint8)
    pixels[:, 1161:] = 255  # a white band at the right edge; its left edge is at edge coordinate 1161
    path = save(tmp_path / "odd.jpg", pixels, quality=95)
    decoded = decode_image(path, 150)
    assert decoded.decoded_size == (101, 151)  # the 1/8 draft was used
    row = decoded.pixels[50, :, 0].astype(np.float64)
    expected = 1161 * 150 / 1201  # the same edge in working edge coordinates
    measured = float(np.interp(127.5, row, np.arange(row.size))) + 0.5  # half-intensity crossing, as an edge
    assert abs(measured - expected) < 0.3, (measured, expected)


def test_png_has_no_draft_and_native_decode_equals_load_image(tmp_path):
    path = save(tmp_path / "photo.png", photo_like(120, 160))
    decoded = decode_image(path, 80)
    assert decoded.decoded_size == (120, 160)
    assert decoded.pixels.shape == (60, 80, 3)
    native = decode_image(path)
    assert native.pixels.shape == (120, 160, 3) and native.decoded_size == native.original_size
    np.testing.assert_array_equal(native.pixels, load_image(path))
    np.testing.assert_array_equal(native.pixels, photo_like(120, 160))


def test_working_size_enlarges_unless_told_not_to(tmp_path):
    path = save(tmp_path / "small.png", photo_like(30, 40))
    assert decode_image(path, 80).pixels.shape == (60, 80, 3)
    assert decode_image(path, 80, enlarge=False).pixels.shape == (30, 40, 3)
    assert working_size((3024, 4032), 896) == (672, 896)
    assert working_size((47, 100), 20) == (9, 20)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_at_native_and_working_size(tmp_path, orientation):
    stored = photo_like(120, 160)
    path = save(tmp_path / f"o{orientation}.jpg", stored, orientation=orientation, quality=95)
    with Image.open(path) as image:
        upright = ImageOps.exif_transpose(image).convert("RGB")
    native = decode_image(path)
    np.testing.assert_array_equal(native.pixels, np.asarray(upright))
    decoded = decode_image(path, 40)
    height, width = working_size((upright.height, upright.width), 40)
    assert decoded.pixels.shape == (height, width, 3)
    assert decoded.original_size == (upright.height, upright.width)
    reference = np.asarray(upright.resize((width, height), Image.Resampling.LANCZOS))
    assert mean_abs_difference(decoded.pixels, reference) < 3.0  # a wrong rotation differs by ~100 levels


def test_icc_profile_is_returned_and_written_back(tmp_path):
    path = save(tmp_path / "tagged.jpg", photo_like(64, 96), icc=SRGB_PROFILE, quality=90)
    decoded = decode_image(path, 48)
    assert decoded.icc_profile == SRGB_PROFILE
    assert decode_image(save(tmp_path / "plain.png", photo_like(8, 8))).icc_profile is None
    for extension in ("png", "jpg", "webp"):
        out = atomic_write_image(tmp_path / f"out.{extension}", decoded.pixels, icc_profile=decoded.icc_profile)
        with Image.open(out) as written:
            assert written.format == {"png": "PNG", "jpg": "JPEG", "webp": "WEBP"}[extension]
            assert written.info.get("icc_profile") == SRGB_PROFILE
            assert written.size == (48, 32)
            assert 0x0112 not in written.getexif()  # pixels are upright already: no orientation tag


# --- encoding ------------------------------------------------------------------------------------------------


def test_format_from_extension_or_option(tmp_path):
    pixels = photo_like(16, 24)
    assert image_format_for("a.JPEG") == "jpg" and image_format_for("b.webp") == "webp"
    out = atomic_write_image(tmp_path / "overlay.bin", pixels, format="jpg", quality=80)
    assert out.read_bytes()[:2] == b"\xff\xd8"
    with pytest.raises(ValueError, match=r"\.png, \.jpg or \.webp"):
        atomic_write_image(tmp_path / "overlay.bmp", pixels)
    with pytest.raises(ValueError, match="png, jpg, webp"):
        encode_image(pixels, "gif")
    with Image.open(io.BytesIO(encode_image(pixels, "png"))) as decoded:
        np.testing.assert_array_equal(np.asarray(decoded), pixels)  # PNG stays lossless


def test_failed_write_leaves_neither_file_nor_temporary(tmp_path, monkeypatch):
    pixels = photo_like(16, 24)
    with pytest.raises(ValueError):
        atomic_write_image(tmp_path / "bad.jpg", pixels.astype(np.float32))
    assert list(tmp_path.iterdir()) == []

    def refuse(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OutputError, match="no space left"):
        atomic_write_image(tmp_path / "full.jpg", pixels)
    assert list(tmp_path.iterdir()) == []


def test_fast_overlay_is_bit_identical_to_the_float32_formula():
    values = np.repeat(np.arange(256, dtype=np.uint8), 256).reshape(256, 256)
    image = np.stack([values, values.T, 255 - values], axis=-1)
    heat = values.T.astype(np.float32) / 255.0
    for colormap in COLORMAPS:
        colours = colorize(heat, colormap).astype(np.float32)
        for alpha in (0.0, 0.3, 1 / 3, 0.5, 0.65, 0.97, 1.0):
            expected = np.clip(np.rint((1.0 - alpha) * image.astype(np.float32) + alpha * colours), 0, 255)
            np.testing.assert_array_equal(overlay(image, heat, colormap=colormap, alpha=alpha), expected)


# --- geometry of scaled maps ------------------------------------------------------------------------------


def expected_original_pixel(working_center: float, factor: float) -> int:
    """Original pixel containing the middle of the original span that working pixel ``working_center`` covers.

    Working pixel ``k`` covers the original edge interval ``[k/f, (k+1)/f)``; a point at centre coordinate
    ``c`` (pixel centres at integers) is at edge coordinate ``c + 0.5``.
    """
    return int(np.floor((working_center + 0.5) / factor))


@pytest.mark.parametrize("factor", [(1 / 3, 1 / 5), (3 / 7, 9 / 47), (1 / 5, 1 / 3)])
def test_one_hot_cell_lands_on_the_original_pixel(factor):
    working = ScoreGeometry(grid=(5, 6), stride=(4.0, 4.0), first_center=(2.0, 3.0), window=(8.0, 8.0),
                            receptive_field=(12.0, 12.0))
    original_size = (int(round(30 / factor[0])), int(round(30 / factor[1])))
    geometry = working.scaled(factor)
    for row, col in [(1, 1), (2, 3), (3, 4)]:  # interior cells: beyond the outer centres the map is flat
        cells = torch.zeros(working.grid)
        cells[row, col] = 1.0
        pixels = upsample_to_pixels(cells, geometry, original_size).numpy()
        peak_y, peak_x = np.unravel_index(np.argmax(pixels), pixels.shape)
        center_y, center_x = working.cell_center(row, col)[::-1]
        assert (peak_y, peak_x) == (expected_original_pixel(center_y, factor[0]),
                                    expected_original_pixel(center_x, factor[1]))
        # the pixel holding the point is the closest one: nearly the full value lands there
        assert pixels[peak_y, peak_x] > 1 - max(factor)


def test_bright_spot_through_decode_and_geometry_lands_on_its_original_pixels(tmp_path):
    # A 1×1 "network" whose score is the red channel: the heat peak must fall on the spot in the original image.
    original = np.zeros((105, 150, 3), np.uint8)
    original[60:63, 90:93] = 255  # original pixels 60–62 × 90–92: exactly working pixel (20, 30) at 1/3 scale
    decoded = decode_image(save(tmp_path / "spot.png", original), 50)
    assert decoded.scale == (35 / 105, 50 / 150)
    probe = torch.nn.Sequential(torch.nn.Conv2d(3, 1, 1))
    geometry = ScoreGeometry.for_network(network_geometry(probe), decoded.pixels.shape[:2], (1, 1))
    score_map = ScoreMap(torch.from_numpy(decoded.pixels[..., 0].astype(np.float32))[None], geometry,
                         decoded.pixels.shape[:2], ["red"])
    on_original = score_map_on_original(score_map, decoded.original_size)
    assert on_original.image_size == (105, 150)
    heat = upsample_to_pixels(on_original.logits[0], on_original.geometry, on_original.image_size).numpy()
    assert np.unravel_index(np.argmax(heat), heat.shape) == (61, 91)


@pytest.mark.parametrize("seed", range(4))
def test_peak_without_the_full_map_equals_the_full_maps_peak(seed):
    """The fast path finds the same peak as the full map — the hottest cell's centre clamped into the image, not the
    first pixel of the plateau beyond the outermost centres — and the map's value there."""
    generator = torch.Generator().manual_seed(seed)
    grid = (int(torch.randint(1, 9, (1,), generator=generator)), int(torch.randint(1, 9, (1,), generator=generator)))
    working = ScoreGeometry(grid=grid, stride=(32.0, 32.0), first_center=(111.5, 111.5), window=(224.0, 224.0),
                            receptive_field=(404.0, 404.0))
    geometry = working.scaled((0.2217, 0.2231))
    size = (int(torch.randint(300, 1200, (1,), generator=generator)), 1400)
    cells = torch.rand(grid, generator=generator)
    full = upsample_to_pixels(cells, geometry, size).numpy()
    value, (x, y) = peak_on_pixels(cells, geometry, size)
    assert ClassHeatmap.from_pixels(ClassSelection("a", (0,)), full, [geometry], [cells]).peak_pixel == (x, y)
    assert value == pytest.approx(float(full[y, x]), abs=1e-6)
    row, col = np.unravel_index(int(torch.argmax(cells)), grid)
    center_x, center_y = geometry.cell_center(row, col)
    assert abs(x - np.clip(center_x, 0, size[1] - 1)) < 1 and abs(y - np.clip(center_y, 0, size[0] - 1)) < 1


# --- end to end: working size in, original size out ---------------------------------------------------------


def test_overlay_and_heatmaps_have_the_original_size(tmp_path):
    path = save(tmp_path / "photo.jpg", photo_like(300, 420), orientation=6, icc=SRGB_PROFILE, quality=90)
    network = to_fully_convolutional(tiny_classifier(num_classes=4), input_size=32,
                                     categories=["a", "b", "c", "d"])
    work_size = default_work_size(network.input_size)
    decoded = decode_image(path, work_size)
    score_map = score_map_on_original(compute_score_map(network, decoded.pixels, precision="fp32"),
                                      decoded.original_size)
    full = decode_image(path)
    assert full.pixels.shape[:2] == decoded.original_size == (420, 300)
    heatmaps = class_heatmaps(score_map, topk=2)
    assert all(heatmap.heatmap.shape == (420, 300) for heatmap in heatmaps)
    rendered = HeatmapTask(None, HeatmapOptions(topk=2)).render(full.pixels, score_map, None)
    assert rendered.overlay.shape == (420, 300, 3)
    out = atomic_write_image(tmp_path / "photo.heatmap.jpg", rendered.overlay, icc_profile=decoded.icc_profile)
    with Image.open(out) as written:
        assert written.size == (300, 420) and written.info.get("icc_profile") == SRGB_PROFILE
