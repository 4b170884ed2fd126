"""Semantic segmentation with FCNs: models, datasets, joint transforms, metrics, checkpoints, prediction."""
