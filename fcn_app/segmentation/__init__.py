"""Semantic segmentation with FCNs: models, datasets, joint transforms, metrics, checkpoints.

Running a trained model on images is the segmentation task of :mod:`fcn_app.tasks.segmentation`.
"""

from .checkpoint import load_checkpoint, load_segmentation_model, save_checkpoint
from .datasets import IGNORE_INDEX, VOC_CLASSES, FolderSegmentation, VOCSegmentation, voc_palette
from .metrics import confusion_matrix, segmentation_scores
from .models import FCN_VARIANTS, SegmentationFCN, build_segmentation_model

__all__ = [
    "FCN_VARIANTS", "IGNORE_INDEX", "VOC_CLASSES", "FolderSegmentation", "SegmentationFCN", "VOCSegmentation",
    "build_segmentation_model", "confusion_matrix", "load_checkpoint", "load_segmentation_model", "save_checkpoint",
    "segmentation_scores", "voc_palette",
]
