"""Running a network on an inference runtime other than torch: OpenVINO or ONNX Runtime, on the CPU.

A runtime is a property of how a network is *run*, not of the network: :func:`fcn_app.scoring.compute_score_maps`
prepares the normalised input tensor exactly as for torch (tiles, padding, pyramid levels, densified or
segmentation networks alike) and hands it to :func:`run_on_runtime`, which returns the ``N×K×rows×cols`` scores.

- **A registry.** :data:`RUNTIMES` maps each ``--backend`` name to one object implementing
  :class:`~fcn_app.runtimes.base.Runtime`, each in its own module (:mod:`.pytorch`, :mod:`.openvino`,
  :mod:`.onnxruntime`); nothing here asks which runtime it is talking to, only what it can do. Adding a runtime
  is one module implementing the protocol, one line in :data:`RUNTIMES`, and its name (and install hint) in
  :data:`fcn_app.choices.BACKENDS` — ``tests/test_runtime_registry.py`` fails until the two agree.
- **Converted once.** A network goes to a runtime as ONNX, exported by :func:`onnx_graph` (the exporter of
  ``fcn-heatmap export``, :mod:`.onnx_export`): a classifier FCN with dynamic batch, height and width, once per
  network and process; a segmentation FCN, whose pads and crops depend on the input size, once per input size.
- **Compiled once per network, precision and thread count** (per input size for a segmentation FCN), kept in a
  bounded least-recently-used cache per network, so a folder of images reuses it. The runtimes keep their own
  per-shape kernels for a dynamic graph.
- **Precision.** Each runtime says what it runs (:func:`runtime_precisions`): OpenVINO fp32, bf16 or fp16
  (``INFERENCE_PRECISION_HINT``); ONNX Runtime's CPU provider fp32 only.
- **Mistakes.** A runtime that is not installed is an :class:`~fcn_app.errors.OptionError` carrying the install
  hint; a network a runtime cannot convert or compile is a :class:`~fcn_app.errors.RuntimeCompileError` naming
  the layer. ``backend="auto"`` never fails because of an optional runtime: it falls back to torch and says so
  once (:func:`resolve_backend`, :func:`run_on_runtime`).
"""

from __future__ import annotations

import logging
import os
import weakref
from collections import OrderedDict

import numpy as np
import torch
from torch import nn

from ..choices import BACKEND_INSTALL_HINTS as INSTALL_HINTS
from ..choices import BACKENDS, check_backend
from ..errors import ConversionError, FcnError, OptionError, RuntimeCompileError
from ..geometry import score_layout
from ..models.convert import FullyConvolutionalNet
from . import onnxruntime as _onnxruntime
from . import openvino as _openvino
from . import pytorch as _pytorch
from .base import CompiledNetwork, Runtime, compile_failure
from .onnx_export import onnx_graph

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "command_backend",
    "COMPILED_CACHE_SIZE",
    "INSTALL_HINTS",
    "RUNTIMES",
    "Runtime",
    "check_backend",
    "get_runtime",
    "onnx_graph",
    "resolve_backend",
    "run_on_runtime",
    "runtime_available",
    "runtime_precisions",
]

logger = logging.getLogger(__name__)

#: Every runtime by its ``--backend`` name, in the order :data:`fcn_app.choices.BACKENDS` lists them.
RUNTIMES: dict[str, Runtime] = {runtime.name: runtime
                                for runtime in (_pytorch.RUNTIME, _openvino.RUNTIME, _onnxruntime.RUNTIME)}
#: The runtime that runs any network anywhere: what ``backend="auto"`` falls back to.
_FALLBACK = _pytorch.RUNTIME.name

#: What ``backend="auto"`` means on this machine when set (``torch``, ``openvino`` or ``onnxruntime``): pins a
#: deployment, or a test suite that compares bit for bit, to one runtime without changing every command line.
BACKEND_ENV = "FCN_HEATMAP_BACKEND"
#: Compiled models kept per network: a dynamic classifier needs one per precision; a segmentation FCN one per
#: input size (a folder of same-size images, or the few tile sizes of a tiled image).
COMPILED_CACHE_SIZE = 4


def get_runtime(backend: str) -> Runtime:
    """The runtime named ``backend`` (a concrete one, not ``auto``); :class:`~fcn_app.errors.OptionError`
    listing them otherwise."""
    runtime = RUNTIMES.get(backend)
    if runtime is None:
        raise OptionError("backend", f"{backend!r} is not a runtime; choose one of {', '.join(RUNTIMES)}")
    return runtime


def runtime_precisions(backend: str) -> tuple[str, ...]:
    """The precisions ``backend`` (a concrete one) can run."""
    return get_runtime(backend).precisions


def runtime_available(backend: str) -> bool:
    """Whether the optional runtime ``backend`` is installed (torch always is); does not import it."""
    return get_runtime(backend).available()


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


def _auto_runtime(device: torch.device) -> Runtime:
    """What ``auto`` picks on ``device`` before trying to import it: a runtime preferred on the CPU and installed,
    else torch."""
    if device.type == "cpu":
        for runtime in RUNTIMES.values():
            if runtime.preferred_on_cpu and runtime.available():
                return runtime
    return RUNTIMES[_FALLBACK]


def resolve_backend(backend: str, device: torch.device | str = "cpu") -> str:
    """The concrete runtime for ``backend`` on ``device``.

    ``"auto"``: :data:`BACKEND_ENV` when set, else OpenVINO when it is installed (and imports) and ``device`` is a
    CPU, else torch. A runtime named explicitly must be installed (:class:`~fcn_app.errors.OptionError` with the
    install hint) and runs on the CPU only.
    """
    check_backend(backend)
    device = torch.device(device)
    explicit = backend != "auto"
    if not explicit:
        backend = os.environ.get(BACKEND_ENV) or "auto"
        if backend not in BACKENDS:
            raise OptionError("backend", f"{BACKEND_ENV}={backend!r} is not a backend; choose one of "
                                         f"{', '.join(BACKENDS)}")
        explicit = backend != "auto"
    runtime = get_runtime(backend) if explicit else _auto_runtime(device)
    if not runtime.converts:
        return runtime.name
    if runtime.cpu_only and device.type != "cpu":
        if not explicit:
            return _FALLBACK
        raise OptionError("backend", f"{runtime.display_name} runs networks on the CPU here; choose device cpu "
                                     f"or backend {_FALLBACK}")
    try:
        runtime.load()
    except OptionError:
        if explicit:
            raise
        _warn_once(f"{runtime.display_name} is installed but does not import; backend auto uses {_FALLBACK}")
        return _FALLBACK
    return runtime.name


def command_backend(backend: str) -> str:
    """The backend an image command (``fcn-heatmap IMAGE|FOLDER``, ``detect``) scores with: ``auto`` means torch
    there, for one image and for a folder alike (unless :data:`BACKEND_ENV` pins a backend), so an image gives the
    same bytes alone and in a folder — runtimes differ in the last bits (OpenVINO fp32 vs torch fp32: up to 7e-7
    on VGG16 logits).

    Why torch: converting a network for a runtime is paid once per process, and the ONNX export alone (VGG16:
    ~5 CPU s of tracing, before any compiling) is more than one image gains, so one photo is faster on torch;
    OpenVINO's compiled-model cache cannot skip the export, because its key is the converted model. The web app
    and the Python API keep ``auto``'s runtime (:func:`resolve_backend`): one conversion serves many images there.
    """
    if backend == "auto" and not os.environ.get(BACKEND_ENV):
        return _FALLBACK
    return backend


# ------------------------------------------------------------------------------------------------- compiling
class _NetworkRuntimes:
    """What one network (at one version of its weights) has been converted to and compiled into; lives as long as
    the network."""

    def __init__(self, version: tuple) -> None:
        self.version = version
        #: Runtime name → its read dynamic graph, compiled again per precision (:attr:`Runtime.reuses_read_model`).
        self.read_models: dict[str, object] = {}
        self.compiled: OrderedDict[tuple, CompiledNetwork] = OrderedDict()


_per_network: weakref.WeakKeyDictionary[nn.Module, _NetworkRuntimes] = weakref.WeakKeyDictionary()


def _weights_version(network: nn.Module) -> tuple:
    """Changes when a parameter is replaced or modified in place, so a stale compiled copy is never used.
    Inference tensors (weights loaded under ``torch.inference_mode``) keep no version counter: their storage
    address alone identifies them."""
    return tuple((parameter.data_ptr(), -1 if parameter.is_inference() else parameter._version)
                 for parameter in network.parameters())


def _graph_for(network: nn.Module, size: tuple[int, int] | None, device: torch.device) -> bytes:
    """The ONNX graph a runtime compiles: dynamic height and width (``size`` ``None``), or for one input size."""
    name = network.arch
    if size is None:  # traced on two cells per axis, so no output size is mistaken for a constant
        height, width = network.min_input_size
        stride = score_layout(network, (height, width)).geometry.stride
        logger.info("converting %s to ONNX (dynamic height and width)", name)
        example = (height + int(stride[0]), width + int(stride[1]))
    else:
        logger.info("converting %s to ONNX for %d×%d inputs", name, *size)
        example = size
    try:
        return onnx_graph(network, torch.zeros(1, 3, *example, device=device), dynamic=size is None)
    except ConversionError as error:
        raise RuntimeCompileError(str(error), layer=error.layer) from None


def _compile(runtime: Runtime, network: nn.Module, state: _NetworkRuntimes, precision: str, threads: int,
             size: tuple[int, int] | None, device: torch.device) -> CompiledNetwork:
    runtime.load()
    reuse = size is None and runtime.reuses_read_model
    model = state.read_models.get(runtime.name) if reuse else None
    if model is None:
        model = runtime.read(_graph_for(network, size, device))
        if reuse:
            state.read_models[runtime.name] = model
    return runtime.compile(model, precision, threads)


def _compiled_for(runtime: Runtime, network: nn.Module, precision: str, size: tuple[int, int],
                  device: torch.device) -> CompiledNetwork:
    state = _per_network.get(network)
    version = _weights_version(network)
    if state is None or state.version != version:
        state = _per_network[network] = _NetworkRuntimes(version)
    dynamic = isinstance(network, FullyConvolutionalNet)
    threads = torch.get_num_threads()
    key = (runtime.name, precision, threads, None if dynamic else size)
    compiled = state.compiled.get(key)
    if compiled is None:
        compiled = _compile(runtime, network, state, precision, threads, None if dynamic else size, device)
        state.compiled[key] = compiled
        while len(state.compiled) > COMPILED_CACHE_SIZE:
            state.compiled.popitem(last=False)
    state.compiled.move_to_end(key)
    return compiled


def run_on_runtime(backend: str, network: nn.Module, batch: torch.Tensor, precision: str) -> torch.Tensor:
    """``network(batch)`` (``N×3×H×W`` normalised float input) computed by ``backend`` at ``precision``
    (``"fp32"``, ``"bf16"`` or ``"fp16"``): float32 ``N×K×rows×cols`` scores on the CPU."""
    runtime = get_runtime(backend)
    if precision not in runtime.precisions:
        others = " or ".join(other.name for other in RUNTIMES.values() if precision in other.precisions)
        raise OptionError("precision", f"{runtime.display_name} runs {' and '.join(runtime.precisions)} only, not "
                                       f"{precision}; choose precision fp32, or backend {others}")
    compiled = _compiled_for(runtime, network, precision, tuple(batch.shape[-2:]), batch.device)
    inputs = np.ascontiguousarray(batch.float().cpu().numpy())
    try:
        scores = compiled(inputs)
    except FcnError:
        raise
    except Exception as error:  # noqa: BLE001 — a shape the compiled graph rejects, an op failing at run time
        raise compile_failure(runtime.display_name, error) from None
    return torch.from_numpy(np.asarray(scores, dtype=np.float32))
