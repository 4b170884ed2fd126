"""What a runtime is (:class:`Runtime`), and what the optional ones share: found and imported by their library's
name (:class:`LibraryRuntime`), their failures told as one :class:`~fcn_app.errors.RuntimeCompileError`."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from ..errors import OptionError, RuntimeCompileError

__all__ = ["CompiledNetwork", "LibraryRuntime", "Runtime", "compile_failure"]

#: A compiled network: normalised ``N×3×H×W`` float32 input → ``N×K×rows×cols`` scores (numpy both).
CompiledNetwork = Callable[[np.ndarray], np.ndarray]


class Runtime(Protocol):
    """One way of running a network, as :mod:`fcn_app.runtimes` knows it.

    A runtime other than torch runs a network from its ONNX graph: :meth:`read` parses the graph (kept per network
    for a dynamic graph where :attr:`reuses_read_model`: OpenVINO's ``read_model`` result serves every precision),
    :meth:`compile` makes the function that scores a batch.
    """

    #: The ``--backend`` value (also its key in :data:`fcn_app.runtimes.RUNTIMES`).
    name: str
    #: The name messages give it.
    display_name: str
    #: The precisions it runs (:data:`fcn_app.choices.PRECISIONS` less ``auto``).
    precisions: tuple[str, ...]
    #: How to install it; ``None`` for one that comes with fcn-heatmap.
    install_hint: str | None
    #: False for the runtime that runs the torch module itself (and has nothing to read or compile).
    converts: bool
    #: Runs networks on the CPU only.
    cpu_only: bool
    #: ``backend="auto"`` picks it on a CPU when it is installed and imports.
    preferred_on_cpu: bool
    #: :meth:`read`'s result for a dynamic graph is kept per network and compiled again for each precision.
    reuses_read_model: bool

    def available(self) -> bool:
        """Whether it is installed, without importing it."""

    def load(self) -> ModuleType:
        """Its library, imported; :class:`~fcn_app.errors.OptionError` with the install hint when it cannot be."""

    def read(self, graph: bytes) -> Any:
        """The serialised ONNX ``graph`` as :meth:`compile` takes it."""

    def compile(self, model: Any, precision: str, threads: int) -> CompiledNetwork:
        """``model`` (from :meth:`read`) compiled for ``precision`` on ``threads`` CPU threads."""


def compile_failure(display_name: str, error: Exception) -> RuntimeCompileError:
    """``error``, raised by the runtime ``display_name`` while reading, compiling or running a network, as one
    :class:`~fcn_app.errors.RuntimeCompileError` naming the failing layer where the runtime names it."""
    detail = str(error).strip()
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    # OpenVINO and ONNX Runtime name the failing node by its exported path, e.g. /features/features.3/Conv
    layer = next((word.strip("'\"[]():,") for line in lines for word in line.split()
                  if word.startswith(("/", "'/", "\"/", "[/")) and word.count("/") >= 2), None)
    summary = next((line for line in reversed(lines) if not line.startswith("Exception from")), type(error).__name__)
    return RuntimeCompileError(f"{display_name} cannot compile this network"
                               f"{f' at layer {layer}' if layer else ''}: {summary[:200]}", layer=layer)


class LibraryRuntime:
    """The shared half of an optional runtime: a Python library importable as :attr:`name`, run on the CPU from an
    ONNX graph. A subclass sets the names, precisions and install hint and implements :meth:`compile`."""

    name: str
    display_name: str
    precisions: tuple[str, ...]
    install_hint: str
    converts = True
    cpu_only = True
    preferred_on_cpu = False
    reuses_read_model = False

    def available(self) -> bool:
        """Whether the library is installed (found, not imported: importing OpenVINO takes a second)."""
        return importlib.util.find_spec(self.name) is not None

    def load(self) -> ModuleType:
        """The library, or :class:`~fcn_app.errors.OptionError` saying why not and how to install it."""
        try:
            return importlib.import_module(self.name)
        except Exception as error:  # noqa: BLE001 — a broken install fails in many ways; all mean "not usable"
            detail = "is not installed" if isinstance(error, ModuleNotFoundError) else f"does not import ({error})"
            raise OptionError("backend", f"{self.display_name} {detail}: {self.install_hint}") from None

    def read(self, graph: bytes) -> Any:
        """The graph as it is: a runtime that parses it as it compiles."""
        return graph

    def compile(self, model: Any, precision: str, threads: int) -> CompiledNetwork:
        raise NotImplementedError
