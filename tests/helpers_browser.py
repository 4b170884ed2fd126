"""A real headless browser for the tests: Debian's Chromium driven by Playwright for Python.

`.ci/run` installs Chromium (`apt-get install -y chromium`) when it is absent; Playwright's own browser download
cannot work offline, so the tests launch the system binary. Tests that need a browser take the `browser` fixture
(see conftest.py). When no Chromium can be launched it stops them with the reason (:func:`no_browser`): under
``CI=true`` they fail — a CI without a browser is red, not green with skips — and elsewhere they are skipped.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn
from urllib.parse import urlsplit

import pytest

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def chromium_path() -> str | None:
    """The system Chromium to drive, or None. FCN_TEST_CHROMIUM overrides the search."""
    override = os.environ.get("FCN_TEST_CHROMIUM")
    if override:
        return override
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def launch_browser(playwright):
    """Chromium, headless; --no-sandbox because CI runs as root, where Chromium's sandbox refuses to start."""
    return playwright.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])


def in_ci() -> bool:
    """Whether this run is a CI's (``CI=true``, as GitHub Actions, GitLab and `.ci/run` set it)."""
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def no_browser(reason: str) -> NoReturn:
    """Stop a browser test that cannot get a browser, saying why: a failure under CI, a skip elsewhere."""
    if in_ci():
        pytest.fail(f"BROWSER TESTS FAILED (CI=true): {reason}", pytrace=False)
    pytest.skip(f"BROWSER TESTS SKIPPED: {reason}")


def block_outside_requests(page) -> list[str]:
    """Abort every request of ``page`` to a host other than 127.0.0.1, as on a machine without internet access;
    the list fills with the URLs refused."""
    refused = []

    def route(request_route):
        if urlsplit(request_route.request.url).hostname == "127.0.0.1":
            request_route.continue_()
        else:
            refused.append(request_route.request.url)
            request_route.abort()

    page.route("**/*", route)
    return refused
