"""The one entry point from a model name to a scoring network: torchvision, timm or a user's ``module:factory``.

It sits above :mod:`.zoo` and :mod:`.timm_zoo` (each imports only downward), so neither needs to import the other.
"""

from __future__ import annotations

import importlib
import os

from torch import nn

from ..choices import TIMM_PREFIX
from ..contracts import missing_members
from ..errors import OptionError
from .convert import FullyConvolutionalNet, convert_classifier
from .timm_zoo import load_timm_fcn
from .zoo import load_fcn

__all__ = ["load_network"]


def load_network(
    model: str, weights_path: str | os.PathLike | None = None, classes_path: str | os.PathLike | None = None
) -> FullyConvolutionalNet:
    """The converted network named by ``model``: a torchvision architecture, ``timm:NAME`` for a timm CNN
    (:func:`.timm_zoo.load_timm_fcn`), or ``module:callable`` for your own.

    ``"package.module:make_network"`` imports ``package.module`` and calls ``make_network()``; it may
    return a :class:`FullyConvolutionalNet` (used as is) or a classifier that :func:`to_fully_convolutional`
    converts (224×224 input, no normalisation). This is how people run the CLI on their own classifiers, and how
    tests run folders of images through a tiny model in milliseconds.
    """
    if model.startswith(TIMM_PREFIX):
        return load_timm_fcn(model[len(TIMM_PREFIX):], weights_path=weights_path, classes_path=classes_path)
    if ":" not in model:
        return load_fcn(model, weights_path=weights_path, classes_path=classes_path)
    if weights_path is not None:
        raise OptionError("weights", f"cannot be combined with model {model}; the callable loads its own weights")
    module_name, _, attribute = model.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise OptionError("model", f"{model}: cannot import it ({error}); is the module on PYTHONPATH?") from None
    network = factory()
    if isinstance(network, FullyConvolutionalNet):
        missing = missing_members(network)
        if missing:  # a subclass that dropped or never set part of the contract: say so now, not mid-run
            raise OptionError("model", f"{model}: the network has no {', '.join(missing)} (every scoring network "
                                       "provides the members of fcn_app.contracts.ScoringNetwork)")
        return network.eval()
    if isinstance(network, nn.Module):
        return convert_classifier(network, arch=model)
    raise OptionError("model", f"{model}: returned {type(network).__name__}, expected a torch nn.Module")
