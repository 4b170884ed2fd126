"""Models: building classifiers, loading their weights, and converting them to fully convolutional networks."""

from .convert import FullyConvolutionalNet, linear_to_conv, split_classifier, to_fully_convolutional
from .preprocess import normalize_pixels
from .zoo import (
    DEFAULT_ARCH,
    OFFLINE_ENV,
    SUPPORTED_ARCHS,
    TINY_ARCH,
    WEIGHTS_ENV,
    build_classifier,
    build_fcn,
    cached_weights_path,
    default_weights,
    fetch_default_weights,
    load_classifier,
    load_fcn,
    load_network,
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
    "build_classifier",
    "build_fcn",
    "cached_weights_path",
    "default_weights",
    "fetch_default_weights",
    "linear_to_conv",
    "load_classifier",
    "load_fcn",
    "load_network",
    "normalize_pixels",
    "read_state_dict",
    "resolve_weights_path",
    "safe_torch_load",
    "split_classifier",
    "tiny_vgg_classifier",
    "to_fully_convolutional",
]
