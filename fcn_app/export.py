"""Exporting the fully convolutional network to ONNX, with dynamic image height and width.

The exported graph maps a normalised ``N×3×H×W`` float image to ``N×K×rows×cols`` class scores, for any ``H, W``
at least the classifier's window — the same function as :meth:`FullyConvolutionalNet.forward`. What a runtime
needs to use the scores is stored as ONNX metadata (``metadata_props``): normalisation ``mean``/``std`` (for pixels
scaled to [0, 1]), ``input_size``, the score geometry (``stride``, ``first_center``, ``receptive_field``) and the
``categories`` as JSON.

The TorchScript-based exporter (``dynamo=False``) is used: it needs only ``onnx``, while the dynamo exporter
additionally needs ``onnxscript``; both give the same graph for these plain conv/pool/ReLU networks.
"""

from __future__ import annotations

import io
import json
import logging
import os
import warnings
from pathlib import Path

import torch

from .errors import ConversionError, FcnError
from .geometry import network_geometry
from .io import atomic_write_bytes
from .models.convert import FullyConvolutionalNet

__all__ = ["DEFAULT_OPSET", "EXPORT_FORMATS", "export_onnx", "onnx_metadata"]

logger = logging.getLogger(__name__)

EXPORT_FORMATS = ("onnx",)
DEFAULT_OPSET = 17
INPUT_NAME = "images"
OUTPUT_NAME = "scores"


def onnx_metadata(network: FullyConvolutionalNet) -> dict[str, str]:
    """The strings stored next to the graph: everything needed to turn its scores into placed heatmaps."""
    geometry = network_geometry(network)
    return {
        "producer": "fcn-heatmap",
        "arch": network.arch,
        "mean": json.dumps(list(network.mean)),
        "std": json.dumps(list(network.std)),
        "input_size": json.dumps(list(network.input_size)),
        "stride": json.dumps(list(geometry.stride)),
        "first_center": json.dumps(list(geometry.first_center)),
        "receptive_field": json.dumps(list(geometry.receptive_field)),
        "categories": json.dumps(network.categories, ensure_ascii=False),
    }


def export_onnx(network: FullyConvolutionalNet, path: str | os.PathLike, *, opset: int = DEFAULT_OPSET) -> Path:
    """Write ``network`` as an ONNX model with dynamic batch, height and width to ``path`` (atomically)."""
    try:
        import onnx
    except ImportError:
        raise FcnError("ONNX export needs the onnx package: pip install 'fcn-heatmap[onnx]'") from None
    parameter = next(network.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    geometry = network_geometry(network)
    # two cells per axis in the example, so no output size can be mistaken for a constant while tracing
    example = torch.zeros(1, 3, network.input_size[0] + geometry.stride[0], network.input_size[1] + geometry.stride[1],
                          device=device)
    buffer = io.BytesIO()
    was_training = network.training
    network.eval()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore", category=DeprecationWarning)
            warnings.simplefilter("ignore", category=FutureWarning)
            torch.onnx.export(
                network,
                (example,),
                buffer,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "batch", 2: "height", 3: "width"},
                              OUTPUT_NAME: {0: "batch", 2: "rows", 3: "cols"}},
                opset_version=opset,
                dynamo=False,
            )
    except (RuntimeError, torch.onnx.errors.OnnxExporterError) as error:  # type: ignore[attr-defined]
        raise ConversionError(f"ONNX export failed: {str(error).splitlines()[0][:200]}") from None
    finally:
        network.train(was_training)
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in onnx_metadata(network).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    written = atomic_write_bytes(path, model.SerializeToString())
    logger.info("exported %s to %s (opset %d)", network.arch, written, opset)
    return written
