"""The layer vocabulary shared by conversion, geometry and densification (the bottom of the data flow).

- :func:`pair` reads PyTorch's ``int | (int, int)`` layer arguments;
- :data:`ELEMENTWISE_LAYERS` act on each value alone: they run unchanged on a grid of any size (so a classifier
  head made of them and Linear layers converts exactly), and they leave the geometry of a map unchanged.
"""

from __future__ import annotations

from torch import nn

__all__ = ["ELEMENTWISE_LAYERS", "pair"]

#: Layers that act on every value alone (activations, dropout, identity).
ELEMENTWISE_LAYERS = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish, nn.Hardsigmoid,
    nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Dropout2d, nn.Identity,
)


def pair(value):
    """``(y, x)`` of a layer argument given as one value or a pair (``None`` entries, as in adaptive pools, kept)."""
    return (value[0], value[1]) if isinstance(value, (tuple, list)) else (value, value)
