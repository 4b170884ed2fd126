"""``scripts/bench_crop_verdict.py`` (the README's figure of how far a cell is from classifying its crop) runs, at a
tiny size, and compares what it says it compares: at the training size the one cell IS the classifier on the whole
image (gap ~0, same top-1); on a larger image every cell gets a crop inside the image."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from fcn_app.models import to_fully_convolutional

from helpers import random_rgb, tiny_classifier

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from bench_crop_verdict import crop_verdict_gap  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny():
    classifier = tiny_classifier(num_classes=5, seed=3).eval()  # 32×32 crops, stride 8, Flatten → Linear head
    return classifier, to_fully_convolutional(classifier, input_size=32).eval()


def test_at_the_training_size_the_one_cell_is_the_classifier(tiny):
    gap = crop_verdict_gap(*tiny, random_rgb(32, 32, seed=1))
    assert gap.cells == 1 and gap.agreements == 1
    assert gap.relative_gaps[0] <= 1e-5  # relative to the largest logit: summation order only


def test_every_cell_of_a_non_square_image_is_compared_with_its_crop(tiny):
    gap = crop_verdict_gap(*tiny, random_rgb(48, 72, seed=2))
    assert gap.cells == (48 // 8 - 3) * (72 // 8 - 3)  # stride 8, 4 feature cells per window
    assert len(gap.relative_gaps) == gap.cells and 0 <= gap.agreements <= gap.cells
    assert all(value >= 0 and torch.isfinite(torch.tensor(value)) for value in gap.relative_gaps)
    assert max(gap.relative_gaps) > 1e-3  # padding 1 convs: cells away from the border see their neighbours


def test_an_image_smaller_than_the_window_is_refused(tiny):
    with pytest.raises(ValueError, match="smaller than the window"):
        crop_verdict_gap(*tiny, random_rgb(20, 40, seed=3))
