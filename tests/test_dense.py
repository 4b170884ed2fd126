"""Denser score maps by filter rarefaction: exact on the coarse lattice, pixel-aligned in between, any classifier."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fcn_app.dense import densify, native_stride, stride_choices
from fcn_app.errors import ConversionError
from fcn_app.geometry import ScoreGeometry, network_geometry, output_grid_size
from fcn_app.models import SUPPORTED_ARCHS, build_classifier, to_fully_convolutional

from helpers import assert_close_scaled, tiny_classifier


def centres(geometry, axis: int) -> np.ndarray:
    """Pixel positions of the cell centres along ``axis`` (0 = rows/y, 1 = columns/x)."""
    return geometry.first_center[axis] + geometry.stride[axis] * np.arange(geometry.grid[axis], dtype=np.float64)


def strided_conv_classifier() -> nn.Sequential:
    """Down-sampling by strided convolutions instead of pools, BatchNorm in between."""
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 8 * 8, 10), nn.ReLU(), nn.Linear(10, 4),
    ).eval()


CUSTOM_MODELS = {
    "tiny": lambda: tiny_classifier(num_classes=5),
    "tiny-adaptive-max": lambda: tiny_classifier(num_classes=5, pool=nn.AdaptiveMaxPool2d(2)),
    "tiny-adaptive-avg": lambda: tiny_classifier(num_classes=5, pool=nn.AdaptiveAvgPool2d(2)),
    "strided-conv": strided_conv_classifier,
}


@pytest.mark.parametrize("name", sorted(CUSTOM_MODELS))
def test_aligned_cells_equal_the_coarse_map_for_custom_classifiers(name):
    network = to_fully_convolutional(CUSTOM_MODELS[name]().eval(), input_size=32)
    images = torch.randn(2, 3, 77, 90, generator=torch.Generator().manual_seed(0))
    coarse_stride = native_stride(network)
    with torch.no_grad():
        coarse = network(images)
        for stride in stride_choices(network)[1:3]:
            dense = densify(network, stride)
            factor = coarse_stride // stride
            fine = dense(images)
            assert tuple(fine.shape[-2:]) == output_grid_size(dense, (77, 90))
            lattice = fine[..., ::factor, ::factor][..., : coarse.shape[-2], : coarse.shape[-1]]
            assert_close_scaled(lattice, coarse)


@pytest.mark.slow
@pytest.mark.parametrize("stride", [16, 8])
def test_alexnet_dense_maps_reproduce_stride_32(stride):
    torch.manual_seed(0)
    network = to_fully_convolutional(build_classifier("alexnet").eval())
    images = torch.randn(1, 3, 256, 288, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        coarse = network(images)
        dense = densify(network, stride)
        fine = dense(images)
    factor = 32 // stride
    assert coarse.shape[-2:] == (2, 3)
    lattice = fine[..., ::factor, ::factor][..., : coarse.shape[-2], : coarse.shape[-1]]
    assert_close_scaled(lattice, coarse)


@pytest.mark.parametrize("arch", [arch for arch in SUPPORTED_ARCHS if arch.startswith(("vgg", "alexnet"))])
def test_every_supported_arch_densifies_with_consistent_geometry(arch):
    """Shapes only (meta tensors): the geometry walk predicts the grid the dense network really produces."""
    with torch.device("meta"):
        network = to_fully_convolutional(build_classifier(arch))
        base = network_geometry(network)
        assert stride_choices(network)[:3] == [32, 16, 8]
        for stride in (16, 8):
            dense = densify(network, stride)
            geometry = network_geometry(dense)
            assert geometry.stride == (stride, stride)
            assert geometry.first_center == base.first_center  # cell 0 still sits on the same window centre
            assert geometry.receptive_field == base.receptive_field
            for size in ((224, 224), (255, 301), (320, 480)):
                output = dense(torch.empty(1, 3, *size))
                assert tuple(output.shape[-2:]) == output_grid_size(dense, size)
                coarse_rows = output_grid_size(network, size)[0]
                assert output.shape[-2] >= (coarse_rows - 1) * (32 // stride) + 1
    assert native_stride(network) == 32  # the original is untouched


def test_vgg16_layers_changed_as_in_the_fcn_paper():
    with torch.device("meta"):
        network = to_fully_convolutional(build_classifier("vgg16"))
        stride16, stride8 = densify(network, 16), densify(network, 8)
    pools = lambda net: [layer for layer in net.features if isinstance(layer, nn.MaxPool2d)]  # noqa: E731
    convs = lambda net: [layer for layer in net.features if isinstance(layer, nn.Conv2d)]  # noqa: E731
    fc6 = lambda net: net.head[0] if isinstance(net.head[0], nn.Conv2d) else net.head[1]  # noqa: E731
    assert [pool.stride for pool in pools(stride16)] == [2, 2, 2, 2, 1]
    assert fc6(stride16).dilation == (2, 2) and fc6(stride16).padding == (0, 0)
    assert all(conv.dilation == (1, 1) for conv in convs(stride16))
    assert [pool.stride for pool in pools(stride8)] == [2, 2, 2, 1, 1]
    assert pools(stride8)[-1].dilation == (2, 2)
    assert [conv.dilation for conv in convs(stride8)[-3:]] == [(2, 2)] * 3  # conv5_1..3, padding follows
    assert [conv.padding for conv in convs(stride8)[-3:]] == [(2, 2)] * 3
    assert all(conv.dilation == (1, 1) for conv in convs(stride8)[:-3])
    assert fc6(stride8).dilation == (4, 4)


def test_in_between_cells_are_the_windows_the_geometry_says():
    """Odd cells of a stride-4 map = the stride-8 map of the image cropped by 4 px (away from the crop border).

    A second, independent path: cropping moves every window by exactly the crop, so a window the dense geometry
    centres at pixel c must equal the coarse window the cropped image centres at c.
    """
    network = to_fully_convolutional(tiny_classifier(num_classes=5).eval(), input_size=32)
    images = torch.randn(1, 3, 120, 136, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        for stride in (4, 2):
            dense = densify(network, stride)
            factor = 8 // stride
            fine = dense(images)
            fine_geometry = ScoreGeometry.for_network(network_geometry(dense), tuple(fine.shape[-2:]), (32, 32))
            half_field = (fine_geometry.receptive_field[0] - 1) / 2
            for shift in range(1, factor):
                offset = shift * stride
                cropped = network(images[..., offset:, offset:])
                coarse_geometry = ScoreGeometry.for_network(
                    network_geometry(network), tuple(cropped.shape[-2:]), (32, 32), offset=(-offset, -offset)
                )
                rows = cropped.shape[-2]
                row_centres = centres(coarse_geometry, 0)
                np.testing.assert_allclose(row_centres, centres(fine_geometry, 0)[shift::factor][:rows])
                inside = [index for index, centre in enumerate(row_centres)
                          if centre - half_field >= offset and centre + half_field <= 119]
                assert len(inside) >= 3
                columns = [index for index, centre in enumerate(centres(coarse_geometry, 1))
                           if centre - half_field >= offset and centre + half_field <= 135]
                expected = cropped[..., inside, :][..., columns]
                actual = fine[..., shift::factor, shift::factor][..., inside, :][..., columns]
                assert_close_scaled(actual, expected)


def test_same_stride_returns_the_network_and_bad_strides_say_what_works():
    network = to_fully_convolutional(tiny_classifier().eval(), input_size=32)
    assert densify(network, 8) is network
    with pytest.raises(ConversionError, match=r"stride 3 is not reachable.*choose one of 8, 4, 2, 1"):
        densify(network, 3)
    with pytest.raises(ConversionError, match="not reachable"):
        densify(network, 16)


def test_average_pool_after_the_rarefied_layer_is_refused():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, padding=1), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(4 * 8 * 8, 3),
    )
    network = to_fully_convolutional(model, input_size=32)
    assert isinstance(densify(network, 2).features[3], nn.AvgPool2d)  # the last pool itself may lose its stride
    with pytest.raises(ConversionError, match="AvgPool2d"):
        densify(network, 1)
