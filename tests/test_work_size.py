"""The heatmap command on a big photo: the network sees a working-size copy (``--work-size``, a pyramid with
``--scales``), the outputs are drawn on — and their coordinates refer to — the original pixels, in the chosen
``--format`` with the photo's ICC profile; ``native`` is the path as it was; one image alone or in a folder gives
the same files.

Most runs use ``helpers_batch:spot_fcn``, a model whose answer is known (heat peaks on a red square's centre),
so the peak pixel is checked against where the square was painted in the original, not against the code itself.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from fcn_app.errors import OptionError
from fcn_app.io import DecodeRequest, decode_input, load_image
from fcn_app.scoring import ScoringOptions
from fcn_app.tasks import HeatmapOptions, HeatmapTask, SegmentationTask, process_image, process_input

from helpers_batch import spot_fcn, tiny_fcn
from helpers_cli import assert_one_line_error, run_fcn_many

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
PHOTO_SIZE = (1800, 2400)  # (height, width): big enough for JPEG draft decoding, small enough to be quick
SQUARE = (slice(640, 672), slice(960, 992))  # rows, cols of the red square: one spot_fcn window at 1/4 scale
SQUARE_CENTER = (975.5, 655.5)  # (x, y) in original pixel coordinates (pixel centres at integers)
SPOT = "helpers_batch:spot_fcn"


def photo_pixels(seed: int = 0) -> np.ndarray:
    """Grey-green gradients with mild noise and one saturated red square (see ``SQUARE``)."""
    rng = np.random.default_rng(seed)
    height, width = PHOTO_SIZE
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([60 + 40 * y / height, 90 + 60 * x / width, 80 + 40 * np.sin(x / 97.0)], axis=-1)
    image += rng.normal(0, 3, image.shape)
    image[SQUARE] = (250, 10, 10)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("photos")
    pixels = photo_pixels()
    tagged, plain = folder / "photo.jpg", folder / "plain.jpg"
    Image.fromarray(pixels).save(tagged, quality=95, icc_profile=SRGB)
    Image.fromarray(pixels).save(plain, quality=95)
    Image.fromarray(pixels[:300, :400]).save(folder / "small.png")
    return {"photo": tagged, "plain": plain, "small": folder / "small.png", "folder": folder}


@pytest.fixture(scope="module")
def runs(photos, tmp_path_factory):
    """Every command of this module at once (each spends most of its time importing torch)."""
    out = tmp_path_factory.mktemp("out")
    photo, plain = photos["photo"], photos["plain"]
    folder_copy = out / "in"
    folder_copy.mkdir()
    for name in ("photo.jpg", "small.png"):
        shutil.copy2(photos["folder"] / name, folder_copy / name)
    commands = {
        "work": [photo, "--model", SPOT, "--work-size", "600", "--json", "--grid", "--out", out / "work"],
        "jpg": [photo, "--model", SPOT, "--work-size", "600", "--format", "jpg", "--grid", "--out", out / "jpg"],
        "native": [plain, "--model", SPOT, "--work-size", "native", "--json", "--grid", "--out", out / "native"],
        "pyramid": [photo, "--model", SPOT, "--work-size", "600", "--scales", "0.5,1,2", "--fuse", "mean", "--json",
                    "--out", out / "pyramid"],
        "single_photo": [folder_copy / "photo.jpg", "--model", SPOT, "--json", "--format", "webp",
                         "--out", out / "single"],
        "single_small": [folder_copy / "small.png", "--model", SPOT, "--json", "--format", "webp",
                         "--out", out / "single"],
        "folder": [folder_copy, "--model", SPOT, "--json", "--format", "webp", "--out", out / "folder"],
    }
    results = dict(zip(commands, run_fcn_many(list(commands.values()))))
    for name, result in results.items():
        assert result.returncode == 0, f"{name}: {result.stderr}"
    return out, results


def peak_of(summary: dict, name: str) -> tuple[int, int]:
    entry = next(entry for entry in summary["classes"] if entry["name"] == name)
    return entry["peak_pixel"]["x"], entry["peak_pixel"]["y"]


@pytest.mark.slow
def test_network_sees_the_working_size_outputs_refer_to_the_original(runs):
    out, results = runs
    summary = json.loads((out / "work" / "photo.json").read_text())
    assert json.loads(results["work"].stdout)["classes"] == summary["classes"]
    assert summary["image_size"] == {"width": 2400, "height": 1800}
    assert summary["work_size"] == {"width": 600, "height": 450, "rule": "600 px"}
    assert summary["stride"] == [32.0, 32.0]  # 8 working px = 32 original px
    x, y = peak_of(summary, "red spot")
    # The square's centre in the original, up to the half pixel a centre between two pixels leaves.
    assert abs(x - SQUARE_CENTER[0]) <= 0.5 and abs(y - SQUARE_CENTER[1]) <= 0.5, (x, y)
    for name in ("photo.heatmap.png", "photo.grid.png"):
        with Image.open(out / "work" / name) as picture:
            assert picture.info.get("icc_profile") == SRGB
            if name == "photo.heatmap.png":
                assert picture.size == (2400, 1800)


@pytest.mark.slow
def test_jpg_format_keeps_the_size_and_the_icc_profile(runs):
    out, results = runs
    assert sorted(path.name for path in (out / "jpg").iterdir()) == ["photo.grid.jpg", "photo.heatmap.jpg"]
    with Image.open(out / "jpg" / "photo.heatmap.jpg") as picture:
        assert picture.format == "JPEG" and picture.size == (2400, 1800)
        assert picture.info.get("icc_profile") == SRGB
        overlay = np.asarray(picture.convert("RGB"))
    with Image.open(out / "work" / "photo.heatmap.png") as png:
        lossless = np.asarray(png.convert("RGB"))
    assert np.abs(overlay.astype(int) - lossless.astype(int)).mean() < 3  # the same picture, JPEG-compressed
    assert "network sees 600×450 (600 px)" in " ".join(results["jpg"].stdout.split())


@pytest.mark.slow
def test_native_is_the_path_as_it_was(runs, photos, tmp_path):
    """``--work-size native`` against the in-memory path of before (``load_image`` → ``process_image``)."""
    out, _ = runs
    task = HeatmapTask(spot_fcn(), HeatmapOptions(write_json=True, grid=True), ScoringOptions("auto"))
    _, written = process_image(task, load_image(photos["plain"]), tmp_path / "plain", source=str(photos["plain"]))
    for kind in ("overlay", "grid"):
        assert (out / "native" / written[kind].name).read_bytes() == written[kind].read_bytes(), kind
    cli = json.loads((out / "native" / "plain.json").read_text())
    reference = json.loads(written["json"].read_text())
    assert cli.pop("work_size") == {"width": 2400, "height": 1800, "rule": "native"}
    reference.pop("work_size")
    assert cli == reference
    assert cli["stride"] == [8.0, 8.0]
    x, y = peak_of(cli, "red spot")
    assert SQUARE[1].start <= x < SQUARE[1].stop and SQUARE[0].start <= y < SQUARE[0].stop


@pytest.mark.slow
def test_pyramid_levels_are_fused_on_the_original_pixels(runs):
    out, results = runs
    summary = json.loads((out / "pyramid" / "photo.json").read_text())
    assert summary["scales"] == [0.5, 1.0, 2.0] and summary["fuse"] == "mean"
    assert [level["map_size"] for level in summary["levels"]] == [
        {"rows": 28, "cols": 37}, {"rows": 56, "cols": 75}, {"rows": 112, "cols": 150}]
    assert [level["stride"] for level in summary["levels"]] == [[64.0, 64.0], [32.0, 32.0], [16.0, 16.0]]
    x, y = peak_of(summary, "red spot")
    assert SQUARE[1].start <= x < SQUARE[1].stop and SQUARE[0].start <= y < SQUARE[0].stop, (x, y)


@pytest.mark.slow
def test_folder_and_single_runs_write_the_same_files_with_the_default_working_size(runs):
    out, _ = runs
    single, folder = out / "single", out / "folder"
    for stem in ("photo", "small"):
        assert (single / f"{stem}.heatmap.webp").read_bytes() == (folder / f"{stem}.heatmap.webp").read_bytes()
        assert (json.loads((single / f"{stem}.json").read_text())
                == json.loads((folder / f"{stem}.json").read_text()))
    photo = json.loads((folder / "photo.json").read_text())
    # spot_fcn's window is 8 px: the default working size is 4 windows = 32 px (longer side); never enlarged.
    assert photo["work_size"] == {"width": 32, "height": 24, "rule": "4 windows, never enlarged"}
    assert photo["image_size"] == {"width": 2400, "height": 1800}
    small = json.loads((folder / "small.json").read_text())
    assert small["work_size"]["width"] == 32 and small["image_size"] == {"width": 400, "height": 300}
    rows = {row["path"]: row for row in json.loads((folder / "summary.json").read_text())["inputs"]}
    assert rows["photo.jpg"]["image_size"] == [2400, 1800]
    assert rows["photo.jpg"]["outputs"]["overlay"].endswith("photo.heatmap.webp")


@pytest.mark.slow
def test_resume_sees_the_chosen_format(runs):
    out, _ = runs
    again, = run_fcn_many([[out / "in", "--model", SPOT, "--json", "--format", "webp", "--out", out / "folder"]])
    assert again.returncode == 0, again.stderr
    assert json.loads((out / "folder" / "summary.json").read_text())["counts"]["skipped"] == 2


@pytest.mark.slow
def test_bad_values_are_one_line_on_stderr(photos, tmp_path):
    photo = photos["photo"]
    cases = [
        (["--work-size", "big"], "--work-size: 'big' is neither a number of pixels"),
        (["--work-size", "0"], "--work-size: must be at least 1 pixel"),
        (["--format", "gif"], "--format: unknown picture format 'gif'; choose one of png, jpg, webp"),
        (["--fuse", "median"], "--fuse: unknown fuse mode 'median'"),
        (["--scales", "0,1"], "--scales: every scale must be a positive number"),
        (["--scales", "0.5,1", "--save-scores"], "--save-scores: raw scores are saved for one scale"),
    ]
    results = run_fcn_many([[photo, "--model", SPOT, "--out", tmp_path, *args] for args, _ in cases])
    for (_, message), result in zip(cases, results):
        assert_one_line_error(result, 2, message)
    assert list(tmp_path.iterdir()) == []


# --- the library side ------------------------------------------------------------------------------------------


def test_the_command_path_in_process_puts_the_peak_on_the_original_square(photos, tmp_path):
    """What the command runs for one image (decode at the task's request → predict → render → write), in process."""
    task = HeatmapTask(spot_fcn(), HeatmapOptions(work_size=600, write_json=True, image_format="jpg"),
                       ScoringOptions("fp32"))
    image = decode_input(photos["photo"], task.decode_request)
    assert image.network_pixels.shape == (450, 600, 3) and image.picture_size == (1800, 2400)
    rendered, written = process_input(task, image, tmp_path / "photo", source="photo.jpg")
    x, y = peak_of(rendered.summary, "red spot")
    assert abs(x - SQUARE_CENTER[0]) <= 0.5 and abs(y - SQUARE_CENTER[1]) <= 0.5, (x, y)
    assert rendered.overlay.shape == (1800, 2400, 3)
    with Image.open(written["overlay"]) as picture:
        assert picture.format == "JPEG" and picture.info.get("icc_profile") == SRGB
    assert "network sees 600×450 (600 px) · map 56×75" in task.report(rendered).title


@pytest.mark.parametrize("values, option", [
    ({"work_size": "huge"}, "work_size"), ({"work_size": -3}, "work_size"), ({"image_format": "bmp"}, "image_format"),
    ({"fuse": "sum"}, "fuse"), ({"scales": "a,b"}, "scales"), ({"scales": (0.5, 1), "save_scores": True}, "save_scores"),
])
def test_options_name_the_wrong_option_without_flags(values, option):
    with pytest.raises(OptionError) as refused:
        HeatmapOptions(**values)
    assert refused.value.option == option and "--" not in str(refused.value)


def test_work_size_values_and_the_decode_request_they_make():
    network = tiny_fcn()  # 32-px window
    assert HeatmapOptions(work_size="640").work_size == 640 and HeatmapOptions(image_format="JPEG").image_format == "jpg"
    request = HeatmapTask(network, HeatmapOptions()).decode_request
    assert (request.work_size, request.enlarge, request.network_side) == (128, False, 128)
    request = HeatmapTask(network, HeatmapOptions(work_size=300, max_side=200)).decode_request
    assert (request.network_side, request.enlarge) == (300, True)  # asked for: enlarged past the picture
    assert HeatmapTask(network, HeatmapOptions(max_side=100)).decode_request.network_side == 100
    assert HeatmapTask(network, HeatmapOptions(work_size="native", max_side=90)).decode_request.network_side == 90


def test_the_picture_is_decoded_again_only_when_the_network_saw_other_pixels(photos):
    small = decode_input(photos["small"], DecodeRequest(work_size=896))
    assert not small.is_resized and small.picture() is small.network_pixels  # no second decode
    big = decode_input(photos["photo"], DecodeRequest(work_size=600, max_side=1200))
    assert big.network_pixels.shape == (450, 600, 3) and big.picture_size == (900, 1200)
    picture = big.picture()
    assert picture.shape == (900, 1200, 3) and big.icc_profile == SRGB
    np.testing.assert_array_equal(picture, load_image(photos["photo"], max_side=1200))


def test_segmentation_runs_native_unless_a_working_size_is_given():
    assert SegmentationTask(None, HeatmapOptions()).decode_request.work_size is None
    assert SegmentationTask(None, HeatmapOptions(work_size="native")).decode_request.work_size is None
    request = SegmentationTask(None, HeatmapOptions(work_size=520)).decode_request
    assert (request.work_size, request.enlarge) == (520, True)  # tests/test_seg_work_size.py runs it


@pytest.mark.slow
def test_vgg16_default_on_a_big_jpeg(photos, tmp_path):
    """The product default (seeded random VGG16 weights): 4 windows of 224 px = 896 px, overlay at full size."""
    result, = run_fcn_many([[photos["photo"], "--format", "jpg", "--json", "--out", tmp_path]])
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["work_size"] == {"width": 896, "height": 672, "rule": "4 windows, never enlarged"}
    assert summary["map_size"] == {"rows": 15, "cols": 22}
    for entry in summary["classes"]:
        assert 0 <= entry["peak_pixel"]["x"] < 2400 and 0 <= entry["peak_pixel"]["y"] < 1800
    with Image.open(tmp_path / "photo.heatmap.jpg") as picture:
        assert picture.size == (2400, 1800) and picture.info.get("icc_profile") == SRGB
