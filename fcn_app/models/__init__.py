"""Models: building classifiers, loading their weights, and converting them to fully convolutional networks."""

from .convert import FullyConvolutionalNet, linear_to_conv, split_classifier, to_fully_convolutional
from .graph import GraphFullyConvolutionalNet, convert_classifier, densify_graph, with_window
from .zoo import (
    DEFAULT_ARCH,
    OFFLINE_ENV,
    SUPPORTED_ARCHS,
    WEIGHTS_ENV,
    build_classifier,
    cached_weights_path,
    default_weights,
    fetch_default_weights,
    load_classifier,
    load_fcn,
    load_network,
    read_class_names,
    read_state_dict,
    safe_torch_load,
)

__all__ = [
    "DEFAULT_ARCH",
    "OFFLINE_ENV",
    "SUPPORTED_ARCHS",
    "WEIGHTS_ENV",
    "FullyConvolutionalNet",
    "GraphFullyConvolutionalNet",
    "build_classifier",
    "cached_weights_path",
    "convert_classifier",
    "default_weights",
    "densify_graph",
    "fetch_default_weights",
    "linear_to_conv",
    "load_classifier",
    "load_fcn",
    "load_network",
    "read_class_names",
    "read_state_dict",
    "safe_torch_load",
    "split_classifier",
    "to_fully_convolutional",
    "with_window",
]
