"""A real headless browser for the tests: Debian's Chromium driven by Playwright for Python.

`.ci/run` installs Chromium (`apt-get install -y chromium`) when it is absent; Playwright's own browser download
cannot work offline, so the tests launch the system binary. Tests that need a browser take the `browser` fixture
(see conftest.py); it skips, loudly and with the reason, only when no Chromium can be launched at all.
"""

from __future__ import annotations

import os
import shutil

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
