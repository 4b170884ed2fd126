"""Rendering is pure: exact pixel values on tiny images, explicit colour order."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from fcn_app.errors import OptionError
from fcn_app.render import colorize, draw_legend, overlay, tile_panels


def test_colorize_returns_rgb_of_the_opencv_colormap():
    heat = np.array([[0.0, 1.0], [0.5, 2.0]], np.float32)  # 2.0 is clipped to 1
    rgb = colorize(heat, "jet")
    levels = np.array([[0, 255], [128, 255]], np.uint8)
    expected_bgr = cv2.applyColorMap(levels, cv2.COLORMAP_JET)
    np.testing.assert_array_equal(rgb, expected_bgr[:, :, ::-1])
    assert tuple(rgb[0, 0]) == (0, 0, 128)  # jet starts dark *blue*: blue is the last RGB channel


def test_overlay_blends_exactly():
    image = np.full((4, 4, 3), 100, np.uint8)
    heat = np.zeros((4, 4), np.float32)
    np.testing.assert_array_equal(overlay(image, heat, alpha=0.0), image)
    full = overlay(image, heat, colormap="jet", alpha=1.0)
    np.testing.assert_array_equal(full, colorize(heat, "jet"))
    half = overlay(image, heat, colormap="jet", alpha=0.5)
    np.testing.assert_array_equal(half[0, 0], [50, 50, 114])  # (100 + 0)/2, (100 + 0)/2, (100 + 128)/2


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((3, 4))), "does not match"),
        (lambda: overlay(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4)), alpha=1.5), "between 0 and 1"),
        (lambda: overlay(np.zeros((4, 4), np.uint8), np.zeros((4, 4))), "H×W×3"),
        (lambda: colorize(np.zeros((2, 2)), "rainbow-unicorn"), "unknown colormap"),
        (lambda: tile_panels([]), "at least one"),
    ],
)
def test_bad_arguments_are_refused(call, message):
    with pytest.raises((ValueError, OptionError), match=message):
        call()


def test_legend_and_tiles_keep_sizes():
    image = np.full((60, 80, 3), 200, np.uint8)
    legend = draw_legend(image, ["1. tabby cat  0.91"])
    assert legend.shape == image.shape and not np.array_equal(legend, image)
    np.testing.assert_array_equal(image, 200)  # input untouched
    grid = tile_panels([image, legend, image, image], gap=2)
    assert grid.shape == (2 * 60 + 2, 3 * 80 + 2 * 2, 3)
