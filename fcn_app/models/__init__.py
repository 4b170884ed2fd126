"""Models: building classifiers, loading their weights, and converting them to fully convolutional networks."""

from .convert import FullyConvolutionalNet, linear_to_conv, split_classifier, to_fully_convolutional
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
    read_state_dict,
    safe_torch_load,
)

__all__ = [
    "DEFAULT_ARCH",
    "OFFLINE_ENV",
    "SUPPORTED_ARCHS",
    "WEIGHTS_ENV",
    "FullyConvolutionalNet",
    "build_classifier",
    "cached_weights_path",
    "default_weights",
    "fetch_default_weights",
    "linear_to_conv",
    "load_classifier",
    "load_fcn",
    "load_network",
    "read_state_dict",
    "safe_torch_load",
    "split_classifier",
    "to_fully_convolutional",
]
