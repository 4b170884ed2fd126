"""Exporting a network to ONNX: classifier FCNs with dynamic image height and width, segmentation FCNs at a
fixed size.

A classifier FCN's graph maps a normalised ``N×3×H×W`` float image to ``N×K×rows×cols`` class scores, for any
``H, W`` at least the classifier's window — the same function as :meth:`FullyConvolutionalNet.forward`. A
segmentation FCN pads, fuses and crops by a plan that depends on the input size (:meth:`SegmentationFCN.plan`),
which a traced graph cannot recompute: it is exported for one ``input_size`` (``N×C×H×W`` per-pixel scores).
What a runtime needs to use the scores is stored as ONNX metadata (``metadata_props``): normalisation
``mean``/``std`` (for pixels scaled to [0, 1]), ``input_size``, the score geometry (``stride``, ``first_center``,
``receptive_field``), whether H and W are ``dynamic``, and the ``categories`` as JSON.

The TorchScript-based exporter (``dynamo=False``) is used: it needs only ``onnx``, while the dynamo exporter
additionally needs ``onnxscript``; both give the same graph for these plain conv/pool/ReLU networks.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from torch import nn

from .choices import DEFAULT_OPSET, EXPORT_FORMATS
from .device import module_device
from .errors import ConversionError, FcnError
from .geometry import score_layout
from .io import atomic_write_bytes
from .layers import pair
from .models.convert import FullyConvolutionalNet
from .runtimes import onnx_graph

__all__ = ["DEFAULT_OPSET", "EXPORT_FORMATS", "export_onnx", "onnx_metadata"]

logger = logging.getLogger(__name__)


def onnx_metadata(network: nn.Module, input_size: tuple[int, int] | None = None) -> dict[str, str]:
    """The strings stored next to the graph: everything needed to turn its scores into placed heatmaps.

    ``input_size`` is the fixed size a size-dependent network (a segmentation FCN) was exported for.
    """
    dynamic = isinstance(network, FullyConvolutionalNet)
    size = network.input_size if dynamic else pair(input_size)
    geometry = score_layout(network, size).geometry
    return {
        "producer": "fcn-heatmap",
        "arch": network.arch,
        "mean": json.dumps(list(network.mean)),
        "std": json.dumps(list(network.std)),
        "input_size": json.dumps(list(size)),
        "dynamic": json.dumps(dynamic),
        "stride": json.dumps(list(geometry.stride)),
        "first_center": json.dumps(list(geometry.first_center)),
        "receptive_field": json.dumps(list(geometry.receptive_field)),
        "categories": json.dumps(network.categories, ensure_ascii=False),
    }


def export_onnx(
    network: nn.Module, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET,
    input_size: int | tuple[int, int] | None = None,
) -> Path:
    """Write ``network`` as an ONNX model to ``path`` (atomically).

    A classifier FCN gets dynamic batch, height and width; any other network (a segmentation FCN) a dynamic
    batch and the fixed ``input_size`` (required for it).
    """
    try:
        import onnx
    except ImportError:
        raise FcnError("ONNX export needs the onnx package: pip install 'fcn-heatmap[onnx]'") from None
    dynamic = isinstance(network, FullyConvolutionalNet)
    if dynamic:
        geometry = score_layout(network, network.input_size).geometry
        # two cells per axis in the example, so no output size can be mistaken for a constant while tracing
        size = (network.input_size[0] + geometry.stride[0], network.input_size[1] + geometry.stride[1])
    else:
        if input_size is None:
            raise ConversionError("this network's padding and crops depend on the input size: export it for one "
                                  "input size", option="input_size")
        size = pair(input_size)
        if min(size) < 1:
            raise ConversionError(f"input size must be positive, got {size}", option="input_size")
    example = torch.zeros(1, 3, *size, device=module_device(network))
    model = onnx.load_from_string(onnx_graph(network, example, dynamic=dynamic, opset=opset))
    for key, value in onnx_metadata(network, size).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    written = atomic_write_bytes(path, model.SerializeToString())
    logger.info("exported %s to %s (opset %d)", network.arch, written, opset)
    return written
