"""Exact tiling: the plan's invariants, and stitched score maps equal to untiled ones (second path: one pass)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from fcn_app.errors import OptionError
from fcn_app.geometry import network_geometry, output_grid_size
from fcn_app.models import FullyConvolutionalNet, build_classifier, to_fully_convolutional
from fcn_app.scoring import compute_score_map, compute_score_maps
from fcn_app.tiling import (
    activation_bytes,
    default_max_memory,
    format_bytes,
    parse_memory_size,
    plan_axis,
    plan_tiles,
)
from helpers import assert_close_scaled, random_rgb, tiny_classifier

POOLS = {"flatten": None, "adaptive-max": nn.AdaptiveMaxPool2d(2), "adaptive-avg": nn.AdaptiveAvgPool2d(2)}


def tiny_network(pool: str = "flatten"):
    return to_fully_convolutional(tiny_classifier(pool=POOLS[pool]), input_size=32)


def _meta_vgg16():
    """VGG16's converted layers without any weights (geometry and memory planning need only shapes)."""
    with torch.device("meta"):
        features = build_classifier("vgg16").features
        head = nn.Sequential(nn.Conv2d(512, 4096, 7), nn.ReLU(), nn.Conv2d(4096, 4096, 1), nn.ReLU(),
                             nn.Conv2d(4096, 1000, 1))
    return FullyConvolutionalNet(features, head, input_size=(224, 224), num_classes=1000)


@settings(max_examples=150, deadline=None)
@given(
    length=st.integers(1, 3000),
    stride=st.sampled_from([1, 2, 8, 16, 32]),
    field_strides=st.integers(1, 20),
    padding_fraction=st.floats(0.0, 0.49),
    cells_per_tile=st.integers(1, 12),
)
def test_axis_plan_covers_each_cell_once_with_its_whole_receptive_field(
    length, stride, field_strides, padding_fraction, cells_per_tile
):
    # a network with symmetric zero padding P: cell 0's receptive field starts at −P, the last one ends ≤ length−1+P
    field = stride * field_strides + 3
    padding = int(field * padding_fraction)
    first_center = (field - 1) / 2 - padding
    cells = max(0, (length + 2 * padding - field) // stride + 1)
    tiles = plan_axis(length, cells, stride, first_center, field, cells_per_tile)
    covered = [cell for tile in tiles for cell in range(tile.cell_start, tile.cell_stop)]
    assert covered == list(range(cells))
    for tile in tiles:
        assert tile.input_start % stride == 0 and tile.cell_offset * stride == tile.input_start
        assert 0 <= tile.input_start < tile.input_stop <= length
        assert tile.cell_stop - tile.cell_start <= cells_per_tile
        for cell in (tile.cell_start, tile.cell_stop - 1):
            low = first_center + stride * cell - (field - 1) / 2
            high = first_center + stride * cell + (field - 1) / 2
            assert tile.input_start == 0 or low >= tile.input_start
            assert tile.input_stop == length or high <= tile.input_stop - 1


@pytest.mark.parametrize(
    "pool, size",
    [pytest.param("flatten", (150, 203), marks=pytest.mark.slow),
     pytest.param("adaptive-max", (97, 180), marks=pytest.mark.slow),
     pytest.param("adaptive-avg", (130, 111), marks=pytest.mark.slow),
     ("flatten", (20, 300))],  # 20 rows: padded up to the window, tiled along the columns only
)
def test_tiled_score_map_equals_untiled(pool, size):
    network = tiny_network(pool)
    image = random_rgb(*size, seed=sum(size))
    untiled = compute_score_map(network, image, precision="fp32", max_memory=1 << 30)
    padded = (max(size[0], 32), max(size[1], 32))
    budget = activation_bytes(network, (64, 64))
    tiles = plan_tiles(network, padded, budget)
    assert tiles is not None and len(tiles) > 2
    tiled = compute_score_map(network, image, precision="fp32", max_memory=budget)
    assert tiled.geometry == untiled.geometry
    assert_close_scaled(tiled.logits, untiled.logits, rtol=1e-5)


def test_tiles_reach_only_what_their_cells_need():
    network = tiny_network()
    geometry = network_geometry(network)
    tiles = plan_tiles(network, (400, 400), activation_bytes(network, (96, 96)))
    grid = output_grid_size(network, (400, 400))
    assert {(tile.rows.cell_start, tile.cols.cell_start) for tile in tiles} >= {(0, 0)}
    assert sum((t.rows.cell_stop - t.rows.cell_start) * (t.cols.cell_stop - t.cols.cell_start) for t in tiles) \
        == grid[0] * grid[1]
    stride, field = geometry.stride[0], geometry.receptive_field[0]
    for tile in tiles:
        cells = tile.rows.cell_stop - tile.rows.cell_start
        # a run of cells needs its receptive fields plus at most one stride of alignment (two at the end)
        assert tile.input_size[0] <= (cells - 1) * stride + field + 2 * stride


def test_batch_that_exceeds_the_budget_is_scored_image_by_image():
    network = tiny_network()
    images = [random_rgb(120, 130, seed=seed) for seed in range(3)]
    one_pass = compute_score_maps(network, images, precision="fp32", max_memory=1 << 30)
    budget = activation_bytes(network, (120, 130), batch=2)
    seen = []
    piecewise = compute_score_maps(network, images, precision="fp32", max_memory=budget,
                                   progress=lambda done, total: seen.append((done, total)))
    assert seen and all(done <= total for done, total in seen)
    for expected, actual in zip(one_pass, piecewise):
        assert_close_scaled(actual.logits, expected.logits, rtol=1e-5)


def test_vgg16_plan_is_stride_aligned_with_receptive_field_halo():
    network = _meta_vgg16()
    geometry = network_geometry(network)
    assert geometry.stride == (32, 32) and geometry.receptive_field == (404, 404)
    size = (8000, 8000)
    budget = 1 << 30
    tiles = plan_tiles(network, size, budget)
    assert tiles is not None
    assert all(activation_bytes(network, tile.input_size) <= budget for tile in tiles)
    halo = math.ceil(404 / 2 / 32) * 32  # 224
    for tile in tiles:
        assert tile.rows.input_start % 32 == 0 and tile.cols.input_start % 32 == 0
        if tile.rows.cell_start > 0:  # first cell centre sits at least half a receptive field inside the tile
            assert 32 * tile.rows.cell_start + 111.5 - tile.rows.input_start >= 201.5
            assert 32 * tile.rows.cell_start + 111.5 - tile.rows.input_start < halo
    assert plan_tiles(network, (1024, 1024), budget) is None


def test_memory_sizes_parse_and_default_is_bounded():
    assert parse_memory_size("2G") == 2 << 30
    assert parse_memory_size("1.5GB") == int(1.5 * (1 << 30))
    assert parse_memory_size("512MiB") == 512 << 20
    assert parse_memory_size("4096") == 4096
    for bad in ("lots", "-1G", "0", "2X"):
        with pytest.raises(OptionError, match="memory size"):
            parse_memory_size(bad)
    assert 256 << 20 <= default_max_memory() <= 1 << 30
    assert format_bytes(3 << 30) == "3.0 GiB"
