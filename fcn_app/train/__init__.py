"""Training FCN segmentation models: configs, the loop (single process or DDP under torchrun), curves."""

from .config import TrainingConfig, load_config
from .loop import TrainResult, evaluate_checkpoint, train

__all__ = ["TrainResult", "TrainingConfig", "evaluate_checkpoint", "load_config", "train"]
