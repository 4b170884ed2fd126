"""The ``--method`` registry: it agrees with pytorch-grad-cam and with the option vocabulary, and each trait of an
entry — not its name — decides what the code does (a trait flipped on ``fcn`` changes how ``fcn`` is treated)."""

from __future__ import annotations

import importlib
from dataclasses import replace

import pytest

from fcn_app import choices
from fcn_app.errors import MissingExtraError, OptionError
from fcn_app.method_plan import method_refusal
from fcn_app.method_registry import METHODS, MethodKind, get_method


def with_traits(monkeypatch, name: str, **traits) -> None:
    """``name``'s registry entry with ``traits`` changed, for this test only."""
    monkeypatch.setitem(METHODS, name, replace(METHODS[name], **traits))


def test_the_vocabulary_is_the_registry():
    assert choices.METHODS == tuple(METHODS) == ("fcn", "cam", "gradcam", "gradcam++", "xgradcam", "layercam",
                                                 "hirescam", "eigencam", "eigengradcam", "scorecam", "ablationcam")
    assert choices.INSTALL_HINT == get_method("gradcam").install_hint == "pip install 'fcn-heatmap[cam]'"
    assert get_method("fcn").install_hint is None
    assert [method.name for method in METHODS.values() if method.kind is MethodKind.CAM] == ["cam"]


@pytest.mark.slow  # pytorch-grad-cam's import takes seconds
def test_every_saliency_entry_is_a_pytorch_grad_cam_class():
    grad_cam = pytest.importorskip("pytorch_grad_cam")
    saliency = [method for method in METHODS.values() if method.saliency]
    assert len(saliency) == 9
    for method in saliency:
        assert method.kind is MethodKind.SALIENCY and method.extra == "cam"
        assert importlib.import_module(method.module) is grad_cam
        assert isinstance(getattr(grad_cam, method.class_name), type), method.name
    assert all(method.class_name is None for method in METHODS.values() if not method.saliency)


def test_an_unknown_method_is_an_option_error_naming_the_methods():
    assert get_method("Grad_CAM-PlusPlus") is METHODS["gradcam++"]
    with pytest.raises(OptionError, match="unknown method 'gradcan'; choose one of fcn, cam, gradcam") as raised:
        get_method("gradcan")
    assert raised.value.option == "method"


def test_the_pooled_head_refusal_comes_from_needs_pooled_head(monkeypatch):
    assert isinstance(method_refusal("cam", model="vgg16", pooled_head=False), OptionError)
    with_traits(monkeypatch, "fcn", needs_pooled_head=True)
    with_traits(monkeypatch, "cam", needs_pooled_head=False)
    refusal = method_refusal("fcn", model="vgg16", pooled_head=False)
    assert isinstance(refusal, OptionError) and str(refusal).startswith(
        "fcn needs a classifier ending in global pooling (resnet50, convnext_tiny, efficientnet_b0, …); vgg16 ends "
        "in fully connected layers: leave fcn out")
    assert method_refusal("cam", model="vgg16", pooled_head=False) is None


def test_the_missing_extra_refusal_comes_from_extra(monkeypatch):
    with_traits(monkeypatch, "fcn", extra="nothere", package="nothere-package", module="fcn_app_no_such_module")
    refusal = method_refusal("fcn", model="vgg16", pooled_head=True)
    assert isinstance(refusal, MissingExtraError)
    assert str(refusal) == "fcn needs nothere-package, an optional extra: pip install 'fcn-heatmap[nothere]'"


def test_refused_options_and_the_target_layer_come_from_refuses_and_saliency(monkeypatch):
    from fcn_app.tasks import HeatmapOptions

    with pytest.raises(OptionError, match="reads no layer"):
        HeatmapOptions(method="fcn", target_layer="features")
    with_traits(monkeypatch, "fcn", saliency=True, refuses={"scales": "not at several scales"})
    assert HeatmapOptions(method="fcn", target_layer="features").is_saliency
    with pytest.raises(OptionError, match="^not at several scales$") as raised:
        HeatmapOptions(method="fcn", scales="1,2")
    assert raised.value.option == "scales"
    with_traits(monkeypatch, "cam", refuses={})
    assert HeatmapOptions(method="cam", scales="1,2").is_pyramid


def test_the_fixed_window_and_the_torch_note_come_from_window_and_runs_on_torch_only(monkeypatch):
    from fcn_app.cli.app import check_method_window
    from fcn_app.methods import backend_note

    check_method_window("fcn", 3)
    assert backend_note("fcn", "openvino") is None
    with_traits(monkeypatch, "fcn", window=1, runs_on_torch_only=True)
    with pytest.raises(OptionError, match=r"--method fcn scores one feature cell \(window 1\), not 3"):
        check_method_window("fcn", 3)
    assert backend_note("fcn", "openvino").startswith("fcn runs on the torch backend")


def test_a_new_grad_cam_method_is_one_registry_line(monkeypatch):
    from fcn_app.method_registry import _grad_cam

    monkeypatch.setitem(METHODS, "newcam", _grad_cam("newcam", "GradCAM"))
    method = get_method("NewCAM")
    assert method.saliency and method.runs_on_torch_only and method.min_max_scaled and method.extra == "cam"
    assert set(method.refuses) == {"save_scores", "scales"}
