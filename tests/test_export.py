"""ONNX export: onnxruntime computes the same score map as torch (second path), with dynamic H/W."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fcn_app.cli import app
from fcn_app.cli import export as export_command
from fcn_app.export import export_onnx
from fcn_app.models import to_fully_convolutional
from fcn_app.scoring import compute_score_map, prepare_batch
from helpers import assert_close_scaled, random_rgb, tiny_classifier
from helpers_cli import assert_one_line_error, run_fcn_many

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def tiny_network():
    return to_fully_convolutional(tiny_classifier(), input_size=32, categories=list("abcde"), mean=(0.4, 0.5, 0.6),
                                  std=(0.2, 0.25, 0.3))


@pytest.fixture(scope="module")
def exported(tiny_network, tmp_path_factory):
    return export_onnx(tiny_network, tmp_path_factory.mktemp("onnx") / "tiny.onnx")


def test_onnxruntime_score_map_equals_torch_for_any_size(tiny_network, exported):
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    for size in [(32, 32), (75, 130), (201, 64)]:
        image = random_rgb(*size, seed=size[0])
        batch, _ = prepare_batch(tiny_network, [image])
        (scores,) = session.run(None, {"images": batch.contiguous().numpy()})
        expected = compute_score_map(tiny_network, image, precision="fp32").logits
        assert_close_scaled(torch.from_numpy(scores[0]), expected)


def test_batch_axis_is_dynamic_and_metadata_describes_the_geometry(tiny_network, exported):
    session = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    images = np.random.default_rng(0).standard_normal((3, 3, 48, 56)).astype(np.float32)
    (scores,) = session.run(None, {"images": images})
    with torch.inference_mode():
        expected = tiny_network(torch.from_numpy(images))
    assert_close_scaled(torch.from_numpy(scores), expected)
    metadata = {entry.key: entry.value for entry in onnx.load(str(exported), load_external_data=False).metadata_props}
    assert json.loads(metadata["categories"]) == list("abcde")
    assert json.loads(metadata["stride"]) == [8, 8]
    assert json.loads(metadata["mean"]) == pytest.approx([0.4, 0.5, 0.6])
    assert not list(exported.parent.glob(".*.tmp*")), "a temporary file was left behind"


def test_export_command_writes_the_file(tiny_network, tmp_path, monkeypatch):
    monkeypatch.setattr(export_command, "load_command_network", lambda *args, **kwargs: tiny_network)
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(app, ["export", "--format", "onnx", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and "wrote onnx" in result.output
    onnx.checker.check_model(str(out))


@pytest.mark.slow
def test_export_command_errors_are_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    cases = [
        (["--format", "tflite", "--out", tmp_path / "model.onnx"], 2, "--format: unknown format 'tflite'"),
        (["--model", "helpers_batch:tiny_fcn", "--out", blocker / "inside.onnx"], 3, "cannot write"),
    ]
    for (arguments, code, message), result in zip(cases, run_fcn_many([["export", *args] for args, _, _ in cases])):
        assert_one_line_error(result, code, message)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["file"]
