"""A segmentation checkpoint on a working-size copy (``--work-size``, ``--scales``): the network runs on the resized
image, its per-pixel logits are resized bilinearly onto the original pixels, and the labels are their argmax at
the original size; ``native`` (the default) is the path as it was; ``--format`` changes the overlay only.

The second path in each test is written here from scratch: Pillow's resize of the file, the model's own forward,
``F.interpolate`` of its logits, softmax, mean, argmax. Labels from the two paths are compared where the top class
leads by more than 1e-4 (``helpers.assert_labels_where_decided``): on a boundary between regions they may tie.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageCms

from fcn_app.geometry import ScoreGeometry, upsample_to_pixels
from fcn_app.io import decode_input
from fcn_app.models.preprocess import normalize_pixels
from fcn_app.resolution import pixel_scores_on_original, score_map_on_original
from fcn_app.scoring import ScoreMap, ScoringOptions, compute_score_map
from fcn_app.segmentation.checkpoint import load_segmentation_model
from fcn_app.tasks import HeatmapOptions, SegmentationTask, process_image, process_input

from helpers import assert_close_scaled, assert_labels_where_decided, random_rgb
from helpers_batch import tiny_segmentation_checkpoint
from helpers_cli import run_in_process

pytestmark = pytest.mark.usefixtures("one_thread")

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
SIZE = (66, 90)  # (height, width) of the photo; the working size 45 halves it to 33×45


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_segmentation_checkpoint(tmp_path_factory.mktemp("seg") / "fcn8s.pt", seed=2)  # labels 2 classes


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_segmentation_model(checkpoint)[0]


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    """Blotches of colour (a noise image enlarged), so the labels form regions of several classes."""
    pixels = cv2.resize(random_rgb(6, 8, seed=1), SIZE[::-1], interpolation=cv2.INTER_CUBIC)
    path = tmp_path_factory.mktemp("photo") / "photo.png"
    Image.fromarray(pixels).save(path, icc_profile=SRGB)
    return path


def run_task(model, photo: Path, folder: Path, **options):
    task = SegmentationTask(model, HeatmapOptions(**options), ScoringOptions("fp32"))
    task.check()
    return process_input(task, decode_input(photo, task.decode_request), folder / "photo", source=photo.name)


def own_probabilities(model, pixels: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """The model's own forward on ``pixels``, logits resized to ``size`` with ``F.interpolate``, softmax."""
    with torch.no_grad():
        logits = model(normalize_pixels(pixels[None], model.mean, model.std).contiguous())
    return torch.softmax(F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[0], dim=0)


def test_native_default_is_the_path_as_it_was(model, photo, tmp_path):
    """No new option: labels and scores are the network's own at the image's size, and the files are those of the
    in-memory path (picture = network input) — byte for byte."""
    rendered, written = run_task(model, photo, tmp_path / "file", save_scores=True)
    pixels = np.asarray(Image.open(photo).convert("RGB"))
    reference = compute_score_map(model, pixels, precision="fp32")
    assert torch.equal(torch.from_numpy(np.load(written["scores"])["logits"]), reference.logits)
    assert torch.equal(torch.from_numpy(rendered.labels.astype(np.int64)), reference.probabilities().argmax(0))
    assert rendered.summary["work_size"] == {"width": 90, "height": 66, "rule": "native"}
    task = SegmentationTask(model, HeatmapOptions(work_size="native", save_scores=True), ScoringOptions("fp32"))
    _, in_memory = process_image(task, pixels, tmp_path / "memory" / "photo")
    assert set(written) == set(in_memory) == {"segmentation", "classes", "labels", "scores"}
    for kind in written:
        assert written[kind].read_bytes() == in_memory[kind].read_bytes(), kind


def test_working_size_labels_the_original_pixels(model, photo, tmp_path):
    rendered, written = run_task(model, photo, tmp_path, work_size=45, save_scores=True)
    network_pixels = np.asarray(Image.open(photo).convert("RGB").resize((45, 33), Image.LANCZOS))
    expected = own_probabilities(model, network_pixels, SIZE)
    labels = torch.from_numpy(np.asarray(Image.open(written["labels"])).astype(np.int64))
    assert labels.shape == SIZE and len(labels.unique()) >= 2, labels.unique()
    assert_labels_where_decided(labels, expected)
    assert rendered.overlay.shape == (*SIZE, 3) and rendered.summary["work_size"] == {
        "width": 45, "height": 33, "rule": "45 px"}
    scores = np.load(written["scores"])  # the network's 33×45 grid, placed on the original pixels
    assert scores["logits"].shape == (3, 33, 45) and tuple(scores["image_size"]) == SIZE
    np.testing.assert_allclose(scores["stride"], (66 / 33, 90 / 45))


def test_scales_one_is_the_plain_run_and_a_pyramid_is_the_mean_of_probabilities(model, photo, tmp_path):
    plain, _ = run_task(model, photo, tmp_path / "plain", work_size=45)
    one, _ = run_task(model, photo, tmp_path / "one", work_size=45, scales="1")
    np.testing.assert_array_equal(one.labels, plain.labels)
    np.testing.assert_array_equal(one.overlay, plain.overlay)
    pyramid, _ = run_task(model, photo, tmp_path / "pyramid", work_size=45, scales="0.5,1.5")
    network_pixels = np.asarray(Image.open(photo).convert("RGB").resize((45, 33), Image.LANCZOS))
    levels = [own_probabilities(model, cv2.resize(network_pixels, size, interpolation=interpolation), SIZE)
              for size, interpolation in (((22, 16), cv2.INTER_AREA), ((68, 50), cv2.INTER_LINEAR))]
    assert_labels_where_decided(torch.from_numpy(pyramid.labels.astype(np.int64)), torch.stack(levels).mean(0))
    assert not np.array_equal(pyramid.labels, plain.labels)  # the other scales did change something
    assert pyramid.summary["scales"] == [0.5, 1.5] and pyramid.summary["fuse"] == "mean"
    maximum, _ = run_task(model, photo, tmp_path / "max", work_size=45, scales="0.5,1.5", fuse="max")
    assert_labels_where_decided(torch.from_numpy(maximum.labels.astype(np.int64)), torch.stack(levels).amax(0))


def test_jpg_overlay_keeps_the_icc_profile_labels_and_panels_stay_png(capsys, checkpoint, photo, tmp_path):
    code, out, err = run_in_process(capsys, photo, "--checkpoint", checkpoint, "--work-size", "45", "--scales",
                                    "0.5,1", "--format", "jpg", "--json", "--out", tmp_path)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["work_size"] == {"width": 45, "height": 33, "rule": "45 px"} and summary["fuse"] == "mean"
    assert sorted(path.name for path in tmp_path.iterdir()) == [
        "photo.classes.png", "photo.json", "photo.labels.png", "photo.segmentation.jpg"]
    with Image.open(tmp_path / "photo.segmentation.jpg") as overlay:
        assert overlay.format == "JPEG" and overlay.size == SIZE[::-1] and overlay.info.get("icc_profile") == SRGB
    for name in ("photo.classes.png", "photo.labels.png"):
        with Image.open(tmp_path / name) as picture:
            assert picture.format == "PNG"


@pytest.mark.parametrize("work, original", [((7, 11), (20, 31)), ((13, 9), (40, 27)), ((30, 40), (17, 23))])
def test_pixel_scores_on_original_are_the_geometrys_interpolation(work, original):
    """The fast path (bilinear resize) against the geometry's own per-pixel interpolation, odd factors both ways."""
    score_map = compute_score_map_like(work)
    mapped = score_map_on_original(score_map, original)
    expected = upsample_to_pixels(mapped.logits, mapped.geometry, original)
    on_original = pixel_scores_on_original(score_map, original)
    assert on_original.geometry.is_pixel_grid and on_original.image_size == original
    assert_close_scaled(on_original.logits, expected, rtol=1e-5)


def compute_score_map_like(size: tuple[int, int]) -> ScoreMap:
    """A per-pixel score map of an image of ``size``, as a segmentation model gives (seeded random logits)."""
    geometry = ScoreGeometry(grid=size, stride=(1.0, 1.0), first_center=(0.0, 0.0), window=(1.0, 1.0),
                             receptive_field=(9.0, 9.0))
    return ScoreMap(torch.randn(4, *size, generator=torch.Generator().manual_seed(size[0])), geometry, size,
                    list("abcd"))
