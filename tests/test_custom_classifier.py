"""The README's "your own classifier" recipe on classifiers written as users write them: a plain ``nn.Module`` with
its own ``forward`` — conv features, a flatten (method, function, module or ``view``), Linear/ReLU/Dropout layers.

Every converted cell is compared with a second, independent path: the model's *own* head modules applied to the
flattened window of the model's *own* feature map (sliced by hand), at non-square training sizes and windows.
The slow test trains such a module on scikit-learn's digits and checks that its converted heatmaps find digits
in scenes, as the ``nn.Sequential`` classifier of tests/test_detect_digits.py does.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fcn_app.dense import densify
from fcn_app.errors import ConversionError
from fcn_app.geometry import network_geometry
from fcn_app.models import to_fully_convolutional
from fcn_app.models.graph import densify_graph, with_window

FLATTENS = ("method", "function", "module", "view")


class Net(nn.Module):
    """The issue's classifier, verbatim but for the spelling of the flatten: features → flatten → Linear head."""

    def __init__(self, flatten: str = "method", grid: tuple[int, int] = (8, 8), classes: int = 11) -> None:
        super().__init__()
        self.flatten_spelling = flatten
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                                      nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(16 * grid[0] * grid[1], 32), nn.ReLU(), nn.Dropout(0.3),
                                        nn.Linear(32, classes))
        self.flat = nn.Flatten()

    def flattened(self, feature_map: torch.Tensor) -> torch.Tensor:
        if self.flatten_spelling == "method":
            return feature_map.flatten(1)
        if self.flatten_spelling == "function":
            return torch.flatten(feature_map, 1)
        if self.flatten_spelling == "module":
            return self.flat(feature_map)
        return feature_map.view(feature_map.size(0), -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flattened(self.features(x)))


class Renamed(nn.Module):
    """Other attribute names, a functional ReLU and Dropout in the head, an adaptive pool to a grid before it."""

    def __init__(self, pool: nn.Module | None = None, grid: tuple[int, int] = (3, 5)) -> None:
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
                                   nn.Conv2d(6, 12, (3, 5), padding=(1, 2)), nn.ReLU(), nn.MaxPool2d((2, 3)))
        self.squeeze = pool
        self.fc_a = nn.Linear(12 * grid[0] * grid[1], 20)
        self.fc_b = nn.Linear(20, 7)

    def features_of(self, x: torch.Tensor) -> torch.Tensor:
        x = self.trunk(x)
        return self.squeeze(x) if self.squeeze is not None else x

    def head_of(self, flat: torch.Tensor) -> torch.Tensor:
        return self.fc_b(nn.functional.dropout(torch.relu(self.fc_a(flat)), 0.2, self.training))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head_of(torch.flatten(self.features_of(x), 1))


def _seeded(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.3)
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.randn(module.num_features, generator=generator) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return model.eval()


def _close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float rounding: rtol 1e-4 and an absolute floor of 1e-5 × the largest |score| compared
    (different kernels — a conv over the grid vs a Linear over the flattened window — round differently)."""
    scale = float(expected.abs().max())
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * max(scale, 1.0))


def _head_on_windows(features: torch.Tensor, window: tuple[int, int], head) -> torch.Tensor:
    """The second path: ``head(flatten(window))`` for every ``window``-sized slice of ``features``, by hand."""
    rows, cols = features.shape[2] - window[0] + 1, features.shape[3] - window[1] + 1
    cells = torch.stack([torch.stack([head(features[:, :, i:i + window[0], j:j + window[1]].flatten(1))
                                      for j in range(cols)], dim=-1) for i in range(rows)], dim=-2)
    return cells


@pytest.mark.parametrize("flatten", FLATTENS)
def test_the_issues_classifier_converts_exactly_with_every_flatten(flatten):
    """``to_fully_convolutional(Net(), input_size=(32, 40))``: at the training size the converted network gives the
    classifier's logits; on a larger non-square image every cell is the classifier's head on its feature window."""
    model = _seeded(Net(flatten, grid=(8, 10)), seed=FLATTENS.index(flatten))
    network = to_fully_convolutional(model, input_size=(32, 40), categories=[f"c{k}" for k in range(11)])
    with torch.no_grad():
        crops = torch.randn(3, 3, 32, 40, generator=torch.Generator().manual_seed(1))
        _close(network(crops).flatten(1), model(crops))
        image = torch.randn(2, 3, 53, 87, generator=torch.Generator().manual_seed(2))
        scores = network(image)
        expected = _head_on_windows(model.features(image), (8, 10), model.classifier)
    assert scores.shape == (2, 11, 13 - 8 + 1, 21 - 10 + 1)
    _close(scores, expected)
    assert network.categories == [f"c{k}" for k in range(11)]
    geometry = network_geometry(network)  # two 2×2 pools: stride 4; the window is the 32×40 training crop
    assert geometry.stride == (4, 4)
    assert geometry.first_center == (15.5, 19.5)


def test_the_readme_recipe_on_the_issues_classifier():
    """The README's call, verbatim: ``to_fully_convolutional(my_classifier, input_size=32, categories=names)``."""
    names = [str(digit) for digit in range(10)] + ["background"]
    model = _seeded(Net(), seed=5)
    network = to_fully_convolutional(model, input_size=32, categories=names)
    with torch.no_grad():
        crops = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
        _close(network(crops).flatten(1), model(crops))
        image = torch.randn(1, 3, 70, 45, generator=torch.Generator().manual_seed(4))
        _close(network(image), _head_on_windows(model.features(image), (8, 8), model.classifier))
    assert model.training is False and network.training is False


@pytest.mark.parametrize("pool", [None, "avg-identity", "avg-fold", "max-fold"])
def test_other_attribute_names_functional_head_and_grid_pools(pool):
    """``trunk``/``squeeze``/``fc_a``/``fc_b``, ``torch.relu`` and ``F.dropout`` in ``forward``, non-square kernels
    and pools, and an adaptive pool to a grid before the flatten: identity at the training size (dropped), an
    average folded into the kernel, or a max pool (stride-1 max pool + dilated kernel)."""
    training = (24, 60)  # trunk: ÷2 then ÷(2, 3) → a 6×10 grid
    pools = {None: None, "avg-identity": nn.AdaptiveAvgPool2d((6, 10)), "avg-fold": nn.AdaptiveAvgPool2d((3, 5)),
             "max-fold": nn.AdaptiveMaxPool2d((3, 5))}
    grid = (6, 10) if pool in (None, "avg-identity") else (3, 5)
    model = _seeded(Renamed(pools[pool], grid=grid), seed=7)
    network = to_fully_convolutional(model, input_size=training)
    with torch.no_grad():
        crops = torch.randn(2, 3, *training, generator=torch.Generator().manual_seed(8))
        _close(network(crops).flatten(1), model(crops))
        image = torch.randn(1, 3, 41, 131, generator=torch.Generator().manual_seed(9))

        def head(flat_window: torch.Tensor) -> torch.Tensor:  # the model's pool + head on a 6×10 feature window
            window = flat_window.view(1, 12, 6, 10)
            pooled = model.squeeze(window) if model.squeeze is not None else window
            return model.head_of(pooled.flatten(1))

        expected = _head_on_windows(model.trunk(image), (6, 10), head)
        _close(network(image), expected)


def test_features_and_head_keywords_still_convert_the_same_model():
    """With ``features=``/``head=`` (the layer-list path) the same classifier gives the same cells."""
    model = _seeded(Net(grid=(8, 10)), seed=11)
    by_keywords = to_fully_convolutional(features=model.features, head=model.classifier, input_size=(32, 40))
    by_model = to_fully_convolutional(model, input_size=(32, 40))
    image = torch.randn(1, 3, 61, 77, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        _close(by_model(image), by_keywords(image))
    assert network_geometry(by_model) == network_geometry(by_keywords)


def test_denser_output_reproduces_the_native_cells():
    """Filter rarefaction through a flatten head: the first convolution spans the grid, so it is dilated; even
    cells of the stride-2 map are the stride-4 map (non-square window 8×10)."""
    model = _seeded(Net("function", grid=(8, 10)), seed=13)
    network = to_fully_convolutional(model, input_size=(32, 40))
    dense = densify(network, stride=2)
    image = torch.randn(1, 3, 57, 83, generator=torch.Generator().manual_seed(14))
    with torch.no_grad():
        native, fine = network(image), dense(image)
    rows, cols = native.shape[-2:]
    assert fine.shape[-2] >= 2 * rows - 1 and fine.shape[-1] >= 2 * cols - 1
    _close(fine[..., :2 * rows - 1:2, :2 * cols - 1:2], native)
    assert network_geometry(dense).stride == (2, 2)
    assert densify_graph(network, 4) is network


def test_a_flatten_head_has_no_free_window():
    """Only a global pool makes the window free; a flatten head's window is the training grid: one clear error."""
    network = to_fully_convolutional(_seeded(Net(), seed=15), input_size=32)
    with pytest.raises(ConversionError, match="no free window size"):
        with_window(network, 1)


def test_a_flatten_that_is_not_per_image_is_refused():
    """``torch.flatten(x)`` (batch folded in) has no per-window form: refused in one line, naming the way out."""

    class FoldsTheBatch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4 * 6 * 6, 2)

        def forward(self, x):
            return self.fc(torch.flatten(self.body(x)))

    with pytest.raises(ConversionError, match="features= and head="):
        to_fully_convolutional(FoldsTheBatch(), input_size=8)


class DigitNet(nn.Module):
    """tests/helpers_detect.py's digit classifier written as users write it: named blocks and its own forward."""

    def __init__(self) -> None:
        super().__init__()

        def block(inputs: int, outputs: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(inputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU(),
                                 nn.MaxPool2d(2))

        self.block1, self.block2, self.block3 = block(3, 12), block(12, 24), block(24, 32)
        self.hidden = nn.Linear(32 * 4 * 4, 64)
        self.scores = nn.Linear(64, 11)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(x)))
        return self.scores(torch.relu(self.hidden(x.flatten(1))))


@pytest.mark.slow  # trains a classifier (~15 s) and detects digits in 36 scenes
def test_a_plain_module_trained_on_digits_finds_them():
    """Trained here on scikit-learn's digits, converted with the README's recipe, densified to stride 4: the
    heatmaps turned into boxes find held-out digits in three independent scene draws — the same bar as the
    ``nn.Sequential`` classifier (tests/test_detect_digits.py: mean AP50 ≥ 0.85, every draw ≥ 0.8)."""
    from helpers_detect import CATEGORIES, RECIPE_STRIDE, WINDOW, scene_draw_metrics, train_digit_classifier

    model = train_digit_classifier(seed=0, make_model=DigitNet)
    network = densify(to_fully_convolutional(model, input_size=WINDOW, categories=CATEGORIES), stride=RECIPE_STRIDE)
    ap50 = {seed: scene_draw_metrics(network, seed)["AP50"] for seed in (1, 2, 3)}
    assert sum(ap50.values()) / len(ap50) >= 0.85, ap50
    assert min(ap50.values()) >= 0.8, ap50
