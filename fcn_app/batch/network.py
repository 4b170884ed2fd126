"""Choosing the network of a run: a torchvision architecture name, or ``module:callable`` for your own.

``--model package.module:make_network`` imports ``package.module`` and calls ``make_network()``; it may return a
:class:`~fcn_app.models.FullyConvolutionalNet` (used as is) or a classifier that
:func:`~fcn_app.models.to_fully_convolutional` converts (224×224 input, no normalisation). This is how people run
the CLI on their own classifiers, and how tests run folders of images through a tiny model in milliseconds.
"""

from __future__ import annotations

import importlib
import os

from torch import nn

from ..errors import WeightsError
from ..models import FullyConvolutionalNet, load_fcn, to_fully_convolutional

__all__ = ["load_network"]


def load_network(model: str, weights_path: str | os.PathLike | None = None) -> FullyConvolutionalNet:
    """The converted network named by ``model`` (an architecture, or ``module:callable``)."""
    if ":" not in model:
        return load_fcn(model, weights_path=weights_path)
    if weights_path is not None:
        raise ValueError(f"--weights cannot be combined with --model {model}; the callable loads its own weights")
    module_name, _, attribute = model.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise WeightsError(f"--model {model}: cannot import it ({error}); is the module on PYTHONPATH?") from None
    network = factory()
    if isinstance(network, FullyConvolutionalNet):
        return network.eval()
    if isinstance(network, nn.Module):
        return to_fully_convolutional(network, arch=model)
    raise WeightsError(f"--model {model}: returned {type(network).__name__}, expected a torch nn.Module")
