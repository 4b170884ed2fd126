"""Training configuration: YAML (``yaml.safe_load``) into dataclasses, checked key by key.

Unknown keys, wrong types and YAML tags that would build Python objects (``!!python/object``) are
:class:`~fcn_app.errors.ConfigError` s naming the key and what is allowed. Command-line overrides use dotted
keys, ``train.lr=0.001 data.crop_size=[256,256]``; their values are parsed as YAML too.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from ..segmentation.models import FCN_VARIANTS

__all__ = ["DataConfig", "ModelConfig", "RunConfig", "TrainConfig", "TrainingConfig", "config_to_dict",
           "config_from_dict", "load_config"]


@dataclass
class ModelConfig:
    variant: str = "fcn8s"  # fcn32s | fcn16s | fcn8s | fcn8s-atonce
    backbone: str = "vgg16"  # torchvision VGG (ImageNet weights), resnet50/resnet101 (dilated, stride 8; variant
    # fcn8s), or tiny_vgg (random, for smoke runs)
    pretrained: bool = True
    weights: str | None = None  # local backbone state dict (default: torch hub cache / download)
    init_from: str | None = None  # checkpoint of an earlier stage (FCN-32s → 16s → 8s), matching weights copied
    learnable_upsampling: bool = False


@dataclass
class DataConfig:
    format: str = "voc"  # voc | folder
    root: str = "data/VOCdevkit/VOC2012"
    train_split: str | None = "train"  # voc: ImageSets/Segmentation/<split>.txt; folder: list file (null = all)
    val_split: str | None = "val"
    val_root: str | None = None  # folder format: separate validation folder (default: root)
    classes_file: str | None = None  # folder format: default <root>/classes.txt
    sbd_root: str | None = None  # SBD benchmark_RELEASE/dataset, adds its train ids (minus the VOC val ids)
    sbd_split: str = "train"
    crop_size: list[int] | None = None  # [height, width]; null = whole images (mixed sizes padded per batch)
    scale_range: list[float] = field(default_factory=lambda: [1.0, 1.0])
    flip: bool = True
    num_workers: int = 2
    max_val_images: int | None = None


@dataclass
class TrainConfig:
    iterations: int = 100000
    batch_size: int = 1
    accumulate: int = 1  # gradient accumulation: micro-batches per optimizer step
    optimizer: str = "sgd"  # sgd | adamw
    lr: float = 1.0e-4
    momentum: float = 0.9
    weight_decay: float = 5.0e-4
    scheduler: str = "poly"  # fixed | poly | step
    poly_power: float = 0.9
    step_size: int = 10000
    step_gamma: float = 0.1
    loss_reduction: str = "mean"  # mean over valid pixels | sum (the reference recipe: unnormalised loss)
    amp: bool = True  # mixed precision on CUDA (ignored on CPU)
    val_interval: int = 4000
    val_batch_size: int = 1
    log_interval: int = 20
    checkpoint_interval: int = 1000
    seed: int = 0
    device: str = "auto"


@dataclass
class RunConfig:
    output_dir: str = "runs/fcn"
    progress: bool = True


@dataclass
class TrainingConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)


_CHOICES = {
    ("model", "variant"): tuple(FCN_VARIANTS),
    ("data", "format"): ("voc", "folder"),
    ("train", "optimizer"): ("sgd", "adamw"),
    ("train", "scheduler"): ("fixed", "poly", "step"),
    ("train", "loss_reduction"): ("mean", "sum"),
}
_YAML11_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_POSITIVE = {("train", "iterations"), ("train", "batch_size"), ("train", "accumulate"), ("train", "val_interval"),
             ("train", "val_batch_size"), ("train", "log_interval"), ("train", "checkpoint_interval")}


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """``value`` checked against ``annotation`` (int accepted for float; nothing else converted)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(error)
        raise errors[0] if errors else ConfigError(f"{key}: invalid value {value!r}")
    if origin is list:
        (item_type,) = typing.get_args(annotation)
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list of {_type_name(item_type)}, got {value!r}")
        return [_coerce(item, item_type, f"{key}[{number}]") for number, item in enumerate(value)]
    if annotation is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, str) and _YAML11_FLOAT.fullmatch(value.strip()):
        return float(value)  # PyYAML (YAML 1.1) reads 1e-4 — no dot — as a string; users mean a number
    if annotation in (int, str, bool) and isinstance(value, annotation) and not (annotation is int and isinstance(value, bool)):
        return value
    raise ConfigError(f"{key}: expected {_type_name(annotation)}, got {type(value).__name__} {value!r}")


def _section_from_dict(cls: type, values: Any, section: str) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{section}: expected a mapping of keys, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = [item.name for item in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{section}.{unknown[0]}: unknown key; valid keys in {section}: {', '.join(names)}")
    result = cls()
    for name, value in values.items():
        key = f"{section}.{name}"
        value = _coerce(value, hints[name], key)
        choices = _CHOICES.get((section, name))
        if choices and value not in choices:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
        if (section, name) in _POSITIVE and value < 1:
            raise ConfigError(f"{key}: must be at least 1, got {value}")
        setattr(result, name, value)
    return result


def config_from_dict(values: Any) -> TrainingConfig:
    """A validated :class:`TrainingConfig` from plain data (e.g. a loaded YAML file or a checkpoint's copy)."""
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError("the config must be a mapping with sections model, data, train, run")
    sections = {item.name: item.type for item in dataclasses.fields(TrainingConfig)}
    hints = typing.get_type_hints(TrainingConfig)
    unknown = sorted(set(values) - set(sections))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown section; valid sections: {', '.join(sections)}")
    config = TrainingConfig(**{name: _section_from_dict(hints[name], values.get(name), name) for name in sections})
    if config.data.crop_size is not None and (len(config.data.crop_size) != 2 or min(config.data.crop_size) < 1):
        raise ConfigError(f"data.crop_size: expected [height, width] of positive ints, got {config.data.crop_size}")
    low_high = config.data.scale_range
    if len(low_high) != 2 or not 0 < low_high[0] <= low_high[1]:
        raise ConfigError(f"data.scale_range: expected [low, high] with 0 < low ≤ high, got {low_high}")
    if not config.train.lr > 0:
        raise ConfigError(f"train.lr: must be positive, got {config.train.lr}")
    return config


def config_to_dict(config: TrainingConfig) -> dict:
    return asdict(config)


def _apply_override(values: dict, override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected section.key=value, e.g. train.lr=0.001")
    dotted, text = override.split("=", 1)
    parts = dotted.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override {override!r}: the key must be section.key, e.g. train.lr")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as error:
        raise ConfigError(f"override {override!r}: value is not valid YAML ({str(error).splitlines()[0]})") from None
    section = values.setdefault(parts[0], {})
    if not isinstance(section, dict):
        raise ConfigError(f"override {override!r}: section {parts[0]} is not a mapping in the config file")
    section[parts[1]] = value


def load_config(path: str | os.PathLike | None, overrides: list[str] | tuple[str, ...] = ()) -> TrainingConfig:
    """Read a YAML config (``None``: defaults), apply ``section.key=value`` overrides, validate."""
    values: Any = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.constructor.ConstructorError as error:
            raise ConfigError(
                f"{path}: refused: {str(error.problem or error).strip()} — configs may only hold plain YAML values, "
                "no Python tags"
            ) from None
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise ConfigError(f"{path}: not valid YAML{where} ({getattr(error, 'problem', None) or error})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a text file") from None
        values = {} if values is None else values
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: the config must be a mapping with sections model, data, train, run")
    for override in overrides:
        _apply_override(values, override)
    return config_from_dict(values)
