"""The vocabulary of the options: names, defaults and the checks of values that need no model.

Everything here is plain Python (no torch, numpy or OpenCV), so the command line can declare its options, show
``--help`` and refuse a misspelt value before anything heavy is imported (``scripts/bench_startup.py``). The
library modules that use these names re-export them where they always lived (``fcn_app.methods.METHODS``,
``fcn_app.runtimes.BACKENDS``, …).
"""

from __future__ import annotations

import os

from .errors import OptionError
from .method_registry import METHODS as METHOD_REGISTRY
from .method_registry import get_method

__all__ = [
    "BACKENDS",
    "BACKEND_INSTALL_HINTS",
    "CAM",
    "COLORMAP_NAMES",
    "DEFAULT_ARCH",
    "DEFAULT_COLORMAP",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_METHODS",
    "DEFAULT_OPSET",
    "DEFAULT_WORK_WINDOWS",
    "EXPORT_FORMATS",
    "FCN",
    "FUSE_MODES",
    "IMAGE_EXTENSIONS",
    "IMAGE_FORMATS",
    "INSTALL_HINT",
    "METHODS",
    "NATIVE",
    "NORMALIZE_MODES",
    "PRECISIONS",
    "TIMM_PREFIX",
    "TINY_ARCH",
    "check_backend",
    "check_colormap",
    "check_image_format",
    "check_method",
    "check_normalize",
    "check_precision",
    "check_work_size",
    "default_num_workers",
    "usable_cpus",
    "default_work_size",
]

#: The classifier every command uses unless ``--model`` names another.
DEFAULT_ARCH = "vgg16"
#: A VGG-shaped classifier for 32×32 inputs, for CPU smoke runs and tests (no pretrained weights exist).
TINY_ARCH = "tiny_vgg"
#: ``--model timm:NAME``: a timm CNN (optional extra, :mod:`fcn_app.models.timm_zoo`).
TIMM_PREFIX = "timm:"

FCN = "fcn"
CAM = "cam"
#: Every ``--method`` name (:data:`fcn_app.method_registry.METHODS` says what each one is and needs).
METHODS = tuple(METHOD_REGISTRY)
INSTALL_HINT = METHOD_REGISTRY["gradcam"].install_hint
#: ``fcn-heatmap compare``'s methods when none are named, less what the model or the installation cannot run
#: (:func:`fcn_app.method_plan.default_methods`: no ``cam`` for VGG16). Score-CAM is left to be asked for: it runs
#: the network once per channel of the target layer, minutes on a CPU.
DEFAULT_METHODS = ("fcn", "cam", "gradcam", "gradcam++")

#: Runtimes a network can be scored on; ``auto`` picks one per command (:func:`fcn_app.runtimes.resolve_backend`).
#: Always ``("auto", *fcn_app.runtimes.RUNTIMES)``, hints included (tests/test_runtime_registry.py): spelt out
#: here so that ``--help`` needs no torch.
BACKENDS = ("auto", "torch", "openvino", "onnxruntime")
#: How to install each optional runtime.
BACKEND_INSTALL_HINTS = {"openvino": "pip install 'fcn-heatmap[openvino]'",
                         "onnxruntime": "pip install 'fcn-heatmap[onnx]'"}
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: File names that count as images (a folder's other files are passed over).
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
#: Refuse images with more pixels than this (about 17k × 17k) unless the caller raises the limit.
DEFAULT_MAX_PIXELS = 300_000_000
#: Picture formats for overlays and grids (also their file extensions).
IMAGE_FORMATS = ("png", "jpg", "webp")
#: ``work_size`` value for "no resizing: the network sees the image at its own size".
NATIVE = "native"
#: Default working size as a multiple of the model's window (longer side); chosen by scripts/bench_scale.py.
DEFAULT_WORK_WINDOWS = 4
#: How pyramid levels can be fused per pixel.
FUSE_MODES = ("max", "mean")
#: OpenCV colormaps offered for heatmaps (``cv2.COLORMAP_<NAME>``), in the order ``--help`` lists them.
COLORMAP_NAMES = ("turbo", "jet", "inferno", "magma", "viridis", "plasma", "hot", "bone")
DEFAULT_COLORMAP = "turbo"
#: How a class map becomes colours (:func:`fcn_app.render.normalize_heat`): ``none`` colours probabilities 0 → 1
#: (comparable across classes and images), ``peak`` spans 0 → the map's peak, ``minmax`` its minimum → its maximum.
NORMALIZE_MODES = ("none", "peak", "minmax")

EXPORT_FORMATS = ("onnx",)
DEFAULT_OPSET = 17


def check_method(method: str) -> str:
    """``method`` normalised (``"GradCAM++"`` → ``"gradcam++"``), or :class:`OptionError` listing the methods
    (:func:`~fcn_app.method_registry.get_method`)."""
    return get_method(method).name


def check_backend(backend: str) -> str:
    """``backend`` if it is one of :data:`BACKENDS`, else :class:`~fcn_app.errors.OptionError`."""
    if backend not in BACKENDS:
        raise OptionError("backend", f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    return backend


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else :class:`~fcn_app.errors.OptionError`."""
    if precision not in PRECISIONS:
        raise OptionError("precision", f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    return precision


def check_colormap(colormap: str) -> str:
    """``colormap`` if it names one of :data:`COLORMAP_NAMES`, else :class:`~fcn_app.errors.OptionError`."""
    if colormap not in COLORMAP_NAMES:
        raise OptionError("colormap", f"unknown colormap {colormap!r}; choose one of {', '.join(COLORMAP_NAMES)}")
    return colormap


def check_image_format(value: str) -> str:
    """``value`` as one of :data:`IMAGE_FORMATS` (``jpeg`` is ``jpg``), else :class:`~fcn_app.errors.OptionError`."""
    image_format = str(value).strip().lower()
    image_format = "jpg" if image_format == "jpeg" else image_format
    if image_format not in IMAGE_FORMATS:
        raise OptionError("image_format", f"unknown picture format {value!r}; choose one of "
                                          f"{', '.join(IMAGE_FORMATS)}")
    return image_format


def check_work_size(value: int | str | None) -> int | str | None:
    """``--work-size``: ``None``, :data:`NATIVE` or a positive number of pixels (digits accepted), else
    :class:`~fcn_app.errors.OptionError`."""
    if value is None or value == NATIVE:
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        if text == NATIVE:
            return NATIVE
        if not text.isdigit():
            raise OptionError("work_size", f"{value!r} is neither a number of pixels (the longer side, e.g. 896) "
                                           f"nor {NATIVE!r}")
        value = int(text)
    if isinstance(value, bool) or not isinstance(value, int):
        raise OptionError("work_size", f"must be a number of pixels or {NATIVE!r}, got {value!r}")
    if value < 1:
        raise OptionError("work_size", f"must be at least 1 pixel, got {value}")
    return value


def default_work_size(window: int | tuple[int, int], windows: float = DEFAULT_WORK_WINDOWS) -> int:
    """Longer side in pixels of the default working size for a model whose window is ``window`` pixels."""
    side = max(window) if isinstance(window, tuple) else window
    return max(1, round(windows * side))


def check_normalize(value: str | bool) -> str:
    """``value`` as one of :data:`NORMALIZE_MODES` (case and spaces ignored), else
    :class:`~fcn_app.errors.OptionError`. ``True``/``False`` (the option was a flag: colours span 0 → the peak) read
    as ``peak``/``none``."""
    if isinstance(value, bool):
        return "peak" if value else "none"
    mode = str(value).strip().lower()
    if mode not in NORMALIZE_MODES:
        raise OptionError("normalize", f"unknown value {value!r}; choose {', '.join(NORMALIZE_MODES[:-1])} or "
                                       f"{NORMALIZE_MODES[-1]} (peak is what the former on/off switch did)")
    return mode


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one, else every CPU)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def default_num_workers() -> int:
    """One decode process per two usable CPUs, at most 2: decoding rarely needs more, and the model wants the rest
    (on a 2-core machine a second decoder pre-empts the model's threads more than it helps: scripts/bench_batch.py)."""
    return min(2, max(1, usable_cpus() // 2))
