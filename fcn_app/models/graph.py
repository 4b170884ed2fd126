"""Exact conversion of graph classifiers (ResNet, ConvNeXt, EfficientNet, DenseNet, …) that end in global pooling.

A classifier whose ``forward`` ends in ``global pool → head`` is a sliding-window classifier in disguise. On the
feature grid ``G×G`` it saw at its training size, the global average is an average over one ``G×G`` window; on a
larger image, a stride-1 ``G×G`` window pool computes that same average at every window position, and the head
(Linear, LayerNorm over channels, activations, Dropout) runs per cell as 1×1 convolutions. Cell ``i`` of the
result is exactly the classifier's head applied to feature cells ``i … i+G−1``.

The body — everything up to the pooled feature map — is cut out of the traced graph with
:func:`torchvision.models.feature_extraction.create_feature_extractor`, so functional ``forward`` code (DenseNet's
``F.relu`` before the pool, residual additions, channel shuffles) is kept exactly as the classifier runs it.

Geometry (stride, centre of cell 0, receptive field) cannot be read off a layer list in a graph, so it is
*measured* (:func:`probe_body_geometry`): a NaN placed on one input row reaches exactly the feature cells whose
receptive field holds that row (NaN survives convolution, pooling, ReLU and additions; zero weights do not stop
it), and a handful of such probes pin down the interval of rows each cell reads.

Squeeze-and-excitation blocks (EfficientNet, MobileNetV3, RegNetY) gate channels by an average over the *whole*
feature map. The conversion stays exact — each cell is the head on its window of the feature map the body
computed for the whole image — but those features depend a little on all of the image, not only on the cell's
receptive field; :attr:`GraphFullyConvolutionalNet.global_context` says so, and the geometry reports the local
receptive field (the probe switches the gates off).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..device import module_device
from ..errors import ConversionError
from ..layers import ELEMENTWISE_LAYERS, LayerGeometry, pair
from .network import FullyConvolutionalNet, grid_linear_layers, linear_to_conv

__all__ = [
    "GraphFullyConvolutionalNet",
    "BodyGeometry",
    "convert_graph_classifier",
    "densify_graph",
    "has_free_window",
    "is_graph_classifier",
    "probe_body_geometry",
    "register_module_kinds",
    "with_window",
]

#: Head modules that act per element or per cell over channels; they run unchanged on every cell of a grid
#: (torchvision's LayerNorm2d too: see _per_cell_modules).
_PER_CELL_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid,
    nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Identity,
)
_PER_CELL_FUNCTIONS = {F.relu: nn.ReLU, torch.relu: nn.ReLU, F.gelu: nn.GELU, F.silu: nn.SiLU, F.hardswish: nn.Hardswish}
_FLATTENING = {torch.flatten, "flatten", "view", "reshape", "squeeze"}
_DROPOUT_FUNCTIONS = {F.dropout}

#: Architectures whose features are not those of their windows; one line each on why.
_REFUSED = {
    "VisionTransformer": "ViT attends from every patch to every other patch and adds learned position embeddings "
                         "of a fixed grid, so its features on a larger image are not those of its windows",
    "SwinTransformer": "Swin attends within windows anchored to the image corner (shifted by a fixed offset), so a "
                       "patch's features change with where the image starts, not only with what it shows",
    "MaxVit": "MaxViT mixes every position through grid attention over the whole image and fixed-size windows, so "
              "its features on a larger image are not those of its windows",
}


#: Measured body geometries by structure (graph code + module repr), shared by every network of that structure.
_GEOMETRY_CACHE: dict[tuple, "BodyGeometry"] = {}


# torchvision is imported on first use, not with this module: VGG16's path never needs it (see .vgg).
def _layer_norm_2d() -> type[nn.Module]:
    from torchvision.models.convnext import LayerNorm2d

    return LayerNorm2d


def _squeeze_excitation() -> type[nn.Module]:
    from torchvision.ops.misc import SqueezeExcitation

    return SqueezeExcitation


#: Other libraries' channel gates computed from an average over the whole feature map (squeeze-and-excitation, like
#: torchvision's SqueezeExcitation): they scale channels and move nothing. They join through
#: :func:`register_module_kinds`.
_EXTRA_GATES: tuple[type[nn.Module], ...] = ()
#: Other libraries' per-cell modules (timm's channels-first LayerNorm …), kept whole when tracing.
_EXTRA_PER_CELL: tuple[type[nn.Module], ...] = ()
#: Other libraries' modules kept whole when tracing (subclasses of torch layers, e.g. timm's Linear).
_EXTRA_LEAVES: tuple[type[nn.Module], ...] = ()


def register_module_kinds(*, per_cell: Sequence[type[nn.Module]] = (), global_gates: Sequence[type[nn.Module]] = (),
                          leaves: Sequence[type[nn.Module]] = ()) -> None:
    """Teach the conversion another library's building blocks (adapters such as :mod:`.timm_zoo` call this).

    ``per_cell``: modules that act on each cell over channels alone; they are traced as one module and may appear
    in a head. ``global_gates``: modules returning ``x`` times a per-channel gate computed from the whole map;
    they mark a network :attr:`~GraphFullyConvolutionalNet.global_context` and are switched off for the probe
    (so both are traced as one module, which keeps their type). ``leaves``: subclasses of torch layers to keep
    whole (a Linear subclass then converts as a Linear).
    """
    global _EXTRA_PER_CELL, _EXTRA_GATES, _EXTRA_LEAVES
    _EXTRA_PER_CELL = tuple(dict.fromkeys((*_EXTRA_PER_CELL, *per_cell)))
    _EXTRA_GATES = tuple(dict.fromkeys((*_EXTRA_GATES, *global_gates)))
    _EXTRA_LEAVES = tuple(dict.fromkeys((*_EXTRA_LEAVES, *leaves)))


def _global_gates() -> tuple[type[nn.Module], ...]:
    return (_squeeze_excitation(), *_EXTRA_GATES)


def _per_cell_modules() -> tuple[type[nn.Module], ...]:
    return (*_PER_CELL_MODULES, _layer_norm_2d(), *_EXTRA_PER_CELL)


def _leaf_modules() -> list[type[nn.Module]]:
    # torchvision's SqueezeExcitation keeps its type through tracing without being a leaf: its graph stays as it was
    return [_layer_norm_2d(), *_EXTRA_PER_CELL, *_EXTRA_GATES, *_EXTRA_LEAVES]


@dataclass(frozen=True)
class BodyGeometry:
    """Stride, centre of feature cell ``(0, 0)`` and receptive field of a body's feature grid, per axis ``(y, x)``."""

    stride: tuple[int, int]
    first_center: tuple[float, float]
    receptive_field: tuple[int, int]


class GraphFullyConvolutionalNet(FullyConvolutionalNet):
    """A :class:`FullyConvolutionalNet` whose ``features`` is a traced graph (residual blocks and the like).

    ``head`` starts with the stride-1 window pool of ``window`` feature cells. Geometry and grid sizes are derived
    from the body itself (:meth:`layer_geometry`, :meth:`output_grid`) and cached, because a graph has no layer
    list to walk. ``global_context`` is true when squeeze-and-excitation gates make every feature depend on the
    whole input (see the module documentation).
    """

    def __init__(self, features: nn.Module, head: nn.Sequential, *, window: tuple[int, int],
                 global_context: bool = False, **kwargs) -> None:
        super().__init__(features, head, **kwargs)
        self.window = (int(window[0]), int(window[1]))
        self.window_dilation = 1  # feature cells between window taps: > 1 after densify_graph
        self.global_context = bool(global_context)
        self._body_geometry: BodyGeometry | None = None
        self._grid_cache: dict[tuple[int, int], tuple[int, int]] = {}
        self._activation_cache: dict[tuple[int, int], int] = {}
        self._meta_body: nn.Module | None = None

    def _shape_body(self) -> nn.Module:
        if self._meta_body is None:
            self._meta_body = copy.deepcopy(self.features).to("meta").eval()
        return self._meta_body

    def feature_grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """The body's feature grid for an input of ``input_size`` (shapes only, computed on the meta device)."""
        key = (int(input_size[0]), int(input_size[1]))
        if key not in self._grid_cache:
            with torch.no_grad():
                try:
                    output = self._shape_body()(torch.empty(1, self._in_channels(), *key, device="meta"))
                    grid = (int(output.shape[2]), int(output.shape[3]))
                except RuntimeError:  # too small for some layer: no cell at all
                    grid = (0, 0)
            self._grid_cache[key] = grid
        return self._grid_cache[key]

    def _in_channels(self) -> int:
        first = next((module for module in self.features.modules() if isinstance(module, nn.Conv2d)), None)
        return first.in_channels if first is not None else 3

    def output_grid(self, input_size: tuple[int, int]) -> tuple[int, int]:
        """Score grid ``(rows, cols)`` for an input of ``input_size``."""
        rows, cols = self.feature_grid(input_size)
        span = [(size - 1) * self.window_dilation + 1 for size in self.window]
        return (max(0, rows - span[0] + 1), max(0, cols - span[1] + 1))

    def body_geometry(self) -> BodyGeometry:
        """The body's measured geometry; probed once per structure (weights do not move cells) and cached."""
        if self._body_geometry is None:
            key = (getattr(self.features, "code", ""), repr(self.features), self._in_channels())
            if key not in _GEOMETRY_CACHE:
                _GEOMETRY_CACHE[key] = probe_body_geometry(self.features, self._in_channels(), self.feature_grid)
            self._body_geometry = _GEOMETRY_CACHE[key]
        return self._body_geometry

    def layer_geometry(self) -> LayerGeometry:
        """Stride, centre of score cell ``(0, 0)`` and receptive field of the score grid (what
        :func:`fcn_app.geometry.network_geometry` reports for this network)."""
        body = self.body_geometry()
        return LayerGeometry(
            stride=body.stride,
            first_center=tuple(body.first_center[axis]
                               + (self.window[axis] - 1) * self.window_dilation / 2 * body.stride[axis]
                               for axis in range(2)),
            receptive_field=tuple(body.receptive_field[axis]
                                  + (self.window[axis] - 1) * self.window_dilation * body.stride[axis]
                                  for axis in range(2)),
        )

    def activation_values(self, input_size: tuple[int, int]) -> int:
        """Largest ``input + output`` element count of any leaf layer for one image (shapes on the meta device;
        traced once per input size: the trace costs about as much as a small network's pass)."""
        key = (int(input_size[0]), int(input_size[1]))
        cache = self.__dict__.setdefault("_activation_cache", {})  # (networks pickled before the cache had none)
        if key not in cache:
            cache[key] = self._traced_activation_values(key)
        return cache[key]

    def _traced_activation_values(self, input_size: tuple[int, int]) -> int:
        peak = 0

        def record(module, inputs, output):
            nonlocal peak
            values = sum(item.numel() for item in inputs if isinstance(item, torch.Tensor))
            if isinstance(output, torch.Tensor):
                values += output.numel()
            peak = max(peak, values)

        body = self._shape_body()
        hooks = [module.register_forward_hook(record) for module in body.modules() if not list(module.children())]
        try:
            with torch.no_grad():
                body(torch.empty(1, self._in_channels(), *input_size, device="meta"))
        except RuntimeError:
            pass
        finally:
            for hook in hooks:
                hook.remove()
        return peak

    def __getstate__(self):  # the meta copy and caches are rebuilt on demand, never pickled or exported
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__.copy()
        state = dict(state)
        state["_meta_body"] = None
        return state


# ---------------------------------------------------------------------------------------------------------------
# tracing and cutting


def _trace(model: nn.Module) -> fx.GraphModule:
    """The whole eval-mode graph of ``model`` (torchvision's tracer, LayerNorm2d kept as one module)."""
    from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

    tracer_kwargs = {"leaf_modules": _leaf_modules()}
    try:
        _, eval_nodes = get_graph_node_names(model, tracer_kwargs=tracer_kwargs)
        return create_feature_extractor(model, return_nodes={eval_nodes[-1]: "out"}, tracer_kwargs=tracer_kwargs)
    except Exception as error:  # noqa: BLE001 — tracing fails in many ways on arbitrary Python forward code
        raise ConversionError(
            f"cannot trace {type(model).__name__}'s forward with torch.fx ({str(error).splitlines()[0][:160]}); "
            "pass features= and head= to to_fully_convolutional() instead"
        ) from None


def _tensor_inputs(node: fx.Node) -> list[fx.Node]:
    return [argument for argument in node.all_input_nodes if argument.op != "get_attr"]


def _global_pool_kind(graph_module: fx.GraphModule, node: fx.Node) -> str | None:
    """``"avg"``/``"max"`` if ``node`` pools the whole spatial grid to one value per channel, else ``None``."""
    if node.op == "call_module":
        module = graph_module.get_submodule(node.target)
        if isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            size = module.output_size
            if size in (1, (1, 1), [1, 1]):
                return "avg" if isinstance(module, nn.AdaptiveAvgPool2d) else "max"
        return None
    if node.op == "call_function" and node.target in (F.adaptive_avg_pool2d, F.adaptive_max_pool2d):
        size = node.args[1] if len(node.args) > 1 else node.kwargs.get("output_size")
        if size in (1, (1, 1), [1, 1]):
            return "avg" if node.target is F.adaptive_avg_pool2d else "max"
        return None
    if node.op in ("call_method", "call_function") and node.target in ("mean", torch.mean):
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if dims is not None and sorted(int(d) % 4 for d in dims) == [2, 3]:
            return "avg"
    return None


def _per_cell_layer(graph_module: fx.GraphModule, node: fx.Node, channels: int) -> tuple[nn.Module | None, int]:
    """The layer computing ``node`` on every cell of an ``N×channels×h×w`` grid (``None``: nothing to do)."""
    if node.op == "call_module":
        module = graph_module.get_submodule(node.target)
        if isinstance(module, nn.Linear):
            return linear_to_conv(module, channels, (1, 1)), module.out_features
        if isinstance(module, nn.Flatten):
            return None, channels
        if isinstance(module, nn.LayerNorm) and tuple(module.normalized_shape) == (channels,):
            norm = _layer_norm_2d()(channels, eps=module.eps, elementwise_affine=module.elementwise_affine)
            norm.load_state_dict(module.state_dict(), assign=True)  # shares nothing: state_dict() tensors are views
            return norm, channels
        if isinstance(module, _per_cell_modules()):
            return copy.deepcopy(module), channels
        if _is_pointwise_conv(module):  # timm's MobileNetV3 head: a 1×1 conv on the pooled vector
            return copy.deepcopy(module), module.out_channels
        raise ConversionError(
            f"cannot run a {type(module).__name__} ({node.target}) of the classifier head per cell; supported are "
            "Linear, 1×1 convolutions, LayerNorm, Flatten, activations and Dropout"
        )
    if node.op == "call_function" and node.target in _PER_CELL_FUNCTIONS:
        return _PER_CELL_FUNCTIONS[node.target](), channels
    if node.op == "call_function" and node.target in _DROPOUT_FUNCTIONS:
        return None, channels  # traced in eval mode: dropout is the identity
    if node.target in _FLATTENING:
        return None, channels
    raise ConversionError(f"cannot run {node.op} {getattr(node.target, '__name__', node.target)!s} of the "
                          "classifier head per cell")


def _is_pointwise_conv(module: nn.Module) -> bool:
    """A 1×1 convolution that maps each cell to itself (no stride, padding or groups): per cell on any grid."""
    return (isinstance(module, nn.Conv2d) and tuple(module.kernel_size) == (1, 1) and tuple(module.stride) == (1, 1)
            and module.padding in (0, (0, 0)) and module.groups == 1)


def _flattened_input(graph_module: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """The ``N×C×h×w`` tensor ``node`` flattens to ``N×(C·h·w)``, or ``None`` if ``node`` is no such flatten:
    ``nn.Flatten()``, ``torch.flatten(x, 1)``, ``x.flatten(1)``, ``x.view(x.size(0), -1)``, ``x.reshape(n, -1)``."""
    if node.op == "call_module":
        module = graph_module.get_submodule(node.target)
        flat = isinstance(module, nn.Flatten) and module.start_dim == 1 and module.end_dim == -1
        return node.args[0] if flat else None
    if not node.args or not isinstance(node.args[0], fx.Node):
        return None
    rest = [*node.args[1:], *node.kwargs.values()]
    if node.target in (torch.flatten, "flatten"):
        start = rest[0] if rest else 0
        end = rest[1] if len(rest) > 1 else -1
        return node.args[0] if (start, end) == (1, -1) else None
    if node.op == "call_method" and node.target in ("view", "reshape"):
        shape = rest[0] if len(rest) == 1 and isinstance(rest[0], (tuple, list)) else rest
        return node.args[0] if len(shape) == 2 and shape[1] == -1 else None
    return None


def _split_head(graph_module: fx.GraphModule) -> tuple[fx.Node, str, list[fx.Node], nn.Module | None]:
    """Walk back from the output to where the head starts: ``(body_output, kind, head_nodes_in_order, grid_pool)``.

    ``kind`` is ``"avg"``/``"max"`` for a global pool (the window is a free parameter) — searched first, so
    ConvNeXt's ``pool → LayerNorm → flatten → Linear`` stays a pooled head — else ``"flatten"`` for a head that
    reads the flattened feature grid (conv features → flatten → Linear layers: the window is the training grid);
    ``grid_pool`` is an adaptive pool to a grid just before that flatten (VGG's ``avgpool``), else ``None``.
    """
    output = next(node for node in graph_module.graph.nodes if node.op == "output")
    result = output.args[0]
    last = next(iter(result.values())) if isinstance(result, dict) else result
    for stop_at_flatten in (False, True):
        node, head = last, []
        while True:
            kind = _global_pool_kind(graph_module, node)
            if kind is not None:
                return _tensor_inputs(node)[0], kind, list(reversed(head)), None
            flattened = _flattened_input(graph_module, node) if stop_at_flatten else None
            if flattened is not None:
                grid_pool = None
                if flattened.op == "call_module" and isinstance(
                        graph_module.get_submodule(flattened.target), (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
                    grid_pool = graph_module.get_submodule(flattened.target)
                    flattened = flattened.args[0]
                return flattened, "flatten", list(reversed(head)), grid_pool
            inputs = _tensor_inputs(node)
            if node.op == "placeholder" or len(inputs) != 1 or len(node.users) > 1:
                break
            head.append(node)
            node = inputs[0]
    raise ConversionError(
        "the classifier does not end in global average/max pooling or a flatten followed by a per-vector head "
        f"(stopped at {node.op} {node.name}), so it has no exact sliding-window form; for another layout pass "
        "features= and head= to to_fully_convolutional()"
    )


def _flattened_head(graph_module: fx.GraphModule, head_nodes: list[fx.Node], grid_pool: nn.Module | None,
                    channels: int, grid: tuple[int, int]) -> tuple[list[nn.Module], int]:
    """``(layers, classes)``: a head reading the flattened ``channels×grid`` features, as convolutions whose first
    one spans the whole grid (:func:`~.convert.grid_linear_layers`); per-value layers before it run on the grid."""
    layers: list[nn.Module] = []
    width, first_done = channels, False
    for node in head_nodes:
        module = graph_module.get_submodule(node.target) if node.op == "call_module" else None
        if not first_done and isinstance(module, nn.Linear):
            layers.extend(grid_linear_layers(module, grid_pool, channels, grid))
            width, first_done = module.out_features, True
            continue
        layer, width = _per_cell_layer(graph_module, node, width)
        if not first_done and layer is not None and not isinstance(layer, ELEMENTWISE_LAYERS):
            raise ConversionError(f"cannot run a {type(layer).__name__} ({node.name}) on the flattened features "
                                  "before the first Linear layer; only per-value layers can stand there")
        if layer is not None:
            layers.append(layer)
    if not first_done:
        raise ConversionError("the classifier head after the flatten has no Linear layer to convert")
    return layers, width


def _cut_body(graph_module: fx.GraphModule, pool_input: fx.Node) -> fx.GraphModule:
    """The sub-graph computing ``pool_input`` from the image, returning that tensor (not a dict)."""
    graph = copy.deepcopy(graph_module.graph)
    by_name = {node.name: node for node in graph.nodes}
    output = next(node for node in graph.nodes if node.op == "output")
    graph.erase_node(output)
    graph.output(by_name[pool_input.name])
    body = fx.GraphModule(graph_module, graph)
    body.graph.eliminate_dead_code()
    body.recompile()
    body.delete_all_unused_submodules()
    return body


def _refusal(model: nn.Module) -> str | None:
    for cls in type(model).__mro__:
        if cls.__name__ in _REFUSED:
            return _REFUSED[cls.__name__]
    return None


def is_graph_classifier(model: nn.Module) -> bool:
    """False for the layouts the layer-list conversion describes exactly — ``nn.Sequential`` and VGG/AlexNet-style
    ``features → adaptive pool to a grid → classifier`` — true for everything else (traced as a graph)."""
    if isinstance(model, nn.Sequential):
        return False
    pool = getattr(model, "avgpool", None)
    pooled_to_grid = isinstance(pool, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and \
        pool.output_size not in (1, (1, 1), [1, 1])
    return not (hasattr(model, "features") and hasattr(model, "classifier") and pooled_to_grid)


@torch.no_grad()
def convert_graph_classifier(
    model: nn.Module,
    *,
    input_size: int | tuple[int, int] = 224,
    in_channels: int = 3,
    categories: Sequence[str] | None = None,
    arch: str | None = None,
    mean: Sequence[float] = (0.0, 0.0, 0.0),
    std: Sequence[float] = (1.0, 1.0, 1.0),
) -> GraphFullyConvolutionalNet:
    """Convert a classifier ending in global pooling + head into an exactly equivalent sliding-window network.

    ``input_size`` is the size the classifier was trained on; the window pool covers the feature grid the body
    produces at that size. The model is copied, never modified. Raises :class:`ConversionError` (one line) for
    architectures without an exact sliding-window form.
    """
    refusal = _refusal(model)
    if refusal is not None:
        raise ConversionError(f"cannot convert {type(model).__name__} exactly: {refusal}")
    input_size = (input_size, input_size) if isinstance(input_size, int) else (int(input_size[0]), int(input_size[1]))
    was_training = model.training
    model.eval()  # trace the inference path (no auxiliary heads, dropout off)
    try:
        graph_module = _trace(model)
    finally:
        model.train(was_training)
    pool_input, kind, head_nodes, grid_pool = _split_head(graph_module)
    body = _cut_body(graph_module, pool_input).eval()

    device = module_device(body)
    parameter = next(iter(body.parameters()), None)
    try:
        if device.type == "meta":
            probe = body(torch.empty(1, in_channels, *input_size, device="meta"))
        else:
            probe = body(torch.zeros(1, in_channels, *input_size, device=device,
                                     dtype=parameter.dtype if parameter is not None else torch.float32))
    except RuntimeError as error:
        raise ConversionError(f"the classifier cannot run on a {in_channels}×{input_size[0]}×{input_size[1]} input "
                              f"({str(error).splitlines()[0][:160]})") from None
    channels, window = int(probe.shape[1]), (int(probe.shape[2]), int(probe.shape[3]))
    if kind == "flatten":
        layers, width = _flattened_head(graph_module, head_nodes, grid_pool, channels, window)
    else:
        layers = [nn.AvgPool2d(window, stride=1) if kind == "avg" else nn.MaxPool2d(window, stride=1)]
        width = channels
        for node in head_nodes:
            layer, width = _per_cell_layer(graph_module, node, width)
            if layer is not None:
                layers.append(layer)
    global_context = any(isinstance(module, _global_gates()) for module in body.modules())
    network = GraphFullyConvolutionalNet(
        body, nn.Sequential(*layers), window=window, global_context=global_context, input_size=input_size,
        num_classes=width, categories=categories, arch=arch or type(model).__name__.lower(), mean=mean, std=std,
    )
    return network.eval()


# ---------------------------------------------------------------------------------------------------------------
# geometry probe


def _without_global_gates(body: nn.Module) -> nn.Module:
    """A copy of ``body`` with squeeze-and-excitation gates removed (they scale channels, they move nothing)."""
    probe = copy.deepcopy(body)
    for name, module in list(probe.named_modules()):
        if isinstance(module, _global_gates()):
            parent_name, _, child = name.rpartition(".")
            setattr(probe.get_submodule(parent_name) if parent_name else probe, child, nn.Identity())
    return probe.eval()


def _axis_stride(grid_of, axis: int, other: int) -> int:
    sizes = [1024, 2048]
    cells = []
    for size in sizes:
        shape = [0, 0]
        shape[axis], shape[1 - axis] = size, other
        cells.append(grid_of(tuple(shape))[axis])
    span = cells[1] - cells[0]
    if span <= 0 or (sizes[1] - sizes[0]) % span:
        raise ConversionError(f"cannot derive a whole-pixel stride of the feature grid along axis {axis}")
    return (sizes[1] - sizes[0]) // span


def _smallest_side(grid_of, axis: int) -> int:
    """Smallest extent along ``axis`` that still gives one feature cell (keeps the probe cheap)."""
    side = 1
    while True:
        shape = [4096, 4096]
        shape[axis] = side
        if grid_of(tuple(shape))[axis] >= 1:
            return side
        side *= 2
        if side > 4096:
            raise ConversionError("the feature extractor yields no cell even for 4096-pixel inputs")


class _AxisProbe:
    """NaN rows (or columns) on thin images: which feature cells along ``axis`` each probed row reaches."""

    def __init__(self, body: nn.Module, in_channels: int, axis: int, thin: int) -> None:
        self.device = module_device(body)
        self.body, self.in_channels, self.axis, self.thin = body, in_channels, axis, thin

    @torch.no_grad()
    def reach(self, length: int, rows: Sequence[int]) -> list[tuple[int, int, int]]:
        """For each row: ``(first cell reached, last cell reached, cells)``; ``-1`` when none is reached."""
        batch = torch.zeros(len(rows), self.in_channels, length, self.thin, device=self.device)
        for index, row in enumerate(rows):
            batch[index, :, row, :] = float("nan")
        if self.axis == 1:
            batch = batch.transpose(2, 3)
        output = self.body(batch)
        if self.axis == 1:
            output = output.transpose(2, 3)
        reached = torch.isnan(output).flatten(3).any(dim=3).any(dim=1).cpu()
        results = []
        for row in reached:
            cells = row.nonzero().flatten()
            if len(cells) and int(cells[-1] - cells[0]) + 1 != len(cells):
                raise ConversionError(f"feature cells along axis {self.axis} read input rows that are not one interval")
            results.append((int(cells[0]) if len(cells) else -1, int(cells[-1]) if len(cells) else -1, len(row)))
        return results


def _probe_axis(body: nn.Module, in_channels: int, axis: int, stride: int, thin: int) -> tuple[float, int]:
    """``(first_center, receptive_field)`` of the feature grid along ``axis``, from NaN-row probes.

    With ``top``/``bottom`` the last/first input row that feature cell 0 reads (unclipped by the image), a NaN on
    row ``p`` reaches cells ``ceil((p − top)/s) … floor((p − bottom)/s)``. One probe narrows each unknown to ``s``
    candidates; bisection on the probe row finds it exactly in ``log2(s)`` more passes.
    """
    probe = _AxisProbe(body, in_channels, axis, thin)
    length = 4 * stride
    while True:  # an image long enough that neither end of the reached run is clipped by the grid
        # the middle row: the last rows may reach no cell at all (a strided first layer without padding drops them)
        row = length // 2
        ((first, last, cells),) = probe.reach(length, [row])
        if first >= 1 and 0 <= last < cells - 1:
            break
        length *= 2
        if length > 16384:
            raise ConversionError(f"the receptive field along axis {axis} exceeds 8192 pixels; cannot measure it")
    top_range = [row - stride * first, row - stride * first + stride - 1]
    bottom_range = [row - stride * last - stride + 1, row - stride * last]
    length += 4 * stride
    while top_range[0] < top_range[1] or bottom_range[0] < bottom_range[1]:
        top_mid = (top_range[0] + top_range[1]) // 2
        bottom_mid = (bottom_range[0] + bottom_range[1]) // 2
        top_row = top_mid + 1 + stride  # reaches cell 2 if top ≤ top_mid, else cell 1
        bottom_row = bottom_mid + stride * max(1, math.ceil(-bottom_mid / stride))  # reaches k if bottom ≤ mid
        (first, _, _), (_, last, cells) = probe.reach(length, [top_row, bottom_row])
        if first < 1 or not 0 <= last < cells - 1:
            raise ConversionError(f"the feature grid along axis {axis} does not move with a stride of {stride}")
        if first == 2:
            top_range[1] = top_mid
        else:
            top_range[0] = top_mid + 1
        if last == (bottom_row - bottom_mid) // stride:
            bottom_range[1] = bottom_mid
        else:
            bottom_range[0] = bottom_mid + 1
    top, bottom = top_range[0], bottom_range[0]
    # one more pass checks the derived interval on rows the bisection never used
    rows = [length // 2 + offset for offset in (0, stride // 3, stride - 1)]
    for row, (first, last, cells) in zip(rows, probe.reach(length, rows)):
        if (first, last) != (max(0, math.ceil((row - top) / stride)), min(cells - 1, (row - bottom) // stride)):
            raise ConversionError(f"feature cells along axis {axis} do not read equal, evenly spaced intervals")
    return (top + bottom) / 2, top - bottom + 1


def probe_body_geometry(body: nn.Module, in_channels: int, grid_of) -> BodyGeometry:
    """Stride, centre of feature cell ``(0, 0)`` and receptive field of a graph ``body``, measured exactly.

    ``grid_of(size)`` gives the body's feature grid for an input size (shapes only). Strides come from how the grid
    grows; the centre and field come from NaN probes on thin images (one cell wide across the other axis), with
    squeeze-and-excitation gates removed so that only the local receptive field is measured.
    """
    probe = _without_global_gates(body)
    strides, centers, fields = [], [], []
    for axis in range(2):
        other = _smallest_side(grid_of, 1 - axis)
        stride = _axis_stride(grid_of, axis, other)
        center, field = _probe_axis(probe, in_channels, axis, stride, other)
        strides.append(stride)
        centers.append(center)
        fields.append(field)
    return BodyGeometry(tuple(strides), tuple(centers), tuple(fields))


def has_free_window(network: nn.Module) -> bool:
    """True for a network converted from a classifier ending in global pooling: its first head layer is the window
    pool, so the window is free (:func:`with_window`) and one feature cell can be scored alone (``cam``)."""
    return isinstance(network, GraphFullyConvolutionalNet) and isinstance(network.head[0], (nn.AvgPool2d, nn.MaxPool2d))


def with_window(network: GraphFullyConvolutionalNet, window: int | tuple[int, int]) -> GraphFullyConvolutionalNet:
    """``network`` pooling ``window`` feature cells per score cell instead of its training window (shares weights).

    Only the window pool changes; body and head are the same modules. ``window = 1`` scores every feature cell on
    its own — class activation mapping (Zhou et al. 2016) — finer maps for localisation; larger windows see more
    context. Geometry follows (:meth:`GraphFullyConvolutionalNet.layer_geometry` reads ``window``).
    """
    size = (window, window) if isinstance(window, int) else (int(window[0]), int(window[1]))
    if min(size) < 1:
        raise ConversionError(f"window {size} must be at least one feature cell")
    if not has_free_window(network):
        raise ConversionError(f"{network.arch} has no free window size: only classifiers "
                              "ending in global pooling (ResNet, ConvNeXt, EfficientNet, …) have one")
    replacement = type(network.head[0])(size, stride=1)
    changed = copy.copy(network)  # shallow: modules and weights shared, caches fresh
    changed._modules = dict(network._modules)
    changed.head = nn.Sequential(replacement, *list(network.head)[1:])
    changed.window = size
    changed.input_size = tuple(
        network.input_size[axis] + (size[axis] - network.window[axis]) * network.body_geometry().stride[axis]
        for axis in range(2)
    )
    changed._grid_cache = dict(network._grid_cache)
    return changed


class DilatedAvgPool2d(nn.Module):
    """Stride-1 average over a ``kernel`` window whose taps are ``dilation`` cells apart (a dense grid's window)."""

    def __init__(self, kernel_size: tuple[int, int], dilation: tuple[int, int]) -> None:
        super().__init__()
        self.kernel_size, self.dilation = tuple(kernel_size), tuple(dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = x.new_full((x.shape[1], 1, *self.kernel_size), 1.0 / (self.kernel_size[0] * self.kernel_size[1]))
        return F.conv2d(x, weight, dilation=self.dilation, groups=x.shape[1])


def _module_strides(body: nn.Module, in_channels: int) -> dict[str, tuple[int, int]]:
    """``name → (input stride, output stride)`` of every conv/pool of ``body`` (meta-device pass, no compute)."""
    shapes_only = copy.deepcopy(body).to("meta")
    length = 4096
    found: dict[str, tuple[int, int]] = {}

    def recorder(name):
        def record(module, inputs, output):
            found[name] = (round(length / inputs[0].shape[-2]), round(length / output.shape[-2]))
        return record

    hooks = [module.register_forward_hook(recorder(name)) for name, module in shapes_only.named_modules()
             if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d))]
    try:
        with torch.no_grad():
            shapes_only(torch.empty(1, in_channels, length, length, device="meta"))
    finally:
        for hook in hooks:
            hook.remove()
    return found


def densify_graph(network: GraphFullyConvolutionalNet, stride: int) -> GraphFullyConvolutionalNet:
    """A copy of graph ``network`` with output stride ``stride`` (a power-of-two divisor of the native one).

    Filter rarefaction, as torchvision's ``replace_stride_with_dilation``: every layer that down-samples past
    ``stride`` keeps its input resolution (stride 1), and every layer reading a grid that is now finer than it was
    built for is dilated (and padded) by the ratio; the window pool too. Cells at multiples of ``native/stride``
    reproduce the native map exactly. Squeeze-and-excitation networks are refused: their gates would average a
    different (denser) grid.
    """
    native = network.body_geometry().stride
    if native[0] != native[1]:
        raise ConversionError(f"denser maps need the same stride along both axes, this network has {native}")
    native = native[0]
    if stride == native:
        return network
    if stride < 1 or native % stride or (native // stride) & (native // stride - 1):
        raise ConversionError(f"output stride {stride} is not reachable for this network (native stride {native}); "
                              f"choose {native} divided by a power of two")
    if network.global_context:
        raise ConversionError(f"{network.arch} gates channels by averages over the whole feature grid "
                              "(squeeze-and-excitation); on a denser grid those averages change, so a denser "
                              "stride would not be exact")
    dense = copy.deepcopy(network)
    dense._grid_cache, dense._body_geometry, dense._meta_body = {}, None, None
    dense._activation_cache = {}
    for name, (stride_in, stride_out) in _module_strides(network.features, network._in_channels()).items():
        module = dense.features.get_submodule(name)
        physical_in, physical_out = min(stride_in, stride), min(stride_out, stride)
        factor = stride_in // physical_in
        step = physical_out // physical_in
        if factor == 1 and step == stride_out // stride_in:
            continue
        kernel = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
        if isinstance(module, nn.AvgPool2d) and factor > 1 and kernel != (1, 1):
            raise ConversionError(f"cannot densify through the average pool {name} at stride {stride}: it has no "
                                  "dilated form; choose a coarser stride")
        if isinstance(module, nn.MaxPool2d) and factor > 1 and module.padding not in (0, (0, 0)):
            raise ConversionError(f"cannot densify through the padded max pool {name} at stride {stride}: PyTorch "
                                  "pads dilated max pools by at most half the kernel; choose a coarser stride")
        module.stride = (step, step) if isinstance(module, nn.Conv2d) else step
        if factor > 1 and kernel != (1, 1):
            padding = module.padding if isinstance(module.padding, tuple) else (module.padding,) * 2
            dilation = module.dilation if isinstance(module.dilation, tuple) else (module.dilation,) * 2
            if isinstance(module.padding, str):
                raise ConversionError(f"cannot densify {name}: padding={module.padding!r}")
            module.padding = (padding[0] * factor, padding[1] * factor)
            module.dilation = (dilation[0] * factor, dilation[1] * factor)
    factor = native // stride
    dense.head = nn.Sequential(*(_dilated_window_layer(layer, factor) for layer in dense.head))
    dense.window_dilation = factor
    return dense


def _dilated_window_layer(layer: nn.Module, factor: int) -> nn.Module:
    """``layer`` of a head reading its window on a grid ``factor`` times denser: window pools and convolutions
    spanning more than one cell take every ``factor``-th cell; 1×1 layers are unchanged."""
    if isinstance(layer, nn.AvgPool2d):
        return DilatedAvgPool2d(pair(layer.kernel_size), (factor, factor))
    if isinstance(layer, nn.MaxPool2d):
        dilation = pair(layer.dilation)
        return nn.MaxPool2d(layer.kernel_size, stride=1, dilation=(dilation[0] * factor, dilation[1] * factor))
    if isinstance(layer, nn.Conv2d) and tuple(layer.kernel_size) != (1, 1):
        layer.dilation = (layer.dilation[0] * factor, layer.dilation[1] * factor)
    return layer
