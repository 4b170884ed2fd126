"""The batch paths the README documents and no other test reaches: the one-by-one retry after a failed batch, the
"cannot render" row, folder runs that exit 2 (no images) and 3 (output folder not writable), ``--list`` through
the real command, and the model cache reloading when the weights file changes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from fcn_app.batch import SUMMARY_NAME, collect_inputs, run_batch
from fcn_app.io import load_image
from fcn_app.tasks import HeatmapOptions, HeatmapTask, picture_of
from fcn_app.scoring import load_scoring_network

from helpers import random_state_dict
from helpers_batch import is_gallery_file, make_image_folder, tiny_fcn
from helpers_cli import assert_one_line_error, run_fcn_many

SAME_SIZE = ["rgb_00.png", "rgb_01.png", "rgb_02.png"]  # 40×40 each: one batch at --batch-size 3


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs") / "photos"
    make_image_folder(root)
    return root


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory):
    """Every input alone (batch size 1, plain task): what the runs below must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("reference")
    run_batch(HeatmapTask(tiny_fcn(), HeatmapOptions(write_json=True)), collect_inputs([folder], recursive=True)[0],
              out, num_workers=0)
    return out


def rows_by_path(out) -> dict[str, dict]:
    return {row["path"]: row for row in json.loads((out / SUMMARY_NAME).read_text())["inputs"]}


class _FailsOn(HeatmapTask):
    """A heatmap task whose ``predict`` raises on any batch holding ``bad`` (as a model out of memory or hitting an
    unsupported size would), and whose ``render`` raises a plain bug on ``unrenderable``."""

    def __init__(self, bad: np.ndarray | None = None, unrenderable: np.ndarray | None = None) -> None:
        super().__init__(tiny_fcn(), HeatmapOptions(write_json=True))
        self.bad, self.unrenderable = bad, unrenderable
        self.batch_sizes: list[int] = []

    def predict(self, images):
        self.batch_sizes.append(len(images))
        if self.bad is not None and any(np.array_equal(image, self.bad) for image in images):
            raise RuntimeError("simulated: not enough memory\nsecond line of the message")
        return super().predict(images)

    def render(self, image, prediction, source):
        if self.unrenderable is not None and np.array_equal(picture_of(image)[0], self.unrenderable):
            raise ZeroDivisionError("simulated rendering bug")
        return super().render(image, prediction, source)


def test_a_failed_batch_is_retried_one_by_one(folder, reference, tmp_path):
    items = [item for item in collect_inputs([folder])[0] if item.relative in SAME_SIZE]
    task = _FailsOn(bad=load_image(folder / "rgb_01.png"))
    result = run_batch(task, items, tmp_path, batch_size=3, num_workers=0)
    assert task.batch_sizes == [3, 1, 1, 1]  # the whole batch once, then each image alone
    rows = rows_by_path(tmp_path)
    assert rows["rgb_01.png"]["status"] == "failed" and rows["rgb_01.png"]["outputs"] == {}
    assert rows["rgb_01.png"]["reason"] == (f"{folder / 'rgb_01.png'}: cannot compute score map "
                                            "(simulated: not enough memory); try downscaling it")
    assert result.counts == {"ok": 2, "skipped": 0, "failed": 1, "pending": 0}
    for stem in ("rgb_00", "rgb_02"):  # the good neighbours: the outputs they get alone
        for suffix in (".heatmap.png", ".json"):
            assert (tmp_path / (stem + suffix)).read_bytes() == (reference / (stem + suffix)).read_bytes()
    assert not list(tmp_path.glob("rgb_01*")) and not list(tmp_path.rglob("*.tmp"))


def test_a_rendering_bug_is_one_failed_row_and_the_batch_goes_on(folder, reference, tmp_path):
    items = [item for item in collect_inputs([folder])[0] if item.relative in SAME_SIZE]
    task = _FailsOn(unrenderable=load_image(folder / "rgb_02.png"))
    result = run_batch(task, items, tmp_path, batch_size=3, num_workers=0)
    rows = rows_by_path(tmp_path)
    assert rows["rgb_02.png"]["status"] == "failed" and rows["rgb_02.png"]["outputs"] == {}
    assert rows["rgb_02.png"]["reason"] == f"{folder / 'rgb_02.png'}: cannot render: simulated rendering bug"
    assert result.counts == {"ok": 2, "skipped": 0, "failed": 1, "pending": 0}
    for stem in ("rgb_00", "rgb_01"):
        assert (tmp_path / f"{stem}.heatmap.png").read_bytes() == (reference / f"{stem}.heatmap.png").read_bytes()
    assert not list(tmp_path.glob("rgb_02*")) and not list(tmp_path.rglob("*.tmp"))


@pytest.mark.slow
def test_folder_exit_codes_and_list_file_through_the_real_command(folder, reference, tmp_path):
    """No images → exit 2; output folder not writable → exit 3 (one line each, nothing on stdout); ``--list`` →
    the listed images' outputs, byte-identical to the folder run's, and the missing entry one failed row."""
    no_images = tmp_path / "no_images"
    no_images.mkdir()
    (no_images / "notes.txt").write_text("not an image\n")
    blocker = tmp_path / "taken"
    blocker.write_text("keep me")
    listing = folder / "todo.txt"  # (a .txt: never an input of the folder itself)
    listing.write_text("# two photos, one in a sub-folder, and a typo\nrgb_03.png\n\nsub/nested_1.jpeg\nmissing.png\n")
    model = ["--model", "helpers_batch:tiny_fcn", "--num-workers", "0"]
    empty, unwritable, below_a_file, listed = run_fcn_many([
        [no_images, "--out", tmp_path / "out_empty", *model],
        [folder, "--out", blocker, *model],
        [folder, "--out", blocker / "below", *model],
        ["--list", listing, "--out", tmp_path / "out_list", "--json", *model],
    ])
    assert_one_line_error(empty, 2, f"no image files found in {no_images} (add --recursive")
    assert not (tmp_path / "out_empty").exists()
    assert_one_line_error(unwritable, 3, str(blocker))
    assert_one_line_error(below_a_file, 3, str(blocker))
    assert blocker.read_text() == "keep me"

    out = tmp_path / "out_list"
    assert listed.returncode == 1, listed.stderr  # the typo failed, the others were processed
    assert "Traceback" not in listed.stderr and f"failed: {folder / 'missing.png'}: no such file" in listed.stderr
    rows = rows_by_path(out)
    assert sorted(rows) == ["missing.png", "rgb_03.png", "sub/nested_1.jpeg"]
    assert rows["missing.png"]["status"] == "failed" and "no such file" in rows["missing.png"]["reason"]
    written = sorted(path.relative_to(out).as_posix() for path in out.rglob("*")
                     if path.name != SUMMARY_NAME and not is_gallery_file(path, out))
    assert written == ["rgb_03.heatmap.png", "rgb_03.json", "sub", "sub/nested_1.heatmap.png", "sub/nested_1.json"]
    for name in written:
        if (out / name).is_file():
            assert (out / name).read_bytes() == (reference / name).read_bytes(), name


@pytest.mark.slow
def test_model_cache_reloads_when_the_weights_file_changes(tmp_path):
    """Same path, new contents (same size): the new mtime gives a new network holding the new weights; an unchanged
    file gives the very same object. Checked against the saved state dicts, not against the loader."""
    path = tmp_path / "alexnet.pth"
    first_state, second_state = random_state_dict("alexnet", seed=0), random_state_dict("alexnet", seed=1)
    torch.save(first_state, path)
    load_scoring_network.cache_clear()
    first = load_scoring_network("alexnet", weights_path=path, device="cpu")
    assert load_scoring_network("alexnet", weights_path=path, device="cpu") is first
    torch.testing.assert_close(first.features[0].weight, first_state["features.0.weight"], rtol=0, atol=0)

    size = path.stat().st_size
    torch.save(second_state, path)
    later = path.stat().st_mtime_ns + 1_000_000_000  # a coarse file-system clock must not hide the change
    os.utime(path, ns=(later, later))
    assert path.stat().st_size == size  # only the contents and the mtime tell the files apart
    second = load_scoring_network("alexnet", weights_path=path, device="cpu")
    assert second is not first
    torch.testing.assert_close(second.features[0].weight, second_state["features.0.weight"], rtol=0, atol=0)
    torch.testing.assert_close(first.features[0].weight, first_state["features.0.weight"], rtol=0, atol=0)
    load_scoring_network.cache_clear()
