"""Runtimes (``backend``): OpenVINO and ONNX Runtime give torch's fp32 score maps on every path that scores (plain,
tiled, densified, pyramid, a batch of images, a segmentation checkpoint); missing or failing runtimes are one clear
error, and ``auto`` falls back to torch; ``precision="auto"`` follows the CPU's flags.

The reference is torch fp32 (channels-last, GEMM head), itself checked against a naive NCHW pass in test_perf.py;
the runtimes run the network from its ONNX export, a second path. Tolerance: rtol 1e-4 plus 1e-5 × the largest
logit compared (``helpers.assert_close_scaled``; the runtimes' kernels sum in another order: measured ~1e-7).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from fcn_app.dense import densify
from fcn_app.detect import detect_objects
from fcn_app.errors import OptionError, RuntimeCompileError
from fcn_app.pyramid import score_pyramid
from fcn_app.runtimes import BACKEND_ENV, resolve_backend
from fcn_app.scoring import PRECISION_ENV, ScoringOptions, choose_precision, compute_score_maps, scoring_summary
from fcn_app.segmentation.checkpoint import load_segmentation_model
from helpers import assert_close_scaled, random_rgb
from helpers_batch import tiny_fcn, tiny_segmentation_checkpoint
from helpers_cli import assert_one_line_error, cli_environment
from helpers_runtimes import unexportable_fcn

pytestmark = pytest.mark.usefixtures("one_thread")

RUNTIMES = ["openvino", "onnxruntime"]
#: The quick loop checks ONNX Runtime (sub-second); OpenVINO (its import and compiles cost seconds) runs in the full suite.
RUNTIMES_QUICK_ORT = [pytest.param("openvino", marks=pytest.mark.slow), "onnxruntime"]


def _requires(backend: str) -> None:
    pytest.importorskip(backend, reason=f"{backend} is in the test extra")


def _cpu_has_amx_bf16() -> bool:
    """Read independently of fcn_app.device: the flags line of /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return False
    return "amx_bf16" in flags.split()


@pytest.fixture(scope="module")
def network():
    return tiny_fcn().eval()


@pytest.fixture(scope="module")
def images():
    # three sizes (one smaller than the 32-px window, so padded) in one call: what a folder batch hands a task
    return [random_rgb(70, 90, seed=1), random_rgb(40, 100, seed=2), random_rgb(20, 24, seed=3)]


def _logits(network, images, backend, **options):
    return [score_map.logits for score_map in
            compute_score_maps(network, images, precision="fp32", backend=backend, **options)]


@pytest.mark.parametrize("backend", RUNTIMES_QUICK_ORT)
def test_fp32_score_maps_equal_torch_plain_tiled_batched(network, images, backend):
    _requires(backend)
    expected = _logits(network, images, "torch")
    for options in ({}, {"max_memory": 20_000}):  # 20 kB: several exact tiles per image
        got = _logits(network, images, backend, **options)
        for got_logits, expected_logits in zip(got, expected):
            assert_close_scaled(got_logits, expected_logits)


@pytest.mark.parametrize("backend", RUNTIMES_QUICK_ORT)
def test_fp32_densified_and_pyramid_equal_torch(network, images, backend):
    _requires(backend)
    dense = densify(network, 4)  # the tiny net's native stride is 8: stride 4 is its "--stride 16"
    for got, expected in zip(_logits(dense, images[:1], backend), _logits(dense, images[:1], "torch")):
        assert_close_scaled(got, expected)
    scales = (0.5, 1.0, 2.0)
    levels = score_pyramid(network, images[0], scales, precision="fp32", backend=backend)
    reference = score_pyramid(network, images[0], scales, precision="fp32", backend="torch")
    for level, expected in zip(levels, reference):
        assert_close_scaled(level.score_map.logits, expected.score_map.logits)
        assert level.score_map.geometry == expected.score_map.geometry


@pytest.mark.slow
@pytest.mark.parametrize("backend", RUNTIMES)
def test_fp32_segmentation_checkpoint_equals_torch_whole_and_tiled(tmp_path_factory, backend):
    _requires(backend)
    model = load_segmentation_model(tiny_segmentation_checkpoint(tmp_path_factory.mktemp("seg") / "fcn8s.pt"))[0]
    image = random_rgb(150, 170, seed=4)
    expected = _logits(model, [image], "torch")[0]
    for options in ({}, {"max_memory": "3M"}):  # per-size graphs: the whole image, then each tile size
        assert_close_scaled(_logits(model, [image], backend, **options)[0], expected)


@pytest.mark.parametrize("backend", RUNTIMES_QUICK_ORT)
def test_detections_on_a_runtime_equal_torch(network, images, backend):
    _requires(backend)
    found = [detect_objects(network, images[0], scoring=ScoringOptions("fp32", backend=name), topk=2)
             for name in (backend, "torch")]
    assert [d.class_name for d in found[0]] == [d.class_name for d in found[1]]
    np.testing.assert_allclose([d.score for d in found[0]], [d.score for d in found[1]], atol=1e-4)
    np.testing.assert_allclose([d.box for d in found[0]], [d.box for d in found[1]], atol=1e-3)


def test_a_missing_runtime_is_one_option_error_with_the_install_hint_and_auto_uses_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino now fails as if it were not installed
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    with pytest.raises(OptionError, match=r"OpenVINO is not installed: pip install 'fcn-heatmap\[openvino\]'") as error:
        resolve_backend("openvino", "cpu")
    assert error.value.option == "backend"
    assert resolve_backend("auto", "cpu") in ("torch", "onnxruntime") and resolve_backend("auto", "cpu") == "torch"


def test_runtime_choices_refused_in_one_line_each():
    with pytest.raises(OptionError, match="unknown backend 'tensorrt'"):
        ScoringOptions(backend="tensorrt")
    with pytest.raises(OptionError, match="runs networks on the CPU"):
        resolve_backend("onnxruntime", torch.device("meta"))


def test_onnxruntime_refuses_reduced_precision(network, images):
    _requires("onnxruntime")
    with pytest.raises(OptionError, match="ONNX Runtime runs fp32 only, not bf16") as error:
        compute_score_maps(network, images[:1], precision="bf16", backend="onnxruntime")
    assert error.value.option == "precision"


@pytest.mark.parametrize("backend", RUNTIMES)
def test_a_network_a_runtime_cannot_compile_names_the_layer_and_the_torch_backend(images, backend):
    _requires(backend)
    with pytest.raises(RuntimeCompileError, match=r"at layer features\.1: .*digamma.*; the torch backend runs it"):
        compute_score_maps(unexportable_fcn(), images[:1], precision="fp32", backend=backend)


@pytest.mark.slow
def test_auto_falls_back_to_torch_once_when_the_runtime_cannot_compile(monkeypatch, images, caplog):
    _requires("openvino")
    monkeypatch.delenv(BACKEND_ENV, raising=False)
    network = unexportable_fcn()
    with caplog.at_level(logging.WARNING, logger="fcn_app.scoring"):
        first = _logits(network, images[:2], "auto")
        second = _logits(network, images[:2], "auto")
    fallbacks = [record for record in caplog.records if "backend auto scores this network with torch" in record.message]
    assert len(fallbacks) == 1 and "features.1" in fallbacks[0].message
    for got in (first, second):
        for got_logits, expected in zip(got, _logits(network, images[:2], "torch")):
            torch.testing.assert_close(got_logits, expected, rtol=0, atol=0)
    assert ScoringOptions("fp32", backend="auto").summary(network)["backend"] == "torch"


def test_auto_precision_follows_the_cpu_flags(monkeypatch):
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    expected = "bf16" if _cpu_has_amx_bf16() else "fp32"
    assert choose_precision("auto", "cpu", "torch") == expected
    assert choose_precision("auto", "cpu", "openvino") == expected
    assert choose_precision("auto", "cpu", "onnxruntime") == "fp32"  # ONNX Runtime's CPU provider: fp32 only
    assert choose_precision("fp32", "cpu", "openvino") == "fp32"
    import fcn_app.scoring as scoring

    for has_amx, chosen in ((True, "bf16"), (False, "fp32")):  # the other kind of CPU, as this code sees it
        monkeypatch.setattr(scoring, "cpu_has_amx_bf16", lambda has_amx=has_amx: has_amx)
        assert choose_precision("auto", "cpu", "openvino") == chosen
    monkeypatch.setenv(PRECISION_ENV, "fp32")
    assert choose_precision("auto", "cpu", "torch") == "fp32"


def test_an_isa_cap_makes_this_cpu_one_without_the_extensions_above_it(monkeypatch):
    """``ONEDNN_MAX_CPU_ISA`` caps torch's and OpenVINO's kernels; ``auto`` must then choose as on a CPU that lacks
    what the cap forbids (this is how bench.py measures a CPU without AMX on one that has it)."""
    from fcn_app.device import ISA_CAP_ENV, cpu_flags, cpu_isa_cap

    monkeypatch.delenv(PRECISION_ENV, raising=False)
    monkeypatch.delenv("DNNL_MAX_CPU_ISA", raising=False)
    listed = set(open("/proc/cpuinfo").read().split("flags", 1)[1].split("\n", 1)[0].strip(" :\t").split())
    for cap, allowed in (("AVX2", lambda flag: not flag.startswith(("avx512", "amx"))),
                         ("avx512_core", lambda flag: not flag.startswith(("amx", "avx512_bf16", "avx512_fp16", "avx512_vnni"))),
                         ("AVX512_CORE_VNNI", lambda flag: not flag.startswith(("amx", "avx512_bf16", "avx512_fp16"))),
                         ("AVX512_CORE_BF16", lambda flag: not flag.startswith(("amx", "avx512_fp16"))),
                         ("AVX512_CORE_AMX", lambda flag: True), ("ALL", lambda flag: True)):
        monkeypatch.setenv(ISA_CAP_ENV, cap)
        assert cpu_flags() == {flag for flag in listed if allowed(flag)}, cap
        assert cpu_isa_cap() == (None if cap == "ALL" else cap.upper())
        expected = "bf16" if "amx_bf16" in listed and allowed("amx_bf16") else "fp32"
        assert choose_precision("auto", "cpu", "openvino") == expected, cap
        assert scoring_summary("auto", "torch")["cpu"]["isa_cap"] == cpu_isa_cap()


def _start_cli(*args, environment: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "fcn_app", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=environment)


def _finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.mark.slow
def test_cli_auto_choice_logged_once_and_in_json_and_runtime_mistakes_in_one_line(tmp_path):
    _requires("openvino")
    folder = tmp_path / "in"
    folder.mkdir()
    image = folder / "img.png"
    Image.fromarray(random_rgb(64, 80, seed=5)).save(image)
    blocker = tmp_path / "blocked"  # a package that fails to import as an absent one does
    (blocker / "openvino").mkdir(parents=True)
    (blocker / "openvino" / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'openvino'\")\n")
    blocked = cli_environment()
    blocked["PYTHONPATH"] = os.pathsep.join([str(blocker), blocked["PYTHONPATH"]])
    # three commands side by side (each spends most of its life importing torch)
    processes = [
        # auto pinned to OpenVINO (the commands' own auto is torch), precision unpinned: what auto means here
        _start_cli(folder, "--model", "helpers_batch:tiny_fcn", "--json", "--verbose", "--out", tmp_path / "auto",
                   environment=cli_environment({BACKEND_ENV: "openvino", PRECISION_ENV: ""})),
        _start_cli(image, "--model", "helpers_batch:tiny_fcn", "--backend", "openvino", "--out", tmp_path,
                   environment=blocked),
        _start_cli("detect", image, "--model", "helpers_runtimes:unexportable_fcn", "--backend", "openvino",
                   "--out", tmp_path, environment=cli_environment()),
    ]
    chosen, missing, failing = [_finish(process) for process in processes]

    assert chosen.returncode == 0, chosen.stderr
    runtime = json.loads((tmp_path / "auto" / "img.json").read_text())["runtime"]
    assert runtime["backend"] == "openvino"
    assert runtime["precision"] == ("bf16" if _cpu_has_amx_bf16() else "fp32")
    assert runtime["requested"] == {"backend": "auto", "precision": "auto"}
    assert ("amx_bf16" in runtime["cpu"]["flags"]) == _cpu_has_amx_bf16()
    choices = [line for line in chosen.stderr.splitlines() if "with backend openvino" in line]
    assert len(choices) == 1 and runtime["cpu"]["model"] in choices[0]

    assert_one_line_error(missing, 2, "--backend: OpenVINO is not installed: pip install 'fcn-heatmap[openvino]'")
    line = assert_one_line_error(failing, 2, "at layer features.1")
    assert "the torch backend runs it (--backend)" in line


def test_image_commands_score_on_torch_under_auto(monkeypatch):
    """Converting a network for a runtime costs more than it saves on one image, and a folder must give an image
    the same bytes as alone: auto means torch for both, unless the environment pins a backend; an explicit backend
    is kept."""
    from fcn_app.runtimes import BACKEND_ENV, command_backend

    monkeypatch.delenv(BACKEND_ENV, raising=False)
    assert command_backend("auto") == "torch"
    assert command_backend("openvino") == "openvino"
    monkeypatch.setenv(BACKEND_ENV, "onnxruntime")
    assert command_backend("auto") == "auto"  # resolved later through the pin


def test_a_network_holding_inference_tensors_runs_on_a_runtime():
    """Weights made under torch.inference_mode keep no version counter; the compiled-model cache must not ask."""
    _requires("onnxruntime")
    with torch.inference_mode():
        network = tiny_fcn()
    assert next(network.parameters()).is_inference()
    image = random_rgb(40, 48, seed=3)
    expected = compute_score_maps(network, [image], backend="torch", precision="fp32")[0].logits
    scored = compute_score_maps(network, [image], backend="onnxruntime", precision="fp32")[0].logits
    assert_close_scaled(scored, expected)
