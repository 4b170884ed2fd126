"""Heatmap methods (``--method``) and ``compare``: every method's map has the image's size and lies in [0, 1]; a
pytorch-grad-cam map of the converted network equals the library's own map of the original classifier; the
commands refuse what cannot work in one line."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from fcn_app.errors import MissingExtraError, OptionError, OutputError
from fcn_app.heatmaps import ClassSelection
from fcn_app.methods import (METHODS, WindowClassifier, backend_note, check_method,
                             method_heatmap, method_network, require_grad_cam, resolve_target_layer, saliency_maps)
from fcn_app.tasks import HeatmapOptions, HeatmapTask, process_image
from fcn_app.tasks.compare import compare_methods, write_comparison
from helpers import assert_close_scaled, random_rgb
from helpers_batch import tiny_fcn
from helpers_cli import assert_one_line_error, cli_environment
from helpers_methods import tiny_pooled_classifier, tiny_pooled_fcn

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pooled():
    return tiny_pooled_fcn()


def test_method_names_are_checked_and_normalised():
    assert check_method("GradCAM++") == "gradcam++"
    assert check_method("grad-cam") == "gradcam"
    assert check_method("gradcamplusplus") == "gradcam++"
    with pytest.raises(OptionError, match="unknown method 'gradcan'; choose one of fcn, cam, gradcam"):
        check_method("gradcan")


def test_gradient_methods_say_they_run_on_torch_when_another_backend_was_asked():
    assert backend_note("gradcam", "openvino") == ("gradcam runs on the torch backend (it needs the torch network's "
                                                   "activations and gradients), not on openvino")
    assert backend_note("gradcam", "torch") is None
    assert backend_note("fcn", "openvino") is None  # the window scores run on any backend


def test_cam_is_a_window_of_one_feature_cell_and_needs_a_pooled_head(pooled):
    assert method_network(pooled, "cam").window == (1, 1)
    assert method_network(pooled, "fcn") is pooled
    with pytest.raises(OptionError, match="cam: .*no free window size"):
        method_network(tiny_fcn(), "cam")


def test_the_target_layer_is_the_body_unless_named(pooled):
    assert resolve_target_layer(pooled) == ("features", pooled.features)
    name, _ = resolve_target_layer(pooled, "3")  # relative to the body: features.3, the second convolution
    assert name == "features.3"
    with pytest.raises(OptionError, match="no layer 'nope'; its last convolutions are features.0, features.3"):
        resolve_target_layer(pooled, "nope")


def test_heatmap_options_refuse_what_a_saliency_map_cannot_be():
    with pytest.raises(OptionError, match="one saliency map per class at one scale") as raised:
        HeatmapOptions(method="gradcam", scales="1,2")
    assert raised.value.option == "scales"
    with pytest.raises(OptionError, match="reads no layer"):
        HeatmapOptions(method="fcn", target_layer="features")


def test_a_missing_extra_names_the_install_line(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "pytorch_grad_cam", None)  # import → ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'fcn-heatmap\[cam\]'") as raised:
        require_grad_cam("scorecam")
    assert raised.value.exit_code == 2


@pytest.mark.slow
@pytest.mark.parametrize("network_name", ["pooled", "flatten"])
def test_every_method_gives_a_map_of_the_image_size_in_zero_one(network_name, pooled):
    network = pooled if network_name == "pooled" else tiny_fcn()
    image = random_rgb(45, 70, seed=3)
    before = [parameter.clone() for parameter in network.parameters()]
    for method in METHODS:
        if method == "cam" and network_name == "flatten":
            continue  # no free window (tested above)
        heat, seconds, _ = method_heatmap(network, image, method, ClassSelection(network.categories[1], (1,)))
        assert heat.shape == (45, 70), method
        assert heat.dtype == np.float32 and 0.0 <= heat.min() and heat.max() <= 1.0, method
        assert np.isfinite(heat).all() and seconds >= 0, method
    for old, new in zip(before, network.parameters()):  # AblationCAM swaps a layer in and out again
        torch.testing.assert_close(new, old, rtol=0, atol=0)


@pytest.mark.slow
def test_gradcam_of_the_converted_network_equals_gradcam_of_the_original_classifier(pooled):
    """At the training size the window classifier is the classifier: pytorch-grad-cam run directly on the original
    ``nn.Sequential`` (target: its last max pool, the body's output) must give the same map."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    image = random_rgb(32, 32, seed=5)
    ours = saliency_maps(pooled, image, "gradcam", classes=["2"]).maps[0]
    classifier = tiny_pooled_classifier()
    pixels = torch.from_numpy(image).permute(2, 0, 1).float().div(255.0)[None]
    normalised = ((pixels - 0.5) / 0.25).requires_grad_(True)
    explainer = GradCAM(model=classifier, target_layers=[classifier[5]])
    try:
        theirs = explainer(input_tensor=normalised, targets=[ClassifierOutputTarget(2)])[0]
    finally:
        explainer.activations_and_grads.release()
    torch.testing.assert_close(torch.from_numpy(ours), torch.from_numpy(theirs), rtol=0, atol=1e-5)
    logits = WindowClassifier(pooled)(normalised.detach())
    assert_close_scaled(logits, classifier(normalised.detach()), rtol=1e-5)


@pytest.mark.slow
def test_a_saliency_heatmap_goes_through_the_task_outputs(tmp_path, pooled):
    task = HeatmapTask(pooled, HeatmapOptions(method="gradcam++", grid=True, write_json=True, topk=2))
    rendered, written = process_image(task, random_rgb(40, 64, seed=2), tmp_path / "photo", source="photo.png")
    assert set(written) == {"overlay", "grid", "json"}
    summary = json.loads(written["json"].read_text())
    assert summary["method"] == "gradcam++" and summary["target_layer"] == "features"
    assert [entry["window_probability"] for entry in summary["classes"]] == [
        row["window_probability"] for row in task.row_fields(rendered)["top_classes"]]
    assert rendered.overlay.shape == (40, 64, 3)
    assert task.report(rendered).columns[2] == "window prob"


@pytest.mark.slow
def test_compare_writes_its_picture_and_table_atomically(tmp_path, pooled, monkeypatch):
    image = random_rgb(40, 48, seed=7)
    comparison = compare_methods(pooled, image, ["fcn", "cam", "gradcam"], steps=8)
    assert [score.method for score in comparison.scores] == ["fcn", "cam", "gradcam"]
    target = tmp_path / "compare.png"
    target.write_bytes(b"the previous picture")

    def disk_full(_):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr("fcn_app.io.atomic.os.fsync", disk_full)
        with pytest.raises(OutputError, match="no space left on device"):
            write_comparison(target, comparison, image)
    assert target.read_bytes() == b"the previous picture"  # untouched, and no temporary left behind
    assert sorted(os.listdir(tmp_path)) == ["compare.png"]
    written = write_comparison(target, comparison, image, source="x.png")
    assert sorted(os.listdir(tmp_path)) == ["compare.png", "compare.png.json"]
    table = json.loads(written["json"].read_text())
    assert [row["method"] for row in table["methods"]] == ["fcn", "cam", "gradcam"]
    assert all(0.0 <= row["deletion_auc"] <= 1.0 and 0.0 <= row["insertion_auc"] <= 1.0 for row in table["methods"])


@pytest.mark.slow
def test_a_folder_runs_a_saliency_method_and_a_missing_extra_is_one_line(tmp_path):
    from fcn_app.io import atomic_write_png

    folder = tmp_path / "photos"
    folder.mkdir()
    for seed, name in enumerate(("a.png", "b.png")):
        atomic_write_png(folder / name, random_rgb(40, 52, seed=seed))
    blocked = tmp_path / "blocked"  # a pytorch_grad_cam that cannot be imported, first on the path
    (blocked / "pytorch_grad_cam").mkdir(parents=True)
    (blocked / "pytorch_grad_cam" / "__init__.py").write_text("raise ImportError('not installed')\n")
    without_extra = cli_environment()
    without_extra["PYTHONPATH"] = os.pathsep.join([str(blocked), without_extra["PYTHONPATH"]])
    model = ["--model", "helpers_methods:tiny_pooled_fcn"]
    commands = [([folder, "--out", tmp_path / "out", "--method", "scorecam", "--json", "--no-gallery", *model],
                 cli_environment()),
                ([folder / "a.png", "--method", "gradcam", *model, "--out", tmp_path / "x"], without_extra)]
    running = [subprocess.Popen([sys.executable, "-m", "fcn_app", *map(str, args)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=environment) for args, environment in commands]
    results = []
    for process in running:
        stdout, stderr = process.communicate(timeout=300)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    assert results[0].returncode == 0, results[0].stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["options"]["method"] == "scorecam"
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "a.heatmap.png", "a.json", "b.heatmap.png", "b.json", "summary.json"]
    assert json.loads((tmp_path / "out" / "a.json").read_text())["method"] == "scorecam"
    assert_one_line_error(results[1], 2, "the gradcam method needs pytorch-grad-cam, an optional extra: "
                                         "pip install 'fcn-heatmap[cam]'")


@pytest.mark.slow
def test_compare_and_detect_commands_and_their_refusals(tmp_path):
    """In-process (the grad-cam import is paid once): compare's picture and table, detect's method, and the
    refusals as the command prints them."""
    from typer.testing import CliRunner

    from fcn_app.cli import app
    from fcn_app.io import atomic_write_png

    image = atomic_write_png(tmp_path / "a.png", random_rgb(40, 52, seed=1))
    model = ["--model", "helpers_methods:tiny_pooled_fcn"]
    runner = CliRunner()

    def run(*args):
        return runner.invoke(app, [str(arg) for arg in args])

    compared = run("compare", image, "--methods", "fcn,cam,gradcam,scorecam", "--steps", "5", "--out",
                   tmp_path / "c.png", *model)
    assert compared.exit_code == 0, compared.output
    assert "insertion" in compared.output and (tmp_path / "c.png").is_file()
    assert [row["method"] for row in json.loads((tmp_path / "c.png.json").read_text())["methods"]] == [
        "fcn", "cam", "gradcam", "scorecam"]
    detected = run("detect", image, "--method", "gradcam", "--out", tmp_path / "boxes", *model)
    assert detected.exit_code == 0, detected.output
    assert json.loads((tmp_path / "boxes" / "a.detections.json").read_text())["method"] == "gradcam"
    for args, message in (
        ([image, "--method", "cam", "--model", "helpers_batch:tiny_fcn"], "--method: cam: "),
        ([image, "--method", "gradcan", *model], "unknown method 'gradcan'"),
        ([image, "--method", "cam", "--window", "3", *model], "--window: --method cam scores one feature cell"),
        (["compare", image, "--methods", "fcn,nope", "--out", tmp_path / "d.png", *model], "--methods: unknown"),
    ):
        refused = run("heatmap", *args, "--out", tmp_path / "x") if args[0] != "compare" else run(*args)
        assert refused.exit_code == 2 and message in refused.output, refused.output
        assert "Traceback" not in refused.output
