"""The real weights path: hub cache under TORCH_HOME, download with progress, offline errors, safe loading."""

from __future__ import annotations

import os
import pickle
import shutil
from urllib.error import URLError

import pytest
import torch

from fcn_app.errors import WeightsError, WeightsUnavailableError
from fcn_app.models import cached_weights_path, default_weights, load_classifier, load_fcn, read_state_dict

from helpers import random_state_dict


def test_default_path_is_the_torch_hub_cache_under_torch_home(torch_home):
    path = cached_weights_path(default_weights("vgg16"))
    assert path == torch_home / "hub" / "checkpoints" / "vgg16-397923af.pth"
    assert path.is_file()


@pytest.mark.slow
def test_load_fcn_uses_cached_weights_and_metadata(torch_home):
    network = load_fcn("vgg16")
    expected = random_state_dict("vgg16", seed=0)
    torch.testing.assert_close(network.features[0].weight, expected["features.0.weight"], rtol=0, atol=0)
    torch.testing.assert_close(network.head[0].weight.flatten(1), expected["classifier.0.weight"], rtol=0, atol=0)
    assert len(network.categories) == 1000 and network.categories[281] == "tabby"
    assert network.mean == pytest.approx((0.485, 0.456, 0.406)) and network.input_size == (224, 224)


@pytest.mark.slow
def test_missing_weights_are_downloaded_once_with_progress(tmp_path, monkeypatch, torch_home):
    """Simulated download (no network in tests): the same code path fetches into the cache, then reuses it."""
    home = tmp_path / "fresh_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("FCN_HEATMAP_OFFLINE")
    source = torch_home / "hub" / "checkpoints" / "vgg16-397923af.pth"
    calls = []

    def fake_download(url, destination, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix, progress))
        shutil.copyfile(source, destination)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    load_classifier("vgg16")
    load_classifier("vgg16")
    assert calls == [("https://download.pytorch.org/models/vgg16-397923af.pth", "397923af", True)]
    assert (home / "hub" / "checkpoints" / "vgg16-397923af.pth").is_file()


@pytest.mark.slow
def test_offline_without_cache_says_where_to_put_the_file(tmp_path, monkeypatch):
    home = tmp_path / "empty_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("FCN_HEATMAP_OFFLINE")

    def no_network(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(WeightsUnavailableError) as info:
        load_fcn("vgg16")
    message = str(info.value)
    assert str(home / "hub" / "checkpoints" / "vgg16-397923af.pth") in message
    assert "528 MB" in message and "local weights file" in message and "TORCH_HOME" in message
    assert info.value.option == "weights"  # the CLI names its --weights flag
    assert "name resolution" in message and "\n" not in message


@pytest.mark.slow
def test_offline_flag_never_tries_to_download(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "none"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("tried to download"))
    with pytest.raises(WeightsUnavailableError, match="FCN_HEATMAP_OFFLINE"):
        load_fcn("vgg16")


@pytest.mark.slow
def test_weights_path_and_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "alexnet.pth"
    torch.save(random_state_dict("alexnet", seed=3), path)
    network = load_fcn("alexnet", weights_path=path)
    assert network.arch == "alexnet"
    monkeypatch.setenv("FCN_HEATMAP_WEIGHTS", str(path))
    classifier, _ = load_classifier("alexnet")
    torch.testing.assert_close(classifier.features[0].weight, random_state_dict("alexnet", 3)["features.0.weight"])


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/fcn-heatmap-pwned",))


def test_pickles_with_code_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    with open(path, "wb") as stream:
        pickle.dump({"features.0.weight": _Exploit()}, stream)
    with pytest.raises(WeightsError, match="refused|not a PyTorch"):
        read_state_dict(path)
    assert not os.path.exists("/tmp/fcn-heatmap-pwned")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a PyTorch checkpoint"),
        (b"this is text", "not a PyTorch checkpoint"),
    ],
)
def test_non_checkpoints_are_clear_errors(tmp_path, content, message):
    path = tmp_path / "w.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=message):
        read_state_dict(path)


@pytest.mark.slow
def test_wrong_shapes_name_the_layer_and_suggest_the_model(tmp_path):
    state = random_state_dict("vgg11", seed=0)
    path = tmp_path / "vgg11.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match="does not fit vgg16.*right model"):
        load_classifier("vgg16", weights_path=path)
    state["classifier.6.weight"] = torch.zeros(10, 4096)
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"wrong shape: classifier.6.weight \(10, 4096\)"):
        load_classifier("vgg11", weights_path=path)


def test_not_a_state_dict_and_missing_file(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(WeightsError, match="does not contain a state dict"):
        read_state_dict(path)
    with pytest.raises(WeightsError, match="not found"):
        read_state_dict(tmp_path / "nope.pth")
