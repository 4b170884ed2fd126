"""Tiny classifiers for the heatmap-method tests: one ending in Flatten → Linear (``helpers_batch:tiny_fcn``) and
one ending in global average pooling (``helpers_methods:tiny_pooled_fcn``, a VGG-GAP in miniature), which has a
free window and so a ``cam`` map."""

from __future__ import annotations

import torch
from torch import nn

from fcn_app.models.graph import convert_graph_classifier

POOLED_CATEGORIES = ["tabby cat", "tiger cat", "dog", "rocket"]


def tiny_pooled_classifier(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, len(POOLED_CATEGORIES)),
    ).eval()


def tiny_pooled_fcn():
    """:func:`tiny_pooled_classifier` converted on the graph path: a 32-px window of 8×8 feature cells."""
    return convert_graph_classifier(tiny_pooled_classifier(), input_size=32, categories=POOLED_CATEGORIES,
                                    mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
