"""Self-describing segmentation checkpoints, written atomically and read with ``weights_only=True``.

A checkpoint is a dict of plain data (str/int/float/bool/None, lists, dicts) and tensors only, so the safe
loader accepts it: ``format``, ``model_config`` (enough to rebuild the network), ``class_names``, ``model``
(state dict), and for resuming ``optimizer``, ``scaler``, ``iteration``, ``history``, ``best_mean_iu`` and
``rng`` (generator states as uint8 tensors). The resolved training config is saved next to the run, not here.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import WeightsError
from ..io import atomic_write_bytes
from ..models.zoo import safe_torch_load
from .models import SegmentationFCN, build_segmentation_model
from .pretrained import TORCHVISION_PREFIX, load_torchvision_segmentation

__all__ = ["CHECKPOINT_FORMAT", "load_checkpoint", "load_segmentation_model", "save_checkpoint"]

CHECKPOINT_FORMAT = "fcn-heatmap-segmentation/1"


def save_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Serialise ``payload`` in memory and write it atomically (a crash never leaves a truncated checkpoint)."""
    buffer = io.BytesIO()
    torch.save(dict(payload, format=CHECKPOINT_FORMAT), buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: code in a pickle is refused)."""
    path = Path(path)
    payload = safe_torch_load(path, "checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise WeightsError(
            f"{path}: not a segmentation checkpoint of fcn-heatmap (written by `fcn-heatmap train`); for a "
            "classifier's weights, load them as a classifier's weights file instead"
        )
    return payload


def load_segmentation_model(
    path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[SegmentationFCN, list[str], dict[str, Any]]:
    """Rebuild the trained model of a checkpoint: ``(model in eval mode on device, class names, checkpoint)``.

    ``torchvision:NAME`` instead loads torchvision's pretrained segmentation model NAME
    (:mod:`fcn_app.segmentation.pretrained`)."""
    if str(path).startswith(TORCHVISION_PREFIX):
        return load_torchvision_segmentation(str(path), device)
    payload = load_checkpoint(path)
    try:
        config = payload["model_config"]
        with torch.device("meta"):  # no time spent on a random init that is overwritten right away
            model = build_segmentation_model(
                config["variant"], int(config["num_classes"]), backbone=config["backbone"], pretrained=False,
                learnable_upsampling=bool(config.get("learnable_upsampling", False)),
                class_names=payload["class_names"], context_padding=config.get("context_padding"),
                ceil_mode_pooling=bool(config.get("ceil_mode_pooling", False)),
            )
        model.load_state_dict(payload["model"], assign=True)
        model.mean = tuple(config.get("mean", model.mean))
        model.std = tuple(config.get("std", model.std))
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        reason = f"missing {error}" if isinstance(error, KeyError) else " ".join(str(error).split())[:160]
        raise WeightsError(f"{path}: damaged checkpoint, its model description is unusable ({reason})") from None
    except RuntimeError as error:
        raise WeightsError(f"{path}: weights do not fit the model described in the checkpoint ({' '.join(str(error).split())[:160]})") from None
    return model.to(device).eval(), list(payload["class_names"]), payload
