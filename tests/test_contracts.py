"""The network contract (:class:`fcn_app.contracts.ScoringNetwork`): every kind of network the package builds
provides each member, and a user's ``module:factory`` network that lacks one is refused in one line at load time."""

from __future__ import annotations

import typing

import pytest
import torch
from torch import nn
from torchvision.models.segmentation import FCN_ResNet50_Weights, fcn_resnet50

from fcn_app.contracts import SCORING_MEMBERS, ScoringNetwork, missing_members
from fcn_app.dense import densify
from fcn_app.errors import OptionError
from fcn_app.models import convert_classifier, load_network, to_fully_convolutional
from fcn_app.segmentation.models import build_segmentation_model
from fcn_app.segmentation.pretrained import TorchvisionSegmentation
from fcn_app.segmentation.resnet import DilatedResNetFCN

from helpers import tiny_classifier
from helpers_batch import tiny_fcn
from helpers_cli import assert_one_line_error, run_fcn


class _TinyResidual(nn.Module):
    """A classifier with a skip connection and global pooling: converted by tracing (a graph network)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.block = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 4)

    def forward(self, images):
        features = torch.relu(self.stem(images))
        features = features + self.block(features)
        return self.fc(torch.flatten(self.pool(features), 1))


def _converted():
    return to_fully_convolutional(tiny_classifier(), input_size=32)


def _graph():
    torch.manual_seed(0)
    return convert_classifier(_TinyResidual().eval(), input_size=16)


def _torchvision_segmentation():
    with torch.device("meta"):  # the structure only: no weights read or computed
        model = fcn_resnet50(weights=None, weights_backbone=None, aux_loss=False, num_classes=21)
    return TorchvisionSegmentation(model, "fcn_resnet50", FCN_ResNet50_Weights.DEFAULT)


def _dilated_resnet():
    with torch.device("meta"):
        return DilatedResNetFCN("resnet50", 3, pretrained=False)


NETWORKS = {
    "converted classifier": _converted,
    "graph classifier": _graph,
    "densified classifier": lambda: densify(_converted(), 4),
    "densified graph classifier": lambda: densify(_graph(), 1),
    "segmentation FCN-8s": lambda: build_segmentation_model("fcn8s", 3, backbone="tiny_vgg", pretrained=False),
    "dilated ResNet FCN": _dilated_resnet,
    "torchvision segmentation": _torchvision_segmentation,
}


def test_the_member_list_is_the_protocols():
    get_members = getattr(typing, "get_protocol_members", None)  # Python 3.13+
    if get_members is not None:
        assert set(SCORING_MEMBERS) == set(get_members(ScoringNetwork))
    assert {"arch", "categories", "mean", "std", "min_input_size", "training_size", "score_layout", "tileable",
            "channels_last", "global_context", "activation_values"} <= set(SCORING_MEMBERS)
    for name in SCORING_MEMBERS:  # each member says what it means
        member = vars(ScoringNetwork).get(name)
        assert member is None or member.__doc__, name


@pytest.mark.parametrize("kind", list(NETWORKS))
def test_every_network_kind_provides_the_whole_contract(kind):
    network = NETWORKS[kind]()
    assert missing_members(network) == []
    assert len(network.categories) == network.num_classes
    assert len(network.mean) == len(network.std) == 3
    assert isinstance(network.arch, str) and network.arch
    for trait in ("channels_last", "tileable", "global_context"):
        assert isinstance(getattr(network, trait), bool), trait
    height, width = network.min_input_size
    assert height >= 1 and width >= 1 and min(network.training_size) >= 1


@pytest.mark.parametrize("kind", ["converted classifier", "graph classifier", "segmentation FCN-8s"])
def test_a_layout_and_a_memory_estimate_for_any_size(kind):
    network = NETWORKS[kind]()
    size = (64, 80)
    layout = network.score_layout(size)
    with torch.no_grad():
        scores = network.eval()(torch.zeros(1, 3, *size))
    assert tuple(scores.shape[-2:]) == layout.grid
    assert network.activation_values(size) > 0


def network_without_categories():
    """A ``module:factory`` network from a subclass that dropped part of the contract."""
    network = tiny_fcn()
    del network.categories
    return network


def test_a_user_network_without_a_member_is_refused_when_loaded():
    with pytest.raises(OptionError, match="has no categories") as refused:
        load_network("test_contracts:network_without_categories")
    assert refused.value.option == "model"


@pytest.mark.slow
def test_the_command_names_the_missing_member_in_one_line(tmp_path):
    result = run_fcn("examples/coffee.jpg", "--model", "test_contracts:network_without_categories",
                     "--out", tmp_path / "out.png")
    assert_one_line_error(result, 2, "has no categories")
