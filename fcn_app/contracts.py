"""What a scoring network provides: the contract the pipeline reads, written down once.

Every network the package scores — a converted classifier (:class:`fcn_app.models.FullyConvolutionalNet` and its
graph and densified forms), a segmentation FCN, a torchvision or dilated-ResNet segmentation model — implements
:class:`ScoringNetwork` explicitly; scoring, geometry, tiling, the runtimes and the tasks read these members as
plain attributes, never probe for them. A user's ``module:factory`` network is checked against it when loaded
(:func:`missing_members`), so a missing member is one clear error there rather than a traceback mid-run.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

    from .layers import ScoreLayout

__all__ = ["SCORING_MEMBERS", "ScoringNetwork", "missing_members"]


class ScoringNetwork(Protocol):
    """A network that maps a batch of normalised images ``N×3×H×W`` to score maps ``N×K×h×w``."""

    arch: str
    """A short name for messages and summaries (``"vgg16"``, ``"timm:resnet50"``, ``"torchvision:fcn_resnet50"``)."""

    categories: list[str]
    """The ``K`` class names, in the order of the score channels."""

    num_classes: int
    """``K``, the number of score channels (``len(categories)``)."""

    mean: tuple[float, ...]
    """Per-channel mean subtracted from pixels scaled to [0, 1] before the network sees them (normalisation)."""

    std: tuple[float, ...]
    """Per-channel standard deviation the centred pixels are divided by (normalisation)."""

    channels_last: bool
    """Whether batches are given channels-last (``True``, fastest on CPUs for convolutions) or NCHW."""

    tileable: bool
    """Whether a tile of the input computes the cells it covers as the whole input would (``False``: scores are
    resized over the whole input, so the input is always scored in one pass)."""

    global_context: bool
    """Whether some feature depends on the whole input (squeeze-and-excitation gates): tiles are then close to, not
    exactly, the whole-input scores, and the tiler says so."""

    @property
    def min_input_size(self) -> tuple[int, int]:
        """``(height, width)`` smaller inputs are padded to (a classifier's window; one pixel for per-pixel models)."""
        ...

    @property
    def training_size(self) -> tuple[int, int]:
        """``(height, width)`` the weights were trained at: the unit of the default working size of a photo."""
        ...

    def score_layout(self, input_size: tuple[int, int]) -> ScoreLayout:
        """The score grid for an input of ``input_size``, where its cells sit and how tiles must be aligned."""
        ...

    def activation_values(self, input_size: tuple[int, int]) -> int:
        """Peak number of activation values alive during one image's pass (the tiler's memory estimate)."""
        ...

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Score maps for a batch of normalised images."""
        ...


def _members() -> tuple[str, ...]:
    attributes = [name for name in ScoringNetwork.__annotations__]
    methods = [name for name, value in vars(ScoringNetwork).items()
               if (callable(value) or isinstance(value, property)) and (name == "__call__" or not name.startswith("_"))]
    return tuple(dict.fromkeys(attributes + methods))


#: Every member of :class:`ScoringNetwork`, attributes first (``typing.get_protocol_members`` needs Python 3.13).
SCORING_MEMBERS: tuple[str, ...] = _members()


def missing_members(network: object, members: Sequence[str] = SCORING_MEMBERS) -> list[str]:
    """The members of :class:`ScoringNetwork` that ``network`` lacks (empty when it implements the contract).

    This is the one place that asks whether an attribute exists: where a network comes from outside the package.
    """
    return [name for name in members if not hasattr(network, name)]
