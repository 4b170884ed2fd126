"""The command's start-up (fcn_app.startup): the photo is decoded while torch loads, freed memory stays mapped, and
``import fcn_app`` imports no torch — with outputs byte for byte those of a run without any of it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageCms

from helpers_cli import cli_environment, run_fcn, run_in_process

import fcn_app
from fcn_app.errors import InputImageError
from fcn_app.io import decode_image, start_decoding
from fcn_app.io import images as images_module
from fcn_app.startup import _single_photo, keep_freed_memory

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "chelsea.jpg"

pytestmark = pytest.mark.usefixtures("one_thread")  # as the subprocesses (OMP_NUM_THREADS=1): the same sums


@pytest.fixture(autouse=True)
def no_started_decodes():
    """Each test starts and ends with no early decode left in this process."""
    images_module._started.clear()
    yield
    images_module._started.clear()


@pytest.fixture
def counted_decodes(monkeypatch) -> list[tuple]:
    """The decodes that really run (in any thread), by their arguments."""
    calls: list[tuple] = []
    decode_now = images_module._decode_now

    def counting(path, work_size, enlarge, max_pixels):
        calls.append((Path(path).name, work_size) if max_pixels == images_module.DEFAULT_MAX_PIXELS
                     else (Path(path).name, work_size, max_pixels))
        return decode_now(path, work_size, enlarge, max_pixels)

    monkeypatch.setattr(images_module, "_decode_now", counting)
    return calls


def _photo(path: Path, size=(1200, 900), orientation: int | None = 6) -> Path:
    """A JPEG bigger than the default working size, with an sRGB ICC profile and an EXIF rotation."""
    with Image.open(EXAMPLE) as source:
        picture = source.convert("RGB").resize(size, Image.Resampling.BICUBIC)
    exif = Image.Exif()
    if orientation is not None:
        exif[0x0112] = orientation
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    picture.save(path, quality=90, icc_profile=srgb, exif=exif)
    return path


def _same_decode(first, second) -> None:
    assert first.pixels.tobytes() == second.pixels.tobytes()
    assert (first.pixels.shape, first.original_size, first.decoded_size, first.icc_profile) == \
           (second.pixels.shape, second.original_size, second.decoded_size, second.icc_profile)


def test_an_early_decode_is_taken_once_by_the_same_call_and_equals_a_plain_one(tmp_path, counted_decodes):
    photo = _photo(tmp_path / "phone.jpg")
    plain = images_module._decode_now(photo, None, False, images_module.DEFAULT_MAX_PIXELS)
    counted_decodes.clear()
    assert start_decoding(photo, None, enlarge=False)
    assert not start_decoding(photo, None, enlarge=False)  # the same one is under way: not begun twice
    _same_decode(decode_image(photo, None, enlarge=False), plain)
    assert counted_decodes == [("phone.jpg", None)]  # the early decode, and no other
    decode_image(photo, None, enlarge=False)  # taken once: the next call decodes
    assert counted_decodes == [("phone.jpg", None), ("phone.jpg", None)]


def test_other_arguments_decode_as_before_and_leave_the_early_decode(tmp_path, counted_decodes):
    photo = _photo(tmp_path / "phone.jpg")
    plain = images_module._decode_now(photo, 448, False, images_module.DEFAULT_MAX_PIXELS)
    counted_decodes.clear()
    start_decoding(photo, None, enlarge=False)
    _same_decode(decode_image(photo, 448, enlarge=False), plain)  # a working-size copy: not the full-size pixels
    limited = pytest.raises(InputImageError, decode_image, photo, None, enlarge=False, max_pixels=1000)
    assert "more than 1,000 pixels" in str(limited.value)  # another limit: checked, not bypassed
    decode_image(photo, None, enlarge=False)  # the full-size one still comes from the start
    assert counted_decodes == [("phone.jpg", None), ("phone.jpg", 448), ("phone.jpg", None, 1000)]


def test_a_full_size_early_decode_serves_a_working_size_that_keeps_the_image_as_it_is(tmp_path, counted_decodes):
    """An image within the working size (never enlarged) is decoded as stored: the full-size decode is that."""
    small = _photo(tmp_path / "small.jpg", size=(451, 300), orientation=None)
    plain = images_module._decode_now(small, 896, False, images_module.DEFAULT_MAX_PIXELS)
    counted_decodes.clear()
    start_decoding(small, None, enlarge=False)
    _same_decode(decode_image(small, 896, enlarge=False), plain)
    assert counted_decodes == [("small.jpg", None)]
    start_decoding(small, None, enlarge=False)
    enlarged = decode_image(small, 896, enlarge=True)  # enlarging is another decode
    assert enlarged.pixels.shape[:2] == (596, 896)
    assert counted_decodes == [("small.jpg", None), ("small.jpg", None), ("small.jpg", 896)]


def test_a_file_changed_after_the_start_is_decoded_anew(tmp_path):
    photo = _photo(tmp_path / "phone.jpg")
    start_decoding(photo, None, enlarge=False)
    while any(not started.done() for started in images_module._started.values()):
        time.sleep(0.01)
    Image.fromarray(np.full((50, 70, 3), 200, np.uint8)).save(photo, quality=95)
    assert decode_image(photo, None, enlarge=False).pixels.shape == (50, 70, 3)


def test_an_early_decode_that_fails_leaves_the_error_to_the_call(tmp_path):
    photo = _photo(tmp_path / "phone.jpg")
    data = photo.read_bytes()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(data[: len(data) // 3])
    with pytest.raises(InputImageError) as plain:
        decode_image(broken, None, enlarge=False)
    start_decoding(broken, None, enlarge=False)
    with pytest.raises(InputImageError) as after_start:
        decode_image(broken, None, enlarge=False)
    assert str(after_start.value) == str(plain.value) and "truncated" in str(plain.value)
    assert not images_module._started  # the failed one is gone


def test_the_start_up_decodes_only_a_single_photo_argument(tmp_path):
    photo = _photo(tmp_path / "phone.jpg")
    other = _photo(tmp_path / "other.png")
    (tmp_path / "notes.txt").write_text("x")
    assert _single_photo([str(photo), "--format", "jpg", "--out", str(tmp_path / "out")]) == photo
    assert _single_photo(["detect", str(photo), "--work-size", "896"]) == photo
    assert _single_photo([str(photo), str(other)]) is None  # several files: their own decode workers
    assert _single_photo([str(tmp_path)]) is None  # a folder
    assert _single_photo([str(tmp_path / "missing.jpg")]) is None  # the command reports it
    assert _single_photo([str(tmp_path / "notes.txt")]) is None


def test_importing_the_package_imports_no_torch_and_every_public_name_resolves():
    code = ("import sys, fcn_app; print('torch' in sys.modules); import fcn_app.startup, fcn_app.io; "
            "print('torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_environment(),
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
    assert set(fcn_app.__all__) <= set(dir(fcn_app))
    for name in fcn_app.__all__:
        assert getattr(fcn_app, name) is not None, name
    assert fcn_app.compute_score_map.__module__ == "fcn_app.scoring"
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        fcn_app.not_a_name  # noqa: B018


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_memory_stays_mapped_for_the_next_block():
    """Page faults counted by the kernel (getrusage) when a 200 MB block is allocated with malloc (as torch's CPU
    allocator does), written, freed, and allocated and written again: glibc's default maps it anew (a fault per
    4 kB page); after keep_freed_memory() the second one reuses the pages."""
    code = """
import ctypes, resource, sys
from fcn_app.startup import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.argtypes, libc.malloc.restype = (ctypes.c_size_t,), ctypes.c_void_p
libc.memset.argtypes, libc.free.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t), (ctypes.c_void_p,)
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
size = 200 << 20
block = libc.malloc(size); libc.memset(block, 1, size); libc.free(block)
before = faults(); block = libc.malloc(size); libc.memset(block, 1, size); print(faults() - before)
"""
    faults = {}
    for mode in ("keep", "default"):
        result = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                                env=cli_environment(), timeout=120)
        assert result.returncode == 0, result.stderr
        faults[mode] = int(result.stdout)
    pages = (200 << 20) // 4096
    assert faults["default"] > pages // 2 and faults["keep"] < pages // 50, faults


@pytest.mark.slow
def test_the_command_with_its_start_up_writes_the_same_bytes(tmp_path, capsys):
    """``python -m fcn_app`` (start-up decode and heap, then the command) against the command run in this process
    (no start-up): the same table and byte-identical overlay, grid and JSON; ``--verbose`` says the start-up's
    decode was used. A 1200×900 JPEG rotated by EXIF with an ICC profile: the network sees a working-size copy,
    the overlay is drawn on the full-size decode from the start-up."""
    photo = _photo(tmp_path / "phone.jpg")
    options = ["--format", "jpg", "--grid", "--json", "--overwrite"]
    started = run_fcn(photo, *options, "--out", tmp_path / "started", "--verbose")
    assert started.returncode == 0, started.stderr
    if len(os.sched_getaffinity(0)) > 1:
        assert "decoded while the program started" in started.stderr
    code, out, err = run_in_process(capsys, photo, *options, "--out", tmp_path / "plain")
    assert code == 0, err
    names = sorted(path.name for path in (tmp_path / "plain").iterdir())
    assert names == sorted(path.name for path in (tmp_path / "started").iterdir()) and len(names) >= 3, names
    for name in names:
        plain, early = (tmp_path / "plain" / name).read_bytes(), (tmp_path / "started" / name).read_bytes()
        if name.endswith(".json"):
            plain, early = (text.decode().replace(str(tmp_path / "plain"), "OUT") for text in (plain, early))
            early = early.replace(str(tmp_path / "started"), "OUT")
        assert plain == early, name
    with Image.open(tmp_path / "started" / "phone.heatmap.jpg") as overlay:
        assert overlay.size == (900, 1200)  # upright: EXIF orientation 6 applied
