"""A network as a serialised ONNX graph: what ``fcn-heatmap export`` writes and what the runtimes compile."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import warnings

import torch
from torch import nn

from ..errors import ConversionError

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "onnx_graph"]

INPUT_NAME = "images"
OUTPUT_NAME = "scores"


def _leaf_layers_with_inputs(network: nn.Module, example: torch.Tensor) -> list[tuple[str, nn.Module, tuple]]:
    """Every leaf layer of ``network`` with the input it receives for ``example``, in call order."""
    calls = []
    handles = [module.register_forward_pre_hook(lambda module, inputs, name=name: calls.append((name, module, inputs)))
               for name, module in network.named_modules() if not list(module.children())]
    try:
        with torch.no_grad():
            network(example)
    finally:
        for handle in handles:
            handle.remove()
    return calls


@contextlib.contextmanager
def _native_stdout_silenced():
    """File descriptor 1 points at the null device: the TorchScript exporter's C++ logger prints the whole graph
    to stdout when an operator fails to export (torch 2.x always enables that log), which would bury the one
    error line a user gets and corrupt ``--json`` output."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout to protect
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _export(module: nn.Module, inputs: tuple, axes: dict | None, opset: int) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad(), _native_stdout_silenced():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.simplefilter("ignore", category=UserWarning)  # constant-folding notes on the crop slices
        torch.onnx.export(module, inputs, buffer, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)
    return buffer.getvalue()


def _failing_layer(network: nn.Module, example: torch.Tensor, opset: int) -> str | None:
    """The first leaf layer that does not export alone (found only after the whole network failed to)."""
    for name, module, inputs in _leaf_layers_with_inputs(network, example):
        try:
            _export(module, inputs, None, opset)
        except Exception:  # noqa: BLE001 — any failure marks the culprit
            return name or type(module).__name__
    return None


def onnx_graph(network: nn.Module, example: torch.Tensor, *, dynamic: bool, opset: int = 17) -> bytes:
    """``network`` as a serialised ONNX graph (the TorchScript exporter, which needs only ``onnx``), traced on
    ``example``; with ``dynamic``, batch, height and width are free. A network that does not export is a
    :class:`~fcn_app.errors.ConversionError` naming the first layer that does not export alone."""
    axes = ({INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch", 2: "rows", 3: "cols"}}
            if dynamic else {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}})
    was_training = network.training
    network.eval()
    try:
        return _export(network, (example,), axes, opset)
    except Exception as error:  # noqa: BLE001 — the exporter raises many types; all mean "cannot convert"
        layer = _failing_layer(network, example, opset)
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ConversionError(f"ONNX export failed{f' at layer {layer}' if layer else ''}: {detail}",
                              layer=layer) from None
    finally:
        network.train(was_training)
