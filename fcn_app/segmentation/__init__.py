"""Semantic segmentation with FCNs: models, datasets, joint transforms, metrics, checkpoints, prediction."""

from .checkpoint import load_checkpoint, load_segmentation_model, save_checkpoint
from .datasets import IGNORE_INDEX, VOC_CLASSES, FolderSegmentation, VOCSegmentation, voc_palette
from .metrics import confusion_matrix, segmentation_scores
from .models import FCN_VARIANTS, SegmentationFCN, build_segmentation_model
from .predict import SegmentationOptions, predict_probabilities, render_segmentation, segment_image

__all__ = [
    "FCN_VARIANTS", "IGNORE_INDEX", "VOC_CLASSES", "FolderSegmentation", "SegmentationFCN", "SegmentationOptions",
    "VOCSegmentation", "build_segmentation_model", "confusion_matrix", "load_checkpoint", "load_segmentation_model",
    "predict_probabilities", "render_segmentation", "save_checkpoint", "segment_image", "segmentation_scores",
    "voc_palette",
]
