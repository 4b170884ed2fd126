"""A tiny network no runtime but torch can run (``--model helpers_runtimes:unexportable_fcn``): its first
activation is digamma, which the ONNX exporter does not support."""

from __future__ import annotations

import torch
from torch import nn

from helpers_batch import tiny_fcn


class DigammaActivation(nn.ReLU):
    """``digamma(|x| + 1)``: defined everywhere, elementwise (a ReLU subclass, so geometry treats it as the
    activation it is), and not exportable to ONNX (opset 17)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.digamma(x.abs() + 1.0)


def unexportable_fcn():
    """``tiny_fcn`` whose layer ``features.1`` (the first ReLU) is :class:`DigammaActivation`."""
    network = tiny_fcn()
    network.features[1] = DigammaActivation()
    return network
