"""What segmentation networks scored as whole images share (torchvision's models, the dilated FCN-ResNet).

Their scores are resized to the input bilinearly (a resize whose ratio depends on the input size), so every
output pixel may depend on the whole input: one score per input pixel, no exact tiles, NCHW as torchvision runs
them (so the scores equal torchvision's own).
"""

from __future__ import annotations

from ..geometry import LayerGeometry, ScoreLayout

__all__ = ["SegmentationNetwork", "WholeImageSegmentation"]


class SegmentationNetwork:
    """Mixin for a segmentation ``nn.Module`` with ``class_names``: the traits of
    :class:`fcn_app.contracts.ScoringNetwork` every segmentation model shares (one score per input pixel)."""

    channels_last = False  # scored in NCHW, as torchvision and the reference run them
    tileable = True
    global_context = False
    class_names: list[str]

    @property
    def categories(self) -> list[str]:
        return self.class_names

    @property
    def min_input_size(self) -> tuple[int, int]:
        """Any input of at least one pixel."""
        return (1, 1)

    @property
    def training_size(self) -> tuple[int, int]:
        """A per-pixel model has no window: the working size of a photo is counted in pixels."""
        return self.min_input_size


class WholeImageSegmentation(SegmentationNetwork):
    """Mixin for an ``nn.Module`` with ``class_names``: categories, the per-pixel layout, never tiled."""

    tileable = False  # scores are resized over the whole input: no tile computes what the whole input does
    num_classes: int

    def activation_values(self, input_size: tuple[int, int]) -> int:
        """The input and the full-resolution score maps: a lower bound (never tiled, so never budgeted by it)."""
        return (3 + self.num_classes) * int(input_size[0]) * int(input_size[1])

    def score_layout(self, input_size: tuple[int, int]) -> ScoreLayout:
        """One score per input pixel; every pixel may depend on the whole input (bilinear resize)."""
        size = (int(input_size[0]), int(input_size[1]))
        return ScoreLayout(LayerGeometry((1, 1), (0.0, 0.0), size), size, (1, 1), (1, 1))
