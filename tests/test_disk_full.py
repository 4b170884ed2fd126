"""Disk full: reported in one line with exit code 3, and no partial file is left under any name."""

from __future__ import annotations

import errno
import os
import subprocess
import uuid

import pytest
import torch
from PIL import Image

from fcn_app.errors import OutputError
from fcn_app.io import atomic_write_bytes

from helpers import EXAMPLES, random_state_dict
from helpers_cli import assert_one_line_error, run_fcn

def test_simulated_enospc_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    target.write_text("previous complete result")

    def disk_full(descriptor):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OutputError, match="no space left on device"):
        atomic_write_bytes(target, b"new result")
    assert target.read_text() == "previous complete result"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["result.json"]


@pytest.fixture
def tiny_filesystem(tmp_path):
    """A real 96 KiB tmpfs (needs root and mount permission; skipped elsewhere)."""
    mount_point = tmp_path / f"small-{uuid.uuid4().hex[:6]}"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount_point)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], capture_output=True)


@pytest.mark.slow
def test_real_full_filesystem_is_reported_and_leaves_nothing_partial(tiny_filesystem, tmp_path):
    weights = tmp_path / "alexnet.pth"
    torch.save(random_state_dict("alexnet", seed=0), weights)
    result = run_fcn(EXAMPLES / "coffee.jpg", "--out", tiny_filesystem, "--model", "alexnet", "--weights", weights,
                     "--grid")
    assert_one_line_error(result, 3, "no space left on device")
    for path in tiny_filesystem.iterdir():
        assert not path.name.endswith(".tmp"), f"temporary file left: {path.name}"
        Image.open(path).verify()  # anything that exists under its final name is complete
