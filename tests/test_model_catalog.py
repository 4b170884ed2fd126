"""``fcn-heatmap models`` answers from the recorded catalog (``fcn_app/models/catalog.json``), and the record is
what the installed registries say (issue 25, item 5): torchvision's model names, weights, URLs, files and sizes
(quick), timm's pretrained files (quick where timm is installed), and the geometry the conversion computes now
(slow: each model is built on the meta device)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fcn_app.catalog import describe, find_models, recorded_model, recorded_models
from helpers_cli import assert_one_line_error, cli_environment, run_in_process


def test_every_torchvision_classifier_is_recorded_with_its_registry_weights():
    import torchvision
    from torchvision.models import get_model_weights

    from fcn_app.models.zoo import _refused_reason

    recorded = [info for info in recorded_models() if info.source == "torchvision"]
    assert [info.name for info in recorded] == torchvision.models.list_models(module=torchvision.models)
    for info in recorded:
        weights = get_model_weights(info.name).DEFAULT
        assert (info.weights, info.url, info.file, info.size_mb) == (
            str(weights), weights.url, os.path.basename(weights.url), weights.meta.get("_file_size")), info.name
        assert info.input_size == int(weights.transforms().crop_size[0]), info.name
        assert info.exact == (_refused_reason(info.name) is None), info.name


@pytest.mark.slow  # imports timm
def test_recorded_timm_weights_are_the_ones_timm_names_now():
    pytest.importorskip("timm")
    from fcn_app.models.timm_zoo import _pretrained_cfg

    recorded = [info for info in recorded_models() if info.source == "timm"]
    assert {"timm:resnet50", "timm:convnext_tiny", "timm:efficientnet_b0", "timm:vit_small_patch16_224"} <= {
        info.name for info in recorded}
    for info in recorded:
        cfg = _pretrained_cfg(info.name.removeprefix("timm:"))
        assert info.weights == f"{cfg['architecture']}.{cfg['tag']}", info.name
        assert info.url == f"https://huggingface.co/{cfg['hf_hub_id']}/resolve/main/model.safetensors", info.name
    assert not recorded_model("timm:vit_small_patch16_224").exact
    assert recorded_model("timm:convnext_tiny.fb_in1k").name == "timm:convnext_tiny"  # a tag finds its architecture


def test_rows_are_found_by_substring_shell_pattern_and_source():
    assert [info.name for info in find_models("resnet50")] == ["resnet50", "wide_resnet50_2", "timm:resnet50",
                                                               "timm:wide_resnet50_2"]
    assert [info.name for info in find_models("resnet5*")] == ["resnet50"]
    assert all(info.source == "timm" for info in find_models(source="timm"))
    assert recorded_model("vgg16").free_window is False and recorded_model("resnet50").free_window is True
    assert recorded_model("my.module:factory") is None


@pytest.mark.slow  # builds each sampled model on the meta device
@pytest.mark.parametrize("name", ["vgg16", "alexnet", "resnet50", "squeezenet1_1", "efficientnet_b0", "regnet_y_400mf",
                                  "inception_v3", "vit_b_16", "timm:convnext_atto", "timm:vgg16",
                                  "timm:vit_small_patch16_224"])
def test_the_recorded_row_is_what_the_conversion_computes_now(name):
    if name.startswith("timm:"):
        pytest.importorskip("timm")
    assert describe(name) == recorded_model(name)


def test_the_table_shows_weights_file_size_and_notes(capsys, monkeypatch):
    from fcn_app.cli.app import console

    # rich reads COLUMNS once, when the console is made (at the first import of the CLI, maybe by another test)
    monkeypatch.setattr(console, "_width", 200)
    code, stdout, stderr = run_in_process(capsys, "models", "vgg16", "--source", "torchvision")
    assert (code, stderr) == (0, "")
    row = next(line for line in stdout.splitlines() if line.split()[:1] == ["vgg16"])
    assert "IMAGENET1K_V1" in row and "vgg16-397923af.pth" in row and "527.8" in row and "fc head" in row
    assert "hub/checkpoints" in stdout
    code, stdout, _ = run_in_process(capsys, "models", "efficientnet_b0", "--json")
    rows = {row["name"]: row for row in json.loads(stdout)}
    assert rows["efficientnet_b0"]["global_context"] and rows["efficientnet_b0"]["window"] == [7, 7]
    assert rows["timm:efficientnet_b0"]["source"] == "timm"


def test_urls_are_printed_one_per_line(capsys):
    code, stdout, _ = run_in_process(capsys, "models", "resnet18", "--urls", "--source", "torchvision")
    assert (code, stdout) == (0, "https://download.pytorch.org/models/resnet18-f37072fd.pth\n")


def test_models_answers_without_building_or_importing_torch(tmp_path):
    """A fresh process lists every model without importing torch: nothing is built, the record is read."""
    code = ("import sys\nfrom fcn_app.cli import main\ntry:\n    main(['models', '--json'])\nexcept SystemExit as stop:\n"
            "    assert not stop.code, stop.code\nassert 'torch' not in sys.modules, 'torch was imported'\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_environment(),
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(json.loads(result.stdout)) == len(recorded_models())


def test_a_pattern_that_matches_nothing_is_one_line():
    result = subprocess.run([sys.executable, "-m", "fcn_app", "models", "resnt50"], capture_output=True, text=True,
                            env=cli_environment(), timeout=120)
    assert_one_line_error(result, 2, "no model matches 'resnt50'; did you mean resnet50")


@pytest.mark.slow  # builds squeezenet1_1 on the meta device
def test_verify_recomputes_and_names_what_differs(tmp_path, monkeypatch, capsys):
    import fcn_app.catalog as catalog

    code, stdout, stderr = run_in_process(capsys, "models", "squeezenet1_1", "--verify", "--source", "torchvision")
    assert code == 0 and "1 models match the recorded catalog" in stderr
    document = json.loads(catalog.CATALOG_FILE.read_text())
    for row in document["models"]:
        if row["name"] == "squeezenet1_1":
            row["stride"] = 32  # it is 16
    stale = tmp_path / "catalog.json"
    stale.write_text(json.dumps(document))
    monkeypatch.setattr(catalog, "CATALOG_FILE", stale)
    code, _, stderr = run_in_process(capsys, "models", "squeezenet1_1", "--verify", "--source", "torchvision")
    assert code == 1 and "1 of 1 models differ from the recorded catalog (squeezenet1_1)" in stderr
