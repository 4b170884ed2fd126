"""The runtime registry (issue 24, point 2): ``fcn_app.choices`` (torch-free, for ``--help``) and
``fcn_app.runtimes.RUNTIMES`` name the same runtimes with the same install hints, and a runtime is one object
behind the :class:`~fcn_app.runtimes.base.Runtime` protocol — registering one more needs no other code."""

from __future__ import annotations

from typing import get_type_hints

import numpy as np
import pytest
import torch

from fcn_app import choices, runtimes
from fcn_app.errors import OptionError
from fcn_app.models import to_fully_convolutional
from fcn_app.runtimes import RUNTIMES, get_runtime, resolve_backend, run_on_runtime
from fcn_app.runtimes.base import LibraryRuntime, Runtime
from helpers import assert_close_scaled, tiny_classifier

PROTOCOL_MEMBERS = [*get_type_hints(Runtime), "available", "load", "read", "compile"]


def test_choices_name_the_registry_s_runtimes_and_hints():
    assert choices.BACKENDS == ("auto", *RUNTIMES)
    assert {name: runtime.install_hint for name, runtime in RUNTIMES.items() if runtime.install_hint} \
        == choices.BACKEND_INSTALL_HINTS
    assert runtimes.INSTALL_HINTS == choices.BACKEND_INSTALL_HINTS


@pytest.mark.parametrize("name", list(RUNTIMES))
def test_each_runtime_implements_the_protocol_under_its_own_name(name):
    runtime = get_runtime(name)
    assert runtime.name == name
    assert [member for member in PROTOCOL_MEMBERS if not hasattr(runtime, member)] == []
    assert runtime.precisions and set(runtime.precisions) <= set(choices.PRECISIONS) - {"auto"}
    assert runtimes.runtime_precisions(name) == runtime.precisions


def test_auto_is_not_a_runtime():
    with pytest.raises(OptionError, match="'auto' is not a runtime; choose one of torch, openvino, onnxruntime"):
        get_runtime("auto")


class _ThroughOnnxRuntime(LibraryRuntime):
    """A runtime defined only here: ONNX Runtime under another name, at fp32."""

    name = "elsewhere"
    display_name = "Elsewhere"
    precisions = ("fp32",)
    install_hint = "pip install elsewhere"

    def available(self) -> bool:
        return True

    def load(self):
        return RUNTIMES["onnxruntime"].load()

    def compile(self, model, precision, threads):
        return RUNTIMES["onnxruntime"].compile(model, precision, threads)


@pytest.mark.slow  # an ONNX export and a session: ~1.5 s
def test_a_runtime_registered_in_one_line_scores_like_torch(monkeypatch):
    pytest.importorskip("onnxruntime")
    runtime = _ThroughOnnxRuntime()
    monkeypatch.setitem(RUNTIMES, runtime.name, runtime)
    monkeypatch.setitem(choices.BACKEND_INSTALL_HINTS, runtime.name, runtime.install_hint)
    monkeypatch.setattr(choices, "BACKENDS", (*choices.BACKENDS, runtime.name))
    assert resolve_backend(runtime.name, "cpu") == runtime.name
    network = to_fully_convolutional(tiny_classifier(), input_size=32, categories=list("abcde"))
    batch = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 40, 48), dtype=np.float32))
    with torch.no_grad():
        expected = network(batch)
    assert_close_scaled(run_on_runtime(runtime.name, network, batch, "fp32"), expected)
    with pytest.raises(OptionError, match="Elsewhere runs fp32 only, not bf16; choose precision fp32, or backend "
                                          "torch or openvino"):
        run_on_runtime(runtime.name, network, batch, "bf16")
