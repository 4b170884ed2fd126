"""Non-square training sizes and windows: every score cell is the classifier's own pool + head on its feature window.

Every other conversion test trains at a square size, so a window of ``(h, h)`` written where ``(h, w)`` belongs would
pass them all. Here the training size is 40×56 (80×56 where an adaptive pool folds 2×1 bins) and the free windows
are 1×3, 3×1 and 2×5. The second path never touches the converted modules: the classifier's own feature extractor
on the image, sliced into the feature window of each cell, through the classifier's own pool and head; the window
itself is read off the classifier's feature map at its training size.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fcn_app.dense import densify
from fcn_app.geometry import network_geometry, output_grid_size
from fcn_app.models import to_fully_convolutional
from fcn_app.models.graph import GraphFullyConvolutionalNet, with_window

pytestmark = pytest.mark.usefixtures("one_thread")  # shared machines: one torch thread

TRAINING_SIZE = (40, 56)
#: An image larger than the training size by a different number of feature cells along each axis.
IMAGE_SIZE = (40 + 28, 56 + 36)
#: float32 summation order differs (a window pool or one big convolution where the classifier pools then multiplies),
#: so the absolute tolerance is relative to the largest score compared.
RTOL, ATOL_SCALE = 1e-4, 1e-5


def assert_same_scores(actual: torch.Tensor, expected: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=ATOL_SCALE * float(expected.abs().max()))


class ResidualNet(nn.Module):
    """A user's graph classifier: stride-4 body with a residual addition, global pooling, a Linear head.

    Body geometry by hand (3×3 convolutions padded by 1 keep cell centres on pixel ``stride·a``): stride 4, centre of
    feature cell ``a`` at pixel ``4·a``; receptive field ``1 + 2·1 + 2·1 + 2·2 + 2·2 = 13`` pixels (each 3×3 layer
    adds two of its input cells; the residual path never reads further than the convolution beside it).
    """

    STRIDE, FIRST_CENTER, RECEPTIVE_FIELD = 4, 0.0, 13

    def __init__(self, pool: nn.Module, num_classes: int = 6) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.down = nn.Conv2d(8, 8, 3, stride=2, padding=1)
        self.block = nn.Conv2d(8, 8, 3, padding=1)
        self.down_again = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.pool = pool
        self.fc = nn.Linear(16, 12)
        self.out = nn.Linear(12, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.down(F.relu(self.stem(x))))
        x = x + F.relu(self.block(x))
        return F.relu(self.down_again(x))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.out(F.relu(self.fc(torch.flatten(self.pool(features), 1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def residual_net(pool: str, seed: int = 0) -> ResidualNet:
    torch.manual_seed(seed)
    return ResidualNet(nn.AdaptiveAvgPool2d(1) if pool == "avg" else nn.AdaptiveMaxPool2d(1)).eval()


def training_window(features_of, training_size: tuple[int, int]) -> tuple[int, int]:
    """The feature grid the classifier pools at its training size: one cell's window, read off the classifier."""
    with torch.no_grad():
        return tuple(features_of(torch.zeros(1, 3, *training_size)).shape[2:])


def head_on_windows(head, features: torch.Tensor, window: tuple[int, int], dilation: int = 1) -> torch.Tensor:
    """``N×K×rows×cols``: ``head`` on every ``window`` of ``features`` (taps ``dilation`` cells apart), per cell."""
    span = [(size - 1) * dilation + 1 for size in window]
    rows, cols = features.shape[2] - span[0] + 1, features.shape[3] - span[1] + 1
    assert rows >= 2 and cols >= 2
    with torch.no_grad():
        cells = [[head(features[:, :, row:row + span[0]:dilation, col:col + span[1]:dilation]) for col in range(cols)]
                 for row in range(rows)]
    return torch.stack([torch.stack(row, dim=-1) for row in cells], dim=-2)


def expected_layer_geometry(window: tuple[int, int], stride: int = ResidualNet.STRIDE) -> tuple[tuple, tuple]:
    """First centre and receptive field of the score grid, per axis, from the hand-derived body geometry."""
    centers = tuple(ResidualNet.FIRST_CENTER + (size - 1) / 2 * stride for size in window)
    fields = tuple(ResidualNet.RECEPTIVE_FIELD + (size - 1) * stride for size in window)
    return centers, fields


@pytest.mark.parametrize("pool", ["avg", "max"])
def test_a_graph_classifier_trained_on_a_non_square_size_converts_exactly(pool):
    model = residual_net(pool)
    network = to_fully_convolutional(model, input_size=TRAINING_SIZE)
    assert isinstance(network, GraphFullyConvolutionalNet)
    window = training_window(model.forward_features, TRAINING_SIZE)
    assert window == (10, 14)
    assert network.window == window and network.input_size == TRAINING_SIZE
    torch.manual_seed(1)
    crops = torch.randn(2, 3, *TRAINING_SIZE)
    image = torch.randn(1, 3, *IMAGE_SIZE)
    with torch.no_grad():
        cells = network(crops)
        assert cells.shape[2:] == (1, 1)
        assert_same_scores(cells[:, :, 0, 0], model(crops))
        scores = network(image)
        expected = head_on_windows(model.forward_head, model.forward_features(image), window)
    assert tuple(scores.shape[2:]) == output_grid_size(network, IMAGE_SIZE) == (8, 10)
    assert_same_scores(scores, expected)
    geometry = network_geometry(network)
    assert geometry.stride == (4, 4)
    assert (geometry.first_center, geometry.receptive_field) == expected_layer_geometry(window)


@pytest.mark.parametrize("pool", ["avg", "max"])
@pytest.mark.parametrize("window", [(1, 3), (3, 1), (2, 5)])
def test_a_non_square_free_window_pools_that_many_feature_cells_per_axis(pool, window):
    model = residual_net(pool)
    network = with_window(to_fully_convolutional(model, input_size=TRAINING_SIZE), window)
    assert network.window == window
    # the window in pixels grows or shrinks by whole feature cells along each axis on its own
    assert network.input_size == tuple(TRAINING_SIZE[axis] + (window[axis] - (10, 14)[axis]) * 4 for axis in range(2))
    torch.manual_seed(2)
    image = torch.randn(1, 3, *IMAGE_SIZE)
    with torch.no_grad():
        scores = network(image)
        expected = head_on_windows(model.forward_head, model.forward_features(image), window)
    assert tuple(scores.shape[2:]) == output_grid_size(network, IMAGE_SIZE) == tuple(expected.shape[2:])
    assert_same_scores(scores, expected)
    geometry = network_geometry(network)
    assert (geometry.first_center, geometry.receptive_field) == expected_layer_geometry(window)


def test_a_dense_non_square_window_reads_every_other_feature_cell_per_axis():
    """At output stride 2 the window pool's taps are 2 cells apart, over the (10, 14) training window."""
    model = residual_net("avg")
    network = to_fully_convolutional(model, input_size=TRAINING_SIZE)
    dense = densify(network, 2)
    torch.manual_seed(3)
    image = torch.randn(1, 3, 52, 72)
    with torch.no_grad():
        scores = dense(image)
        # the body at stride 2: the classifier's own layers with the last down-sampling undone and the layer after
        # it dilated, as filter rarefaction prescribes (written out here, not taken from the dense network)
        x = F.relu(model.down(F.relu(model.stem(image))))
        x = x + F.relu(model.block(x))
        features = F.relu(F.conv2d(x, model.down_again.weight, model.down_again.bias, stride=1, padding=1))
        expected = head_on_windows(model.forward_head, features, (10, 14), dilation=2)
    assert tuple(scores.shape[2:]) == output_grid_size(dense, (52, 72)) == tuple(expected.shape[2:])
    assert_same_scores(scores, expected)


def vgg_style_sequential(pool: nn.Module, pooled: tuple[int, int], seed: int = 0) -> nn.Sequential:
    """A small VGG-style ``nn.Sequential`` (stride 8): conv blocks, ``pool``, Flatten, Linear/ReLU/Dropout head."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        pool, nn.Flatten(),
        nn.Linear(16 * pooled[0] * pooled[1], 24), nn.ReLU(), nn.Dropout(0.2), nn.Linear(24, 5),
    ).eval()


class VggStyle(nn.Module):
    """torchvision's VGG layout with a non-square adaptive pool: ``features → avgpool → flatten → classifier``."""

    def __init__(self, pool: nn.Module, pooled: tuple[int, int]) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.features = vgg_style_sequential(nn.Identity(), (1, 1))[:9]
        self.avgpool = pool
        self.classifier = nn.Sequential(nn.Linear(16 * pooled[0] * pooled[1], 24), nn.ReLU(), nn.Dropout(0.3),
                                        nn.Linear(24, 5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


#: (pool between features and head, what it pools to, training size): no pool; global pools, folded into a (5, 7)
#: kernel or a (5, 7) max window; a (5, 7) adaptive pool over the (10, 7) grid of an 80×56 crop: 2×1 bins.
SEQUENTIAL_CASES = {
    "no-pool": (nn.Identity, (5, 7), (40, 56)),
    "global-avg": (lambda: nn.AdaptiveAvgPool2d(1), (1, 1), (40, 56)),
    "global-max": (lambda: nn.AdaptiveMaxPool2d(1), (1, 1), (40, 56)),
    "avg-2x1-bins": (lambda: nn.AdaptiveAvgPool2d((5, 7)), (5, 7), (80, 56)),
    "max-2x1-bins": (lambda: nn.AdaptiveMaxPool2d((5, 7)), (5, 7), (80, 56)),
}


@pytest.mark.parametrize("layout", ["sequential", "vgg"])
@pytest.mark.parametrize("case", list(SEQUENTIAL_CASES))
def test_a_layer_list_classifier_trained_on_a_non_square_size_converts_exactly(layout, case):
    make_pool, pooled, training_size = SEQUENTIAL_CASES[case]
    if layout == "sequential":
        model = vgg_style_sequential(make_pool(), pooled)
        features, head = model[:9], model[9:]
    else:
        model = VggStyle(make_pool(), pooled).eval()
        features = model.features

        def head(window):
            return model.classifier(torch.flatten(model.avgpool(window), 1))
    network = to_fully_convolutional(model, input_size=training_size)
    window = training_window(features, training_size)
    assert window == (training_size[0] // 8, training_size[1] // 8)
    torch.manual_seed(4)
    crops = torch.randn(2, 3, *training_size)
    image_size = (training_size[0] + 24, training_size[1] + 40)
    image = torch.randn(1, 3, *image_size)
    with torch.no_grad():
        assert_same_scores(network(crops).flatten(1), model(crops))
        scores = network(image)
        expected = head_on_windows(head, features(image), window)
    assert tuple(scores.shape[2:]) == output_grid_size(network, image_size) == (4, 6)
    assert_same_scores(scores, expected)
    assert network.input_size == training_size
    geometry = network_geometry(network)
    # three 2×2 pools after 3×3 convolutions padded by 1: feature cell a is centred at 8·a + 3.5
    assert geometry.first_center == tuple(3.5 + (size - 1) / 2 * 8 for size in window)
