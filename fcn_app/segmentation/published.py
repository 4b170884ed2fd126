"""The figures a known model's authors published, to print next to what ``evaluate`` measures.

Published, not reproduced here: this project's tests never have the datasets or the real weights. A figure is
shown only where it means something next to the measurement — the FCN paper's models on the split they were
scored on (PASCAL VOC 2011 ``seg11valid``), torchvision's models always, labelled with the set they were scored on
(COCO val2017 in the VOC classes), which is not the dataset being evaluated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .reference import PUBLISHED_MEAN_IU, REFERENCE_SPLIT

__all__ = ["published_scores"]


def published_scores(checkpoint: dict[str, Any], split: str | None) -> dict[str, Any] | None:
    """``{"mean_iu": …, ["pixel_accuracy": …,] "on": "where"}`` (fractions, like the measured scores) for the model
    ``checkpoint`` describes, evaluated on ``split``; ``None`` when nothing comparable was published."""
    torchvision = checkpoint.get("published")
    if isinstance(torchvision, dict) and "miou" in torchvision:
        scores = {"mean_iu": torchvision["miou"] / 100.0}
        if "pixel_acc" in torchvision:
            scores["pixel_accuracy"] = torchvision["pixel_acc"] / 100.0
        return {**scores, "on": "COCO val2017 in VOC classes (torchvision), not this dataset"}
    variant = (checkpoint.get("imported_from") or {}).get("reference")
    if variant in PUBLISHED_MEAN_IU and split is not None and Path(split).stem == REFERENCE_SPLIT:
        return {"mean_iu": PUBLISHED_MEAN_IU[variant] / 100.0,
                "on": f"PASCAL VOC 2011 {REFERENCE_SPLIT} (Shelhamer, Long & Darrell, PAMI 2017)"}
    return None
