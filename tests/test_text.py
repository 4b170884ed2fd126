"""Labels in any script (issue 11): class names such as "café", "Straße", "кошка" are drawn as their letters.

The letters are checked against paths that do not go through :mod:`fcn_app.text`: Pillow's own ``ImageDraw``
with the font loaded here, the "???" that cv2 used to draw, and the font's missing-glyph box.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFont
from typer.testing import CliRunner

import fcn_app.text as text_module
from fcn_app.cli import app
from fcn_app.detect import Detection
from fcn_app.render import draw_detections
from fcn_app.errors import FontError
from fcn_app.render import draw_legend
from fcn_app.geometry import ScoreGeometry
from fcn_app.scoring import ScoreMap
from fcn_app.tasks import HeatmapOptions, SegmentationTask
from fcn_app.text import DEFAULT_FONT, check_font, draw_text, load_font, text_size

from helpers import random_rgb

REPO = Path(__file__).resolve().parent.parent
NAMES = ["café", "Straße", "кошка"]
LACKING = "\U0010fffd"  # a private-use code point: no font has it, so it is drawn as the missing-glyph box
SIZE = 26


def as_question_marks(name: str) -> str:
    """What cv2.putText drew for a non-ASCII name."""
    return "".join(character if character.isascii() else "?" for character in name)


def pillow_reference(background: np.ndarray, text: str, origin, colour) -> np.ndarray:
    """Pillow's own rendering of ``text`` with the bundled font, loaded here and not through fcn_app.text."""
    picture = Image.fromarray(background)
    font = ImageFont.truetype(str(DEFAULT_FONT), SIZE)
    ImageDraw.Draw(picture).text(origin, text, fill=colour, font=font, anchor="ls")
    return np.asarray(picture)


def glyph_coverage(character: str) -> np.ndarray:
    """Coverage of one character drawn by Pillow alone on a black canvas."""
    canvas = Image.new("L", (60, 50), 0)
    ImageDraw.Draw(canvas).text((10, 38), character, fill=255, font=ImageFont.truetype(str(DEFAULT_FONT), SIZE),
                                anchor="ls")
    return np.asarray(canvas)


def test_the_bundled_font_has_every_letter_of_the_names():
    missing_box = glyph_coverage(LACKING)
    assert missing_box.any()  # the box is drawn: comparing with it can tell a missing glyph
    assert np.array_equal(glyph_coverage("\U0010fffc"), missing_box)  # the comparison does detect a missing one
    for character in sorted({c for name in [*NAMES, "γάτα"] for c in name if not c.isascii()}):  # Greek: README
        coverage = glyph_coverage(character)
        assert coverage.any() and not np.array_equal(coverage, missing_box), character
        assert not np.array_equal(coverage, glyph_coverage("?")), character


@pytest.mark.parametrize("name", NAMES)
def test_names_are_not_drawn_as_question_marks(name):
    background = np.full((40, 140, 3), 30, np.uint8)
    drawn = draw_text(background, name, (4, 30), SIZE, (255, 255, 255))
    assert not np.array_equal(drawn, draw_text(background, as_question_marks(name), (4, 30), SIZE, (255, 255, 255)))
    assert not np.array_equal(drawn, background)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("origin", [(6, 30), (-7, 12), (90, 44)])  # inside, clipped left/top, clipped right/bottom
def test_ink_matches_pillows_own_rendering(name, origin):
    background = random_rgb(48, 150, seed=len(name))
    colour = (250, 200, 10)
    drawn = draw_text(background, name, origin, SIZE, colour)
    reference = pillow_reference(background, name, origin, colour)
    # Pillow blends in integer arithmetic, draw_text in float then rounds: at most 1 level apart.
    assert np.abs(drawn.astype(int) - reference.astype(int)).max() <= 1
    assert np.abs(drawn.astype(int) - background.astype(int)).sum() > 2000  # and there is ink to compare
    np.testing.assert_array_equal(background, random_rgb(48, 150, seed=len(name)))  # input untouched


@pytest.mark.parametrize("name", [*NAMES, "Hg|Éj"])
def test_ink_stays_inside_the_measured_box(name):
    size = text_size(name, SIZE)
    x, y = 20, 50
    drawn = draw_text(np.zeros((90, 200, 3), np.uint8), name, (x, y), SIZE, (255, 255, 255))
    rows, columns = np.nonzero(drawn.any(axis=2))
    assert columns.min() >= x and columns.max() < x + size.width + 1
    assert rows.min() >= y - size.ascent and rows.max() < y + size.descent


def test_glyphs_the_font_lacks_never_crash():
    image = np.zeros((120, 200, 3), np.uint8)
    for text in ["猫", "🐱", LACKING, "caf\u0301e", "a\tb\nc", "", "   "]:
        drawn = draw_text(image, text, (5, 40), SIZE, (255, 255, 255))
        assert drawn.shape == image.shape
        assert text_size(text, SIZE).ascent > 0
    assert draw_text(image, "🐱", (5, 40), SIZE, (255, 255, 255)).any()  # drawn as a box, not skipped
    assert draw_legend(image, ["1. 猫 🐱  0.50"]).shape == image.shape
    boxes = [Detection("猫🐱", 0, 0.9, (20, 40, 80, 60), (60, 70), 1.0)]
    assert draw_detections(image, boxes).shape == image.shape


def test_legend_shows_a_cyrillic_name():
    image = np.full((80, 240, 3), 180, np.uint8)
    legend = draw_legend(image, ["1. кошка  0.91"])
    assert not np.array_equal(legend, draw_legend(image, ["1. ?????  0.91"]))
    assert not np.array_equal(legend, draw_legend(image, [f"1. {LACKING * 5}  0.91"]))


def test_detection_label_shows_a_cyrillic_name_inside_its_label_box():
    image = np.zeros((120, 200, 3), np.uint8)

    def label(name: str) -> np.ndarray:
        return draw_detections(image, [Detection(name, 0, 0.9, (20, 50, 120, 60), (80, 80), 1.0)])

    drawn, as_ascii = label("кошка"), label("?????")
    changed_rows, changed_columns = np.nonzero((drawn != as_ascii).any(axis=2))
    assert changed_rows.size > 0
    assert changed_rows.max() < 50  # only the label above the box differs, the box itself is the same
    # The label's filled box is the class colour; the letters lie inside it.
    colour = np.array([230, 25, 75])
    label_box = (drawn == colour).all(axis=2)[: 50]
    box_rows, box_columns = np.nonzero(label_box)
    assert box_rows.min() <= changed_rows.min() and changed_rows.max() <= box_rows.max()
    assert box_columns.min() <= changed_columns.min() and changed_columns.max() <= box_columns.max()


def test_bad_fonts_raise_font_error(tmp_path):
    not_a_font = tmp_path / "notes.ttf"
    not_a_font.write_text("not a font")
    with pytest.raises(FontError, match="no such file"):
        load_font(tmp_path / "nope.ttf", 12)
    with pytest.raises(FontError, match="not a usable TrueType/OpenType font"):
        check_font(not_a_font)
    with pytest.raises(FontError, match="not a usable"):
        draw_text(np.zeros((8, 8, 3), np.uint8), "a", (0, 6), 8, (255, 255, 255), font=tmp_path)
    with pytest.raises(ValueError, match="uint8 RGB"):
        draw_text(np.zeros((8, 8), np.uint8), "a", (0, 6), 8, (255, 255, 255))
    assert FontError.exit_code == 2
    check_font(None)


def test_fonts_are_loaded_once_per_path_and_size():
    assert load_font(None, 17) is load_font(DEFAULT_FONT, 17)
    assert load_font(None, 17) is not load_font(None, 18)


def test_the_font_and_its_licence_ship_inside_the_package():
    assert DEFAULT_FONT.is_file() and DEFAULT_FONT.parent.parent == Path(text_module.__file__).parent
    assert "Bitstream Vera" in (DEFAULT_FONT.parent / "LICENSE_DEJAVU").read_text()
    pyproject = (REPO / "pyproject.toml").read_text()
    assert '"fonts/DejaVuSans.ttf"' in pyproject and '"fonts/LICENSE_DEJAVU"' in pyproject


@pytest.mark.slow
def test_a_built_wheel_contains_the_font(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        (source / name).write_bytes((REPO / name).read_bytes())
    subprocess.run(["cp", "-r", str(REPO / "fcn_app"), str(source / "fcn_app")], check=True)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                            "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "fcn_app/fonts/DejaVuSans.ttf" in names and "fcn_app/fonts/LICENSE_DEJAVU" in names


# --- --font through the commands --------------------------------------------------------------------------------


@pytest.fixture
def font_copy(tmp_path) -> Path:
    copy = tmp_path / "my font.ttf"
    copy.write_bytes(DEFAULT_FONT.read_bytes())
    return copy


@pytest.fixture
def fonts_used(monkeypatch) -> list[str]:
    """Paths of every font the drawing code loads while the test runs."""
    used = []
    original = text_module._cached_font

    def spy(path: str, size: int):
        used.append(path)
        return original(path, size)

    monkeypatch.setattr(text_module, "_cached_font", spy)
    return used


@pytest.fixture(scope="module")
def small_photo(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "small.png"
    Image.fromarray(random_rgb(96, 128, seed=3)).save(path)
    return path


@pytest.mark.parametrize("command", [
    pytest.param(["heatmap", "--grid"], marks=pytest.mark.slow),  # VGG16 scored on the heatmap path: ~7 s
    ["detect", "--min-score", "0"],
])
def test_font_option_reaches_the_labels(command, small_photo, font_copy, fonts_used, tmp_path):
    result = CliRunner().invoke(app, [command[0], str(small_photo), *command[1:], "--out", str(tmp_path / "out"),
                                      "--font", str(font_copy)])
    assert result.exit_code == 0, result.output
    assert fonts_used and set(fonts_used) == {str(font_copy)}


def test_segmentation_legends_use_the_given_font(font_copy, fonts_used):
    import torch

    logits = torch.from_numpy(np.random.default_rng(0).random((3, 40, 60)).astype(np.float32))
    pixels = ScoreGeometry(grid=(40, 60), stride=(1.0, 1.0), first_center=(0.0, 0.0), window=(1.0, 1.0),
                           receptive_field=(1.0, 1.0))
    score_map = ScoreMap(logits, pixels, (40, 60), ["фон", "кошка", "Straße"])
    SegmentationTask(None, HeatmapOptions(topk=2, font=str(font_copy))).render(random_rgb(40, 60), score_map, None)
    assert fonts_used and set(fonts_used) == {str(font_copy)}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "fcn_app", *args], capture_output=True, text=True,
                          env=environment, timeout=300)


@pytest.mark.parametrize("command, bad", [
    pytest.param([], "/nope.ttf", marks=pytest.mark.slow),  # an interpreter start-up: ~3 s
    pytest.param(["detect"], "not-a-font", marks=pytest.mark.slow),  # a second interpreter start-up: ~6 s
])
def test_a_bad_font_is_one_line_and_exit_2(command, bad, small_photo, tmp_path):
    if bad == "not-a-font":
        bad = str(tmp_path / "notes.txt")
        Path(bad).write_text("hello")
    result = run_cli(*command, str(small_photo), "--font", bad, "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert bad in lines[0] and ".ttf or .otf" in lines[0]
    assert not (tmp_path / "out").exists()  # refused before any work
