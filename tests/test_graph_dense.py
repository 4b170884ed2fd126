"""Denser score maps for graph networks (filter rarefaction in the traced body): even cells reproduce the native
map exactly, geometry stays put, squeeze-and-excitation networks and undilatable pools are refused in one line."""

from __future__ import annotations

import pytest
import torch

from fcn_app.dense import densify
from fcn_app.errors import ConversionError
from fcn_app.geometry import network_geometry, output_grid_size
from fcn_app.models.convert import convert_classifier

from test_graph_convert import _assert_same_logits, _seeded


pytestmark = pytest.mark.usefixtures("one_thread")  # shared machines: one torch thread


@pytest.mark.parametrize("arch, strides", [
    pytest.param("resnet18", (16, 8), marks=pytest.mark.slow),  # quick: test_nonsquare, test_custom_classifier
    pytest.param("mobilenet_v2", (16, 8), marks=pytest.mark.slow),
    pytest.param("convnext_tiny", (16, 8), marks=pytest.mark.slow),
    pytest.param("densenet121", (16,), marks=pytest.mark.slow),
])
def test_dense_graph_network_reproduces_the_native_map_on_its_lattice(arch, strides):
    network = convert_classifier(_seeded(arch), input_size=64, arch=arch)
    native = network_geometry(network)
    image = torch.randn(1, 3, 192, 160)
    with torch.no_grad():
        coarse = network(image)
    for stride in strides:
        dense = densify(network, stride)
        with torch.no_grad():
            fine = dense(image)
        assert tuple(fine.shape[2:]) == output_grid_size(dense, (192, 160))
        factor = 32 // stride
        lattice = fine[..., ::factor, ::factor][..., :coarse.shape[2], :coarse.shape[3]]
        assert lattice.shape == coarse.shape
        for row in range(coarse.shape[2]):
            for col in range(coarse.shape[3]):
                _assert_same_logits(lattice[:, :, row, col], coarse[:, :, row, col])
        geometry = network_geometry(dense)
        assert geometry.stride == (stride, stride)
        assert geometry.first_center == native.first_center and geometry.receptive_field == native.receptive_field
    assert network_geometry(network).stride == (32, 32)  # the original is untouched


@pytest.mark.parametrize("arch, stride, message", [
    pytest.param("mobilenet_v3_small", 16, "squeeze-and-excitation", marks=pytest.mark.slow),
    pytest.param("googlenet", 16, "padded max pool inception5a", marks=pytest.mark.slow),
    pytest.param("densenet121", 8, "average pool features.transition3.pool", marks=pytest.mark.slow),
])
def test_graph_networks_that_cannot_densify_exactly_say_why(arch, stride, message):
    network = convert_classifier(_seeded(arch), input_size=64, arch=arch)
    with pytest.raises(ConversionError, match=message) as raised:
        densify(network, stride)
    assert "\n" not in str(raised.value)
