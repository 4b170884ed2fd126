"""Running a network on an inference runtime other than torch: OpenVINO or ONNX Runtime, on the CPU.

A runtime is a property of how a network is *run*, not of the network: :func:`fcn_app.scoring.compute_score_maps`
prepares the normalised input tensor exactly as for torch (tiles, padding, pyramid levels, densified or
segmentation networks alike) and hands it to :func:`run_on_runtime`, which returns the ``N×K×rows×cols`` scores.

- **Converted once.** A network goes to a runtime as ONNX, exported by :func:`onnx_graph` (the exporter of
  ``fcn-heatmap export``): a classifier FCN with dynamic batch, height and width, once per network and process; a
  segmentation FCN, whose pads and crops depend on the input size, once per input size.
- **Compiled once per network, precision and thread count** (per input size for a segmentation FCN), kept in a
  bounded least-recently-used cache per network, so a folder of images reuses it. The runtimes keep their own
  per-shape kernels for a dynamic graph.
- **Precision.** OpenVINO runs fp32, bf16 or fp16 (``INFERENCE_PRECISION_HINT``); ONNX Runtime's CPU provider
  runs fp32 only.
- **Mistakes.** A runtime that is not installed is an :class:`~fcn_app.errors.OptionError` carrying the install
  hint; a network a runtime cannot convert or compile is a :class:`~fcn_app.errors.RuntimeCompileError` naming
  the layer. ``backend="auto"`` never fails because of an optional runtime: it falls back to torch and says so
  once (:func:`resolve_backend`, :func:`run_on_runtime`).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import io
import logging
import os
import sys
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from .choices import BACKEND_INSTALL_HINTS as INSTALL_HINTS
from .choices import BACKENDS, check_backend
from .errors import ConversionError, FcnError, OptionError, RuntimeCompileError
from .geometry import score_layout
from .models.convert import FullyConvolutionalNet

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "command_backend",
    "COMPILED_CACHE_SIZE",
    "INSTALL_HINTS",
    "check_backend",
    "onnx_graph",
    "resolve_backend",
    "run_on_runtime",
    "runtime_available",
    "runtime_precisions",
]

logger = logging.getLogger(__name__)

#: What ``backend="auto"`` means on this machine when set (``torch``, ``openvino`` or ``onnxruntime``): pins a
#: deployment, or a test suite that compares bit for bit, to one runtime without changing every command line.
BACKEND_ENV = "FCN_HEATMAP_BACKEND"
_RUNTIME_NAMES = {"openvino": "OpenVINO", "onnxruntime": "ONNX Runtime"}
#: Compiled models kept per network: a dynamic classifier needs one per precision; a segmentation FCN one per
#: input size (a folder of same-size images, or the few tile sizes of a tiled image).
COMPILED_CACHE_SIZE = 4
INPUT_NAME = "images"
OUTPUT_NAME = "scores"
_OPENVINO_PRECISIONS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}


def runtime_precisions(backend: str) -> tuple[str, ...]:
    """The precisions ``backend`` (a concrete one) can run."""
    return ("fp32",) if backend == "onnxruntime" else ("fp32", "bf16", "fp16")


def runtime_available(backend: str) -> bool:
    """Whether the optional runtime ``backend`` is installed (torch always is); does not import it."""
    return backend == "torch" or importlib.util.find_spec(backend) is not None


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)


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
        if not explicit:
            backend = "openvino" if device.type == "cpu" and runtime_available("openvino") else "torch"
    if backend == "torch":
        return backend
    if device.type != "cpu":
        if not explicit:
            return "torch"
        raise OptionError("backend", f"{_RUNTIME_NAMES[backend]} runs networks on the CPU here; choose device cpu "
                                     "or backend torch")
    try:
        _import_runtime(backend)
    except OptionError:
        if explicit:
            raise
        _warn_once(f"{_RUNTIME_NAMES[backend]} is installed but does not import; backend auto uses torch")
        return "torch"
    return backend


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
        return "torch"
    return backend


def _import_runtime(backend: str):
    try:
        return importlib.import_module(backend)
    except Exception as error:  # noqa: BLE001 — a broken install fails in many ways; all mean "not usable"
        detail = "is not installed" if isinstance(error, ModuleNotFoundError) else f"does not import ({error})"
        raise OptionError("backend", f"{_RUNTIME_NAMES[backend]} {detail}: {INSTALL_HINTS[backend]}") from None


# ------------------------------------------------------------------------------------------------ conversion
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


# ------------------------------------------------------------------------------------------------- compiling
#: A compiled network: normalised ``N×3×H×W`` float32 input → ``N×K×rows×cols`` scores (numpy both).
_CompiledNetwork = Callable[[np.ndarray], np.ndarray]


class _NetworkRuntimes:
    """What one network (at one version of its weights) has been converted to and compiled into; lives as long as
    the network."""

    def __init__(self, version: tuple) -> None:
        self.version = version
        self.openvino_model = None  # the converted dynamic graph, compiled once per precision
        self.compiled: OrderedDict[tuple, _CompiledNetwork] = OrderedDict()


_per_network: weakref.WeakKeyDictionary[nn.Module, _NetworkRuntimes] = weakref.WeakKeyDictionary()


def _weights_version(network: nn.Module) -> tuple:
    """Changes when a parameter is replaced or modified in place, so a stale compiled copy is never used.
    Inference tensors (weights loaded under ``torch.inference_mode``) keep no version counter: their storage
    address alone identifies them."""
    return tuple((parameter.data_ptr(), -1 if parameter.is_inference() else parameter._version)
                 for parameter in network.parameters())


def _graph_for(network: nn.Module, size: tuple[int, int] | None, device: torch.device) -> bytes:
    """The ONNX graph a runtime compiles: dynamic height and width (``size`` ``None``), or for one input size."""
    name = getattr(network, "arch", "the network")
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


def _compile_failure(backend: str, error: Exception) -> RuntimeCompileError:
    detail = str(error).strip()
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    # OpenVINO and ONNX Runtime name the failing node by its exported path, e.g. /features/features.3/Conv
    layer = next((word.strip("'\"[]():,") for line in lines for word in line.split()
                  if word.startswith(("/", "'/", "\"/", "[/")) and word.count("/") >= 2), None)
    summary = next((line for line in reversed(lines) if not line.startswith("Exception from")), type(error).__name__)
    return RuntimeCompileError(f"{_RUNTIME_NAMES[backend]} cannot compile this network"
                               f"{f' at layer {layer}' if layer else ''}: {summary[:200]}", layer=layer)


def _compile(backend: str, network: nn.Module, state: _NetworkRuntimes, precision: str, threads: int,
             size: tuple[int, int] | None, device: torch.device) -> _CompiledNetwork:
    runtime = _import_runtime(backend)
    if backend == "openvino":
        if size is None and state.openvino_model is not None:
            model = state.openvino_model
        else:
            graph = _graph_for(network, size, device)
            try:
                model = runtime.Core().read_model(graph)
            except Exception as error:  # noqa: BLE001
                raise _compile_failure(backend, error) from None
            if size is None:
                state.openvino_model = model
        config = {"INFERENCE_PRECISION_HINT": _OPENVINO_PRECISIONS[precision], "INFERENCE_NUM_THREADS": threads,
                  "PERFORMANCE_HINT": "LATENCY"}
        try:
            compiled = runtime.Core().compile_model(model, "CPU", config)
        except Exception as error:  # noqa: BLE001
            raise _compile_failure(backend, error) from None
        request = compiled.create_infer_request()
        output = compiled.output(0)

        return lambda batch: request.infer({0: batch})[output].copy()  # the request reuses its output buffer
    options = runtime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    graph = _graph_for(network, size, device)
    try:
        session = runtime.InferenceSession(graph, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001
        raise _compile_failure(backend, error) from None
    return lambda batch: session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]


def _compiled_for(backend: str, network: nn.Module, precision: str, size: tuple[int, int],
                  device: torch.device) -> _CompiledNetwork:
    state = _per_network.get(network)
    version = _weights_version(network)
    if state is None or state.version != version:
        state = _per_network[network] = _NetworkRuntimes(version)
    dynamic = isinstance(network, FullyConvolutionalNet)
    threads = torch.get_num_threads()
    key = (backend, precision, threads, None if dynamic else size)
    compiled = state.compiled.get(key)
    if compiled is None:
        compiled = _compile(backend, network, state, precision, threads, None if dynamic else size, device)
        state.compiled[key] = compiled
        while len(state.compiled) > COMPILED_CACHE_SIZE:
            state.compiled.popitem(last=False)
    state.compiled.move_to_end(key)
    return compiled


def run_on_runtime(backend: str, network: nn.Module, batch: torch.Tensor, precision: str) -> torch.Tensor:
    """``network(batch)`` (``N×3×H×W`` normalised float input) computed by ``backend`` at ``precision``
    (``"fp32"``, ``"bf16"`` or ``"fp16"``): float32 ``N×K×rows×cols`` scores on the CPU."""
    if precision not in runtime_precisions(backend):
        raise OptionError("precision", f"{_RUNTIME_NAMES[backend]} runs {' and '.join(runtime_precisions(backend))} "
                                       f"only, not {precision}; choose precision fp32, or backend openvino or torch")
    compiled = _compiled_for(backend, network, precision, tuple(batch.shape[-2:]), batch.device)
    inputs = np.ascontiguousarray(batch.float().cpu().numpy())
    try:
        scores = compiled(inputs)
    except FcnError:
        raise
    except Exception as error:  # noqa: BLE001 — a shape the compiled graph rejects, an op failing at run time
        raise _compile_failure(backend, error) from None
    return torch.from_numpy(np.asarray(scores, dtype=np.float32))
