"""Models: building classifiers, loading their weights, and converting them to fully convolutional networks."""

from .convert import FullyConvolutionalNet, convert_classifier, linear_to_conv, split_classifier, to_fully_convolutional
from .preprocess import normalize_pixels
from .graph import GraphFullyConvolutionalNet, densify_graph, with_window
from .loading import load_network
from .zoo import (
    DEFAULT_ARCH,
    OFFLINE_ENV,
    TINY_ARCH,
    WEIGHTS_ENV,
    build_classifier,
    build_fcn,
    cached_weights_path,
    default_weights,
    fetch_default_weights,
    load_classifier,
    load_fcn,
    read_class_names,
    read_state_dict,
    resolve_weights_path,
    safe_torch_load,
    tiny_vgg_classifier,
)

__all__ = [
    "DEFAULT_ARCH",
    "OFFLINE_ENV",
    "SUPPORTED_ARCHS",
    "TINY_ARCH",
    "WEIGHTS_ENV",
    "FullyConvolutionalNet",
    "GraphFullyConvolutionalNet",
    "build_classifier",
    "build_fcn",
    "cached_weights_path",
    "convert_classifier",
    "default_weights",
    "densify_graph",
    "fetch_default_weights",
    "linear_to_conv",
    "load_classifier",
    "load_fcn",
    "load_network",
    "normalize_pixels",
    "read_class_names",
    "read_state_dict",
    "resolve_weights_path",
    "safe_torch_load",
    "split_classifier",
    "tiny_vgg_classifier",
    "to_fully_convolutional",
    "with_window",
]


def __getattr__(name: str):
    if name == "SUPPORTED_ARCHS":  # listing torchvision's models imports torchvision: done on first use
        return zoo.SUPPORTED_ARCHS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
