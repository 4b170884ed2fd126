"""Test-wide setup: no test may touch the network or the user's real torch cache.

``TORCH_HOME`` points at a temporary folder whose hub cache holds seeded random VGG16 weights under the real
file name, so the product's default loading path runs for real; ``FCN_HEATMAP_OFFLINE=1`` makes any attempted
download fail fast instead of reaching out. ``FCN_HEATMAP_BACKEND=torch`` and ``FCN_HEATMAP_PRECISION=fp32`` pin
what ``auto`` means (on an AMX CPU with OpenVINO installed it would mean OpenVINO in bf16): the suite's exactness
tests compare torch fp32 bit for bit, here and in the CLI subprocesses; tests of ``auto`` itself unset them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from helpers import write_default_weights  # noqa: E402

from fcn_app.choices import usable_cpus  # noqa: E402

# What "auto" means in this suite: torch fp32, for the bit-exact comparisons. Set at import, before any test
# module copies os.environ for its subprocesses (a session fixture would come too late for those copies).
os.environ["FCN_HEATMAP_BACKEND"] = "torch"
os.environ["FCN_HEATMAP_PRECISION"] = "fp32"

# Under pytest-xdist (addopts in pyproject.toml: one worker per core, at most four) each worker gets its share of
# the cores for torch and for the CLI subprocesses it starts; two workers each running two threads on two cores
# spend their time contending.
def pytest_xdist_auto_num_workers(config) -> int:
    """``-n auto``: one worker per core, at most four (each worker imports torch and holds its own models)."""
    return min(4, usable_cpus())


if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _threads = str(max(1, usable_cpus() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    os.environ["OMP_NUM_THREADS"] = _threads
    torch.set_num_threads(int(_threads))


@pytest.fixture(scope="session", autouse=True)
def torch_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("torch_home")
    previous = {key: os.environ.get(key) for key in ("TORCH_HOME", "FCN_HEATMAP_OFFLINE", "FCN_HEATMAP_WEIGHTS",
                                                     "FCN_HEATMAP_BACKEND", "FCN_HEATMAP_PRECISION")}
    os.environ["TORCH_HOME"] = str(home)
    os.environ["FCN_HEATMAP_OFFLINE"] = "1"
    os.environ.pop("FCN_HEATMAP_WEIGHTS", None)
    write_default_weights(home, "vgg16", seed=0)
    yield home
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: the test machines are shared, and tiny convolutions run faster on one thread
    than on two contended ones. Use with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def browser():
    """A headless Chromium for one test module (tests/helpers_browser.py). If none can start, the tests stop with
    the reason: they fail under CI=true and are skipped elsewhere (helpers_browser.no_browser).

    Per module, not per session: Playwright's sync API keeps an event loop and a driver process in this process
    while it runs, and later tests that fork (DataLoader workers) must not run beside them — a session-wide one
    once hung the suite's end."""
    from helpers_browser import chromium_path, launch_browser, no_browser

    try:
        from playwright.sync_api import sync_playwright
    except ImportError as error:  # pragma: no cover - the test extra installs it
        no_browser(f"playwright is not installed ({error}); pip install -e '.[test]'")
    if chromium_path() is None:
        no_browser("no Chromium on PATH; apt-get install -y chromium")
    with sync_playwright() as playwright:
        try:
            instance = launch_browser(playwright)
        except Exception as error:  # noqa: BLE001 - any launch failure means: no browser here
            no_browser(f"Chromium would not start: {error}")
        yield instance
        instance.close()
