"""What segmentation networks scored as whole images share (torchvision's models, the dilated FCN-ResNet).

Their scores are resized to the input bilinearly (a resize whose ratio depends on the input size), so every
output pixel may depend on the whole input: one score per input pixel, no exact tiles, NCHW as torchvision runs
them (so the scores equal torchvision's own).
"""

from __future__ import annotations

from ..geometry import LayerGeometry, ScoreLayout

__all__ = ["WholeImageSegmentation"]


class WholeImageSegmentation:
    """Mixin for an ``nn.Module`` with ``class_names``: categories, the per-pixel layout, never tiled."""

    channels_last = False
    tileable = False  # read by the tiler
    class_names: list[str]

    @property
    def categories(self) -> list[str]:
        return self.class_names

    @property
    def min_input_size(self) -> tuple[int, int]:
        return (1, 1)

    def score_layout(self, input_size: tuple[int, int]) -> ScoreLayout:
        """One score per input pixel; every pixel may depend on the whole input (bilinear resize)."""
        size = (int(input_size[0]), int(input_size[1]))
        return ScoreLayout(LayerGeometry((1, 1), (0.0, 0.0), size), size, (1, 1), (1, 1))
