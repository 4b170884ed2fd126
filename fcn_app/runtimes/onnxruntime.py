"""ONNX Runtime's CPU execution provider: fp32 only; the library is imported when used."""

from __future__ import annotations

from ..choices import BACKEND_INSTALL_HINTS
from .base import CompiledNetwork, LibraryRuntime, compile_failure
from .onnx_export import INPUT_NAME, OUTPUT_NAME

__all__ = ["RUNTIME", "OnnxRuntime"]


class OnnxRuntime(LibraryRuntime):
    """ONNX Runtime: one session per graph; its CPU provider computes in fp32 only."""

    name = "onnxruntime"
    display_name = "ONNX Runtime"
    precisions = ("fp32",)
    install_hint = BACKEND_INSTALL_HINTS[name]

    def compile(self, model: bytes, precision: str, threads: int) -> CompiledNetwork:
        """A session on the serialised graph ``model`` (``precision`` is fp32, the only one it runs)."""
        onnxruntime = self.load()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001
            raise compile_failure(self.display_name, error) from None
        return lambda batch: session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


RUNTIME = OnnxRuntime()
