"""Training configs: YAML into dataclasses, strict keys and types, no Python tags, dotted overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from fcn_app.errors import ConfigError
from fcn_app.train.config import load_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name", ["voc_fcn32s", "voc_fcn16s", "voc_fcn8s", "example_folder"])
def test_shipped_configs_load(name):
    config = load_config(CONFIGS / f"{name}.yaml")
    assert config.model.variant in ("fcn32s", "fcn16s", "fcn8s")


def test_published_recipe_values():
    lrs = {name: load_config(CONFIGS / f"voc_{name}.yaml").train.lr for name in ("fcn32s", "fcn16s", "fcn8s")}
    assert lrs == {"fcn32s": 1e-10, "fcn16s": 1e-12, "fcn8s": 1e-14}
    config = load_config(CONFIGS / "voc_fcn8s.yaml")
    assert (config.train.momentum, config.train.loss_reduction, config.train.batch_size) == (0.99, "sum", 1)


@pytest.mark.parametrize("text,match", [
    ("train:\n  learning_rate: 0.1\n", r"train.learning_rate: unknown key; valid keys in train: iterations"),
    ("trian:\n  lr: 0.1\n", "trian: unknown section"),
    ("train:\n  lr: fast\n", r"train.lr: expected float, got str"),
    ("train:\n  iterations: 1.5\n", r"train.iterations: expected int"),
    ("train:\n  batch_size: 0\n", "train.batch_size: must be at least 1"),
    ("model:\n  variant: fcn4s\n", "model.variant: 'fcn4s' is not one of"),
    ("model: !!python/object/apply:os.system ['echo hi']\n", "no Python tags"),
    ("train: [1, 2\n", "not valid YAML"),
])
def test_bad_configs_are_config_errors(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_config(path)


def test_overrides_parse_yaml_values_and_are_checked(tmp_path):
    config = load_config(CONFIGS / "example_folder.yaml", ["train.lr=0.001", "data.crop_size=[32, 48]",
                                                           "model.init_from=null"])
    assert config.train.lr == 0.001 and config.data.crop_size == [32, 48] and config.model.init_from is None
    with pytest.raises(ConfigError, match="train.nope: unknown key"):
        load_config(None, ["train.nope=1"])
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_config(None, ["train.lr"])
