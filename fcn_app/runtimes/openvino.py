"""OpenVINO on the CPU: fp32, bf16 or fp16 (``INFERENCE_PRECISION_HINT``); the library is imported when used."""

from __future__ import annotations

from typing import Any

from ..choices import BACKEND_INSTALL_HINTS
from .base import CompiledNetwork, LibraryRuntime, compile_failure

__all__ = ["RUNTIME", "OpenVinoRuntime"]


class OpenVinoRuntime(LibraryRuntime):
    """OpenVINO: ``backend="auto"`` picks it on a CPU (it was the fastest there: ``scripts/bench.py``); a network
    read once serves every precision."""

    name = "openvino"
    display_name = "OpenVINO"
    precisions = ("fp32", "bf16", "fp16")
    install_hint = BACKEND_INSTALL_HINTS[name]
    preferred_on_cpu = True
    reuses_read_model = True
    _PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}

    def read(self, graph: bytes) -> Any:
        """The graph as an OpenVINO model."""
        openvino = self.load()
        try:
            return openvino.Core().read_model(graph)
        except Exception as error:  # noqa: BLE001
            raise compile_failure(self.display_name, error) from None

    def compile(self, model: Any, precision: str, threads: int) -> CompiledNetwork:
        """``model`` compiled for the CPU, tuned for latency (one batch at a time)."""
        openvino = self.load()
        config = {"INFERENCE_PRECISION_HINT": self._PRECISION_HINTS[precision], "INFERENCE_NUM_THREADS": threads,
                  "PERFORMANCE_HINT": "LATENCY"}
        try:
            compiled = openvino.Core().compile_model(model, "CPU", config)
        except Exception as error:  # noqa: BLE001
            raise compile_failure(self.display_name, error) from None
        request = compiled.create_infer_request()
        output = compiled.output(0)
        return lambda batch: request.infer({0: batch})[output].copy()  # the request reuses its output buffer


RUNTIME = OpenVinoRuntime()
