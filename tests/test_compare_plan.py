"""``fcn-heatmap compare``: every method is checked against the model and the installed extras before any work, its
defaults run with the default model, and its progress goes to stderr (issue 25, item 1).

"Before any work" is shown without timing: the image given does not exist (a check that came after reading it
would name the image), the model loader is replaced by one that fails the test, and the library's scoring
function by one that fails the test."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from fcn_app.errors import MissingExtraError, OptionError
from fcn_app.method_plan import check_methods_usable, default_methods
from helpers import random_rgb
from helpers_batch import tiny_fcn
from helpers_cli import assert_one_line_error, cli_environment, run_fcn
from helpers_methods import tiny_pooled_fcn

pytestmark = pytest.mark.usefixtures("one_thread")

CAM_ON_VGG16 = ("--methods: cam needs a classifier ending in global pooling (resnet50, convnext_tiny, efficientnet_b0, "
                "…); vgg16 ends in fully connected layers: leave cam out or use a model such as resnet50")
NO_GRAD_CAM = "gradcam needs pytorch-grad-cam, an optional extra: pip install 'fcn-heatmap[cam]' (--methods)"


def _without_grad_cam(tmp_path) -> dict[str, str]:
    """An environment whose Python cannot import pytorch-grad-cam, as where the extra is not installed."""
    site = tmp_path / "no_grad_cam"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text("import sys\nsys.modules['pytorch_grad_cam'] = None\n")
    environment = cli_environment()
    environment["PYTHONPATH"] = f"{site}:{environment['PYTHONPATH']}"
    return environment


def test_the_default_methods_follow_the_model_and_the_extras(monkeypatch):
    assert default_methods(model="vgg16", pooled_head=False) == (["fcn", "gradcam", "gradcam++"], None)
    assert default_methods(model="resnet50", pooled_head=True) == (["fcn", "cam", "gradcam", "gradcam++"], None)
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)
    methods, note = default_methods(model="vgg16", pooled_head=False)
    assert methods == ["fcn"]
    assert note == "gradcam, gradcam++ left out: they need pytorch-grad-cam, an optional extra: " \
                   "pip install 'fcn-heatmap[cam]'"


def test_every_method_is_checked_before_the_first_runs(monkeypatch):
    with pytest.raises(OptionError, match="cam needs a classifier ending in global pooling") as raised:
        check_methods_usable(["fcn", "gradcam", "cam"], model="vgg16", pooled_head=False)
    assert raised.value.option == "methods"
    assert check_methods_usable(["FCN", "cam"], model="m:f", pooled_head=None) == ["fcn", "cam"]  # known on loading
    monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)
    with pytest.raises(MissingExtraError, match=r"scorecam needs pytorch-grad-cam.*fcn-heatmap\[cam\]"):
        check_methods_usable(["fcn", "scorecam"], model="resnet50", pooled_head=True)


@pytest.mark.parametrize("methods, blocked, error", [
    (["fcn", "cam"], False, OptionError),  # a flatten head: no CAM
    (["fcn", "gradcam"], True, MissingExtraError),
])
def test_the_library_refuses_before_scoring_anything(monkeypatch, methods, blocked, error):
    import fcn_app.tasks.compare as compare

    def scored(*args, **kwargs):
        raise AssertionError("an image was scored before every method was checked")

    monkeypatch.setattr(compare, "compute_score_map", scored)
    if blocked:
        monkeypatch.setitem(sys.modules, "pytorch_grad_cam", None)
    network = tiny_pooled_fcn() if blocked else tiny_fcn()
    with pytest.raises(error):
        compare.compare_methods(network, random_rgb(32, 32), methods, steps=2)


def test_compare_reports_each_method_and_step_as_it_goes():
    from fcn_app.tasks.compare import compare_methods

    steps = []
    compare_methods(tiny_pooled_fcn(), random_rgb(40, 48, seed=1), ["fcn", "cam"], steps=3, progress=steps.append)
    done = [step.done for step in steps]
    assert done == sorted(done) and steps[-1].done == steps[-1].total == 2 * (2 * 4 + 2)
    stages = [(step.method, step.stage) for step in steps]
    for method in ("fcn", "cam"):
        seen = [stage for name, stage in dict.fromkeys(stages) if name == method]
        assert seen == ["map", "deletion", "insertion", "explanation map", "done"], seen
    assert stages.index(("cam", "map")) > stages.index(("fcn", "done"))


def test_a_method_the_model_cannot_run_is_refused_before_the_model_loads(tmp_path, monkeypatch, capsys):
    """In-process, with the model loader replaced by one that fails the test, and an image that does not exist."""
    import fcn_app.cli  # noqa: F401  (registers the commands)
    from helpers_cli import run_in_process

    def loaded(**kwargs):
        raise AssertionError("the model was loaded before the methods were checked")

    # by sys.modules: the package's attributes `app` and `compare` are the typer app and the command function
    monkeypatch.setattr(sys.modules["fcn_app.cli.compare"], "load_command_network", loaded)
    code, stdout, stderr = run_in_process(capsys, "compare", tmp_path / "missing.jpg", "--methods", "fcn,cam",
                                          "--out", tmp_path / "c.png")
    assert (code, stdout) == (2, "")
    assert stderr.strip() == f"error: {CAM_ON_VGG16}"


@pytest.mark.slow  # two fresh processes
def test_refusals_as_the_user_sees_them_come_before_the_image_is_read(tmp_path):
    missing = tmp_path / "missing.jpg"  # a check after reading the image would name the image
    commands = [(["compare", missing, "--methods", "fcn,cam,gradcam", "--out", tmp_path / "c.png"], cli_environment()),
                (["compare", missing, "--methods", "fcn,gradcam", "--model", "resnet50", "--out", tmp_path / "c.png"],
                 _without_grad_cam(tmp_path))]
    running = [subprocess.Popen([sys.executable, "-m", "fcn_app", *map(str, args)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=environment) for args, environment in commands]
    outputs = [process.communicate(timeout=120) for process in running]
    cam, no_extra = [subprocess.CompletedProcess(process.args, process.returncode, *output)
                     for process, output in zip(running, outputs)]
    assert_one_line_error(cam, 2, CAM_ON_VGG16)
    assert_one_line_error(no_extra, 2, NO_GRAD_CAM)


@pytest.mark.slow  # VGG16 on a 224² input, three methods
def test_the_defaults_run_with_the_default_model_and_progress_goes_to_stderr(tmp_path):
    """The seeded VGG16 weights of conftest.py, a small image, two steps: fcn, gradcam and gradcam++ (no cam: VGG16
    has no pooled head). ``TTY_COMPATIBLE=1`` makes rich draw its bar on the pipe as on a terminal."""
    from fcn_app.io import atomic_write_png

    image = atomic_write_png(tmp_path / "small.png", random_rgb(48, 64, seed=2))
    result = run_fcn("compare", image, "--steps", "2", "--json", "--out", tmp_path / "c.png",
                     env={"TTY_COMPATIBLE": "1"})
    assert result.returncode == 0, result.stderr
    table = json.loads(result.stdout)  # nothing but the JSON on stdout
    assert [row["method"] for row in table["methods"]] == ["fcn", "gradcam", "gradcam++"]
    assert "gradcam++ (3/3): insertion" in result.stderr and "Traceback" not in result.stderr
    assert (tmp_path / "c.png").is_file()
