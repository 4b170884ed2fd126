"""torch itself: the runtime that needs no conversion (``fcn_app.scoring`` runs the module, under autocast for
bf16 and fp16). Named ``pytorch`` so that ``fcn_app.runtimes.torch`` never shadows the library in the package."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from .base import CompiledNetwork

__all__ = ["RUNTIME", "TorchRuntime"]


class TorchRuntime:
    """torch: always installed, on any device, at any precision; what ``backend="auto"`` falls back to."""

    name = "torch"
    display_name = "torch"
    precisions = ("fp32", "bf16", "fp16")
    install_hint = None
    converts = False
    cpu_only = False
    preferred_on_cpu = False
    reuses_read_model = False

    def available(self) -> bool:
        """Always: fcn-heatmap depends on torch."""
        return True

    def load(self) -> ModuleType:
        """The torch library."""
        return importlib.import_module("torch")

    def read(self, graph: bytes) -> Any:
        raise NotImplementedError("torch runs the module itself (fcn_app.scoring), not an ONNX graph")

    def compile(self, model: Any, precision: str, threads: int) -> CompiledNetwork:
        raise NotImplementedError("torch runs the module itself (fcn_app.scoring), not an ONNX graph")


RUNTIME = TorchRuntime()
