"""Denser score maps in one pass: "filter rarefaction" (Long et al. 2015, §3.2; shift-and-stitch without stitching).

A fully convolutional network with output stride ``S`` scores windows ``S`` pixels apart. Setting the stride
of its last down-sampling layer(s) to 1 makes every later layer see a grid ``f`` times finer, so each later
layer's kernel must skip ``f`` cells to read the same inputs as before: its dilation — and, to keep the border
zero-padding in the same place, its padding — are multiplied by ``f``. The result scores windows ``S / f``
pixels apart, and the cells at multiples of ``f`` are *exactly* the cells of the original map.

For VGG16 (stride 32): stride 16 sets pool5's stride to 1 and dilates fc6 by 2; stride 8 additionally sets
pool4's stride to 1 and dilates conv5_x and pool5 by 2 and fc6 by 4. Nothing here is hard-coded: the
down-sampling layers are found by walking the network's leaf layers from the end, so AlexNet, the VGG family and
any ``nn.Sequential`` classifier converted with :func:`~fcn_app.models.to_fully_convolutional` work alike.
Geometry (:func:`~fcn_app.geometry.network_geometry`) is read from the changed layers, so heatmaps of the denser
network stay pixel-aligned without further bookkeeping.
"""

from __future__ import annotations

import copy
import logging

from torch import nn

from .errors import ConversionError
from .geometry import network_geometry, spatial_layers
from .layers import pair
from .models.convert import FullyConvolutionalNet

__all__ = ["densify", "native_stride", "stride_choices"]

logger = logging.getLogger(__name__)


def native_stride(network: nn.Module) -> int:
    """Output stride of ``network`` in input pixels (square strides only)."""
    stride = network_geometry(network).stride
    if stride[0] != stride[1]:
        raise ConversionError(f"denser maps need the same stride along both axes, this network has {stride}")
    return int(stride[0])


def stride_choices(network: nn.Module) -> list[int]:
    """Output strides reachable by :func:`densify`, from the native one down (e.g. ``[32, 16, 8, 4, 2, 1]``)."""
    choices = [native_stride(network)]
    for layer in reversed(spatial_layers(network)):
        step = pair(layer.stride if layer.stride is not None else layer.kernel_size)
        if step[0] != step[1]:
            break
        if step[0] > 1:
            choices.append(choices[-1] // step[0])
    return choices


def _scale_layer(layer: nn.Module, factor: int) -> None:
    """Make ``layer`` read every ``factor``-th cell of a ``factor``-times finer grid (dilation and padding × f)."""
    kernel = pair(layer.kernel_size)
    if kernel == (1, 1):
        return  # a 1×1 kernel reads one cell whatever the spacing
    if isinstance(layer, nn.AvgPool2d):
        raise ConversionError(
            "an AvgPool2d after the down-sampling layer being removed would need dilation, which PyTorch's "
            "AvgPool2d lacks; ask for a coarser output stride"
        )
    if isinstance(layer.padding, str):
        raise ConversionError(f"cannot densify through padding={layer.padding!r}; use numeric padding")
    dilation = pair(layer.dilation)
    padding = pair(layer.padding)
    if isinstance(layer, nn.MaxPool2d):
        if layer.ceil_mode:
            raise ConversionError("cannot densify through a MaxPool2d with ceil_mode=True; ask for a coarser output stride")
        if max(padding) * factor > min(kernel) // 2:
            raise ConversionError(
                f"cannot densify through a padded MaxPool2d (kernel {kernel}, padding {padding}): PyTorch limits "
                "pool padding to half the kernel; ask for a coarser output stride"
            )
    layer.dilation = (dilation[0] * factor, dilation[1] * factor)
    layer.padding = (padding[0] * factor, padding[1] * factor)


def densify(network: FullyConvolutionalNet, stride: int) -> FullyConvolutionalNet:
    """A copy of ``network`` whose score map has output stride ``stride`` (a divisor of the native stride).

    The last down-sampling layers (pools or strided convolutions, found from the end) get stride 1 until the
    requested stride is reached; every layer after each of them is dilated (and padded) by that layer's
    stride. ``network`` itself is left untouched; the copy is in the same train/eval mode.
    """
    from .models.graph import GraphFullyConvolutionalNet, densify_graph  # models sit below; imported where used

    if isinstance(network, GraphFullyConvolutionalNet):  # residual and other graph bodies: dilation in the graph
        return densify_graph(network, stride)
    current = native_stride(network)
    if stride == current:
        return network
    choices = stride_choices(network)
    if stride not in choices:
        raise ConversionError(
            f"output stride {stride} is not reachable for this network (native stride {current}); choose one of "
            f"{', '.join(str(choice) for choice in choices)}"
        )
    dense = copy.deepcopy(network)
    layers = spatial_layers(dense)
    factor_needed = current // stride
    # Walk from the end: each down-sampling layer met becomes stride 1, and everything after it is dilated.
    rarefied: list[tuple[int, int]] = []  # (layer position, its former stride)
    for position in range(len(layers) - 1, -1, -1):
        if factor_needed == 1:
            break
        layer = layers[position]
        step = pair(layer.stride if layer.stride is not None else layer.kernel_size)[0]
        if step > 1:
            rarefied.append((position, step))
            factor_needed //= step
    for position, step in rarefied:
        layers[position].stride = 1
        for later in layers[position + 1 :]:
            _scale_layer(later, step)
    logger.debug("densified %s: stride %d → %d by rarefying layers %s", network.arch, current, stride,
                 [position for position, _ in rarefied])
    result_stride = native_stride(dense)
    assert result_stride == stride, (result_stride, stride)
    return dense
