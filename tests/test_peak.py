"""The peak is a cell's centre: the reported peak pixel (table, JSON, the cross on the overlay) is the centre of the
hottest cell, clamped into the image — never the first pixel of the plateau beyond the outermost cell centres — and
the cross is drawn whole, clear of the legend.

Geometries here are deliberately awkward: non-square images, unequal strides per axis, centres between pixels and
outside the image.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from fcn_app.geometry import ScoreGeometry, upsample_to_pixels
from fcn_app.heatmaps import ClassHeatmap, ClassSelection, heatmap_for_class, peak_at_cell_centers
from fcn_app.metrics import pointing_game_hit
from fcn_app.render import (LEGEND_CORNERS, draw_legend, draw_legend_and_marker, draw_marker, legend_box,
                            marker_box, overlay)
from fcn_app.resolution import peak_on_pixels
from fcn_app.scoring import ScoreMap
from fcn_app.tasks import HeatmapOptions, HeatmapTask
from fcn_app.text import format_probability
from helpers_batch import tiny_fcn

#: A 90×170 image, 3×5 cells 30 px apart vertically and 37 px horizontally; row centres between pixels.
GEOMETRY = ScoreGeometry(grid=(3, 5), stride=(30.0, 37.0), first_center=(14.5, 10.0), window=(60.0, 74.0),
                         receptive_field=(90.0, 111.0))
SIZE = (90, 170)
EDGES_AND_CORNERS = [(0, 0), (0, 4), (2, 0), (2, 4), (1, 4), (0, 2), (2, 1)]


def _cells(hottest: tuple[int, int], grid=GEOMETRY.grid, seed: int = 0) -> torch.Tensor:
    cells = torch.rand(grid, generator=torch.Generator().manual_seed(seed)) * 0.5
    cells[hottest] = 0.9
    return cells


def _expected_pixel(geometry: ScoreGeometry, cell: tuple[int, int], size=SIZE) -> tuple[float, float]:
    center_x, center_y = geometry.cell_center(*cell)
    return float(np.clip(center_x, 0, size[1] - 1)), float(np.clip(center_y, 0, size[0] - 1))


def _assert_next_to(pixel: tuple[int, int], center: tuple[float, float]) -> None:
    assert abs(pixel[0] - center[0]) < 1 and abs(pixel[1] - center[1]) < 1, (pixel, center)


@pytest.mark.parametrize("hottest", EDGES_AND_CORNERS)
def test_an_edge_or_corner_cells_peak_is_its_centre_not_the_border(hottest):
    cells = _cells(hottest)
    heat = upsample_to_pixels(cells, GEOMETRY, SIZE).numpy()
    heatmap = ClassHeatmap.from_pixels(ClassSelection("a", (0,)), heat, [GEOMETRY], [cells])
    center = _expected_pixel(GEOMETRY, hottest)
    _assert_next_to(heatmap.peak_pixel, center)
    assert heatmap.peak_probability == pytest.approx(float(heat[heatmap.peak_pixel[1], heatmap.peak_pixel[0]]))
    assert heatmap.peak_probability == pytest.approx(float(heat.max()), abs=1e-6)  # the map's maximum, there
    assert peak_on_pixels(cells, GEOMETRY, SIZE) == (pytest.approx(heatmap.peak_probability, abs=1e-6),
                                                     heatmap.peak_pixel)
    # the first maximum in raster order sits on the plateau: at the border for a cell on the top or left edge
    first_y, first_x = divmod(int(np.argmax(heat)), SIZE[1])
    if hottest[0] == 0 or hottest[1] == 0:
        assert (first_x, first_y) != heatmap.peak_pixel and (first_x == 0 or first_y == 0)


def test_a_centre_between_pixels_is_reported_on_the_hotter_side():
    cells = _cells((1, 2))
    cells[2, 2] = 0.8  # the row below is hotter than the row above: of rows 44 and 45 (centre 44.5), 45
    heat = upsample_to_pixels(cells, GEOMETRY, SIZE).numpy()
    assert ClassHeatmap.from_pixels(ClassSelection("a", (0,)), heat, [GEOMETRY], [cells]).peak_pixel == (84, 45)


def test_a_centre_outside_the_image_is_clamped_into_it():
    geometry = ScoreGeometry(grid=(2, 4), stride=(64.0, 40.0), first_center=(-20.0, -7.5), window=(128.0, 80.0),
                             receptive_field=(150.0, 100.0))
    size = (60, 100)
    for hottest, expected in (((0, 0), (0, 0)), ((1, 3), (99, 44)), ((0, 3), (99, 0))):
        cells = _cells(hottest, grid=geometry.grid)
        heat = upsample_to_pixels(cells, geometry, size).numpy()
        peak = ClassHeatmap.from_pixels(ClassSelection("a", (0,)), heat, [geometry], [cells]).peak_pixel
        _assert_next_to(peak, _expected_pixel(geometry, hottest, size))
        assert peak == expected


def test_a_map_known_only_by_its_pixels_peaks_at_the_centre_it_is_hottest_at():
    """A saliency map resized from its feature grid (no cell values): the cell whose centre the map is highest at."""
    cells = _cells((2, 0))
    heat = upsample_to_pixels(cells, GEOMETRY, SIZE).numpy()
    value, pixel = peak_at_cell_centers(lambda rows, cols: heat[np.ix_(rows, cols)], [GEOMETRY], SIZE)
    _assert_next_to(pixel, _expected_pixel(GEOMETRY, (2, 0)))
    assert value == pytest.approx(float(heat.max()), abs=1e-6)
    with pytest.raises(ValueError, match="a peak is a cell's centre"):
        peak_at_cell_centers(lambda rows, cols: heat[np.ix_(rows, cols)], [], SIZE)


def test_a_pyramids_peak_is_the_hottest_cell_of_any_level():
    coarse = ScoreGeometry(grid=(2, 3), stride=(50.0, 70.0), first_center=(20.0, 15.0), window=(90.0, 120.0),
                           receptive_field=(90.0, 120.0))
    coarse_cells, fine_cells = torch.full((2, 3), 0.3), _cells((0, 4))
    heats = [upsample_to_pixels(cells, geometry, SIZE) for cells, geometry in
             ((coarse_cells, coarse), (fine_cells, GEOMETRY))]
    fused = torch.stack(heats).amax(dim=0).numpy()
    heatmap = ClassHeatmap.from_pixels(ClassSelection("a", (0,)), fused, [coarse, GEOMETRY], [coarse_cells, fine_cells])
    _assert_next_to(heatmap.peak_pixel, _expected_pixel(GEOMETRY, (0, 4)))


def test_the_pointing_game_points_with_the_reported_peak():
    cells = _cells((0, 0))
    heat = upsample_to_pixels(cells, GEOMETRY, SIZE).numpy()
    box_around_the_centre = [(5, 10, 10, 10)]  # x 5…14, y 10…19 around the centre (10, 14.5); (0, 0) is 11 px off
    assert pointing_game_hit(heat, box_around_the_centre, tolerance=5, cells=GEOMETRY)
    assert not pointing_game_hit(heat, box_around_the_centre, tolerance=5)  # the first maximum: pixel (0, 0)


@pytest.mark.parametrize("point", [(0, 0), (199, 119), (199, 0), (0, 119), (-30, 400), (100, 60), (3, 117)])
def test_the_cross_is_whole_inside_the_image_and_clear_of_the_legend(point):
    size = (120, 200)
    black = np.zeros((*size, 3), np.uint8)
    cross = np.any(draw_marker(black, point) != 0, axis=2)
    left, top, side, _ = marker_box(point, black.shape)
    thickness = max(1, side // 6)
    assert cross.sum() == 2 * side * thickness - thickness ** 2  # both bars whole: nothing cut by the border
    rows, cols = np.nonzero(cross)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (top, top + side - 1, left, left + side - 1)
    grey = np.full((*size, 3), 90, np.uint8)
    lines = ["1. tabby cat  0.91", "2. tiger cat  0.05"]
    drawn = draw_legend_and_marker(grey, lines, point)
    corner = next(option for option in LEGEND_CORNERS
                  if np.array_equal(drawn, draw_marker(draw_legend(grey, lines, corner=option), point)))
    x, y, width, height = legend_box(grey.shape, lines, corner=corner)
    assert not cross[y : y + height, x : x + width].any()  # no pixel of the cross under the legend
    assert (drawn[cross] == 255).all()
    if point == (0, 0):
        assert corner != "top-left"  # the legend moved away from the peak


def test_a_picture_smaller_than_the_cross_still_gets_one():
    for size in ((1, 1), (2, 3), (4, 9)):
        drawn = draw_legend_and_marker(np.zeros((*size, 3), np.uint8), ["1. a  0.50"], (size[1], size[0]))
        assert drawn.shape == (*size, 3)
        left, top, side, _ = marker_box((size[1], size[0]), drawn.shape)
        assert left >= 0 and top >= 0 and left + side <= size[1] and top + side <= size[0]


def test_table_json_and_cross_agree_on_an_edge_peak(tmp_path):
    """A hand-made score map (non-square picture, unequal strides) whose hottest cell is the top-left corner: the
    report's row, the JSON and the heatmap give its centre; the overlay has the cross there, whole, and the legend
    in another corner."""
    network = tiny_fcn()
    categories = list(network.categories)
    logits = torch.zeros(len(categories), *GEOMETRY.grid)
    logits[1] = _cells((0, 0)) * 8
    score_map = ScoreMap(logits, GEOMETRY, SIZE, categories)
    task = HeatmapTask(network, HeatmapOptions(classes=[categories[1]], write_json=True))
    picture = np.zeros((*SIZE, 3), np.uint8)
    rendered = task.render(picture, score_map, "edge.png")
    peak = rendered.heatmaps[0].peak_pixel
    _assert_next_to(peak, _expected_pixel(GEOMETRY, (0, 0)))
    assert peak == heatmap_for_class(score_map, ClassSelection(categories[1], (1,))).peak_pixel
    assert rendered.summary["classes"][0]["peak_pixel"] == {"x": peak[0], "y": peak[1]}
    assert json.loads(json.dumps(rendered.summary))["classes"][0]["peak_pixel"] == {"x": peak[0], "y": peak[1]}
    assert task.report(rendered).rows[0][3] == f"({peak[0]}, {peak[1]})"
    lines = [f"1. {categories[1]}  {format_probability(rendered.heatmaps[0].peak_probability)}"]
    blended = overlay(picture, rendered.heatmaps[0].heatmap)
    expected = draw_marker(draw_legend(blended, lines, corner="top-right"), peak)
    np.testing.assert_array_equal(rendered.overlay, expected)
    cross = np.any(draw_marker(picture, peak) != 0, axis=2)
    x, y, width, height = legend_box(picture.shape, lines, corner="top-right")
    assert not cross[y : y + height, x : x + width].any() and (rendered.overlay[cross] == 255).all()
