"""The gallery of a folder run (fcn_app/batch/gallery.py): OUT/index.html + gallery-index.js + thumbnails.

What is checked: a real folder run (tiny model) writes them atomically, with every finished image, its classes and
values as in summary.json, links that exist and the failures with their reasons; a run interrupted after three
images counts the five it never reached (data and page text, exact); a resumed run (new input, a lost
thumbnail) writes the very bytes of a clean run; 10,000 records keep the page the same small file; and a real
Chromium opened on the file (no server) filters by class, sorts by peak probability and by name, pages, and shows
the failures. ``FCN_GALLERY_SCREENSHOT=path`` saves the browser's view (scripts/make_gallery_screenshot.py makes
the README's picture from a run with a trained digit classifier).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from fcn_app.batch import GALLERY_NAME, SUMMARY_NAME, collect_inputs, run_job
from fcn_app.batch.gallery import GALLERY_DATA_NAME, THUMBNAIL_SIDE, THUMBNAILS_DIR, gallery_records, write_gallery
from fcn_app.cli import app
from fcn_app.tasks import HeatmapOptions, HeatmapTask
from helpers import random_rgb
from helpers_batch import spot_fcn

pytestmark = pytest.mark.usefixtures("one_thread")

# spot_fcn's answer is known: "red spot" where a window is red, else "other"; its top class per image varies.
OPTIONS = HeatmapOptions(topk=1, write_json=True, work_size="native")
DATA_PREFIX = "window.FCN_GALLERY = "


def read_gallery(out: Path) -> dict:
    text = (out / GALLERY_DATA_NAME).read_text(encoding="ascii")
    assert text.startswith(DATA_PREFIX) and text.endswith(";\n")
    return json.loads(text[len(DATA_PREFIX):-2])


def summary_rows(out: Path) -> dict[str, dict]:
    return {row["path"]: row for row in json.loads((out / SUMMARY_NAME).read_text())["inputs"]}


def make_inputs(folder: Path, count: int = 8) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for index in range(count):
        name = f"{'sub/' if index % 4 == 3 else ''}image_{index:02d}.png"
        (folder / name).parent.mkdir(exist_ok=True)
        pixels = random_rgb(40 + 8 * (index % 3), 48, seed=index) // 8
        if index % 3 != 1:  # red all over, redder for a higher index: "red spot" peaks at 0.88 → 0.99
            pixels[..., 0] += 140 + 3 * index
        Image.fromarray(pixels).save(folder / name)
        names.append(name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    return names


def run(inputs: Path, out: Path, network=None):
    items, _ = collect_inputs([inputs], recursive=True, out_dir=out)
    return run_job(HeatmapTask(network or spot_fcn(), OPTIONS), items, out, num_workers=0)


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gallery")
    names = make_inputs(root / "in")
    job = run(root / "in", root / "out")
    return root / "in", root / "out", names, job


def test_a_folder_run_writes_the_gallery_with_thumbnails_links_and_failures(folder_run):
    inputs, out, names, job = folder_run
    assert job.gallery_path == out / GALLERY_NAME and job.gallery_path.is_file()
    assert not list(out.rglob("*.tmp"))
    gallery, rows = read_gallery(out), summary_rows(out)
    by_path = {image[0]: image for image in gallery["images"]}
    assert sorted(by_path) == sorted(names) and gallery["counts"] == {"images": len(names), "failed": 1, "pending": 0}
    for name, (_, thumbnail, picture, classes, links, size) in by_path.items():
        row = rows[name]
        assert (out / picture).resolve() == Path(row["outputs"]["overlay"]).resolve()
        assert dict(links) == {kind: Path(os.path.relpath(path, out)).as_posix() for kind, path in row["outputs"].items()}
        assert all((out / target).is_file() for _, target in links)
        assert thumbnail.startswith(f"{THUMBNAILS_DIR}/")
        with Image.open(out / thumbnail) as small, Image.open(out / picture) as full:
            assert small.format == "JPEG" and max(small.size) <= THUMBNAIL_SIDE
            assert small.size == full.size  # 40–56 px pictures are never enlarged
        expected = {entry["name"]: round(entry["peak_probability"], 4) for entry in row["top_classes"]}
        assert {gallery["classes"][index]: value for index, value in classes} == expected
        assert [value for _, value in classes] == sorted(expected.values(), reverse=True)
        assert size == row["image_size"]
    (problem,) = gallery["problems"]
    assert problem == ["broken.jpg", "failed", rows["broken.jpg"]["reason"]] and "broken.jpg" in problem[2]
    assert gallery["model"] is None and gallery["metric_label"] == "peak probability"


def test_a_resumed_run_updates_the_gallery_to_the_bytes_of_a_clean_run(folder_run, tmp_path):
    inputs, out, names, _ = folder_run
    shutil.copytree(inputs, tmp_path / "in")  # copy2 keeps the times: the copied outputs stay up to date
    shutil.copytree(out, tmp_path / "out")
    Image.fromarray(random_rgb(44, 44, seed=99)).save(tmp_path / "in" / "added.png")
    lost = next((tmp_path / "out" / THUMBNAILS_DIR).glob("image_00*"))
    lost.unlink()  # e.g. outputs written by a run with --no-gallery: the rebuild makes it from the picture
    network = spot_fcn()
    resumed = run(tmp_path / "in", tmp_path / "out", network)
    assert resumed.result.counts == {"ok": 1, "skipped": len(names), "failed": 1, "pending": 0}
    assert lost.is_file() and "added.png" in {image[0] for image in read_gallery(tmp_path / "out")["images"]}
    run(tmp_path / "in", tmp_path / "clean", network)

    def gallery_bytes(folder: Path) -> dict[str, bytes]:
        files = [folder / GALLERY_NAME, folder / GALLERY_DATA_NAME, *sorted((folder / THUMBNAILS_DIR).rglob("*.jpg"))]
        return {path.relative_to(folder).as_posix(): path.read_bytes() for path in files}

    assert gallery_bytes(tmp_path / "out") == gallery_bytes(tmp_path / "clean")
    assert len(gallery_bytes(tmp_path / "clean")) == 2 + len(names) + 1


#: An interrupted run: Ctrl-C arrives while the fourth image is being scored, after three were scored.
SCORED_BEFORE_THE_INTERRUPT = 3


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A folder run stopped by ``KeyboardInterrupt`` (what Ctrl-C raises) in the 4th ``predict`` call: in-process,
    one image per call, so exactly which inputs were reached does not depend on timing."""
    root = tmp_path_factory.mktemp("interrupted")
    names = make_inputs(root / "in")
    task = HeatmapTask(spot_fcn(), OPTIONS)
    scored = task.predict
    calls = []

    def predict_until_interrupted(images):
        calls.append(len(images))
        if len(calls) > SCORED_BEFORE_THE_INTERRUPT:
            raise KeyboardInterrupt
        return scored(images)

    task.predict = predict_until_interrupted
    items, _ = collect_inputs([root / "in"], recursive=True, out_dir=root / "out")
    job = run_job(task, items, root / "out", num_workers=0, batch_size=1)
    assert job.result.interrupted and calls == [1] * (SCORED_BEFORE_THE_INTERRUPT + 1)
    return root / "out", names, job


def test_an_interrupted_run_counts_the_inputs_it_did_not_reach(interrupted_run):
    """8 images and broken.jpg: 3 scored, broken.jpg failed (decoded before the interrupt: it sorts first), the
    other 5 never reached — the gallery's counts and problem rows say so, as the summary does."""
    out, names, job = interrupted_run
    not_reached = len(names) - SCORED_BEFORE_THE_INTERRUPT
    assert not_reached == 5
    assert job.result.counts == {"ok": SCORED_BEFORE_THE_INTERRUPT, "skipped": 0, "failed": 1, "pending": not_reached}
    gallery, rows = read_gallery(out), summary_rows(out)
    assert gallery["counts"] == {"images": SCORED_BEFORE_THE_INTERRUPT, "failed": 1, "pending": not_reached}
    pending = sorted(path for path, row in rows.items() if row["status"] == "pending")
    assert len(pending) == not_reached and {image[0] for image in gallery["images"]}.isdisjoint(pending)
    assert gallery["problems"] == [["broken.jpg", "failed", rows["broken.jpg"]["reason"]]] + [
        [path, "pending", "not processed: the run was interrupted"] for path in pending]


def test_no_gallery_writes_neither_page_nor_thumbnails(folder_run, tmp_path):
    inputs, _, _, _ = folder_run
    result = CliRunner().invoke(app, ["heatmap", str(inputs), "-r", "--out", str(tmp_path), "--model", "helpers_batch:spot_fcn",
                                      "--num-workers", "0", "--no-gallery"])
    assert result.exit_code == 1, result.output  # broken.jpg
    assert (tmp_path / SUMMARY_NAME).is_file() and "gallery:" not in result.output
    assert not (tmp_path / GALLERY_NAME).exists() and not (tmp_path / THUMBNAILS_DIR).exists()


def test_detection_rows_give_each_class_its_best_box_and_segmentation_rows_their_peak(tmp_path):
    detect = {"path": "street.jpg", "status": "ok", "outputs": {}, "image_size": [8, 8], "reason": None,
              "top_classes": [{"name": "dog", "score": 0.4}, {"name": "cat", "score": 0.5}, {"name": "dog", "score": 0.9}]}
    records = gallery_records(tmp_path, [detect])
    assert records["metric_label"] == "detection score" and records["classes"] == ["cat", "dog"]
    assert records["images"][0][3] == [[1, 0.9], [0, 0.5]]  # dog's best box first
    segment = {**detect, "top_classes": [{"name": "road", "pixel_fraction": 0.7, "peak_probability": 0.6},
                                         {"name": "car", "pixel_fraction": 0.1, "peak_probability": 0.95}]}
    records = gallery_records(tmp_path, [segment])
    assert records["metric_label"] == "peak probability" and records["images"][0][3] == [[0, 0.95], [1, 0.6]]


def synthetic_rows(count: int) -> list[dict]:
    """Summary rows of a heatmap run over ``count`` images (no model; the outputs need not exist)."""
    classes = [f"class {index:03d}" for index in range(200)]
    rows = []
    for index in range(count):
        name = f"batch_{index // 1000:02d}/photo_{index:05d}.jpg"
        stem = name.rsplit(".", 1)[0]
        if index % 500 == 7:
            rows.append({"path": name, "input": f"/data/{name}", "status": "failed", "outputs": {},
                         "top_classes": [], "image_size": None, "reason": f"/data/{name}: cannot decode"})
            continue
        top = [{"name": classes[(index * 7 + rank * 13) % len(classes)],
                "peak_probability": round(((index * 7919 + rank) % 1000) / 1000 / (rank + 1), 6)} for rank in range(3)]
        rows.append({"path": name, "input": f"/data/{name}", "status": "ok" if index % 2 else "skipped",
                     "outputs": {"overlay": f"OUT/{stem}.heatmap.png", "json": f"OUT/{stem}.json"},
                     "top_classes": top, "image_size": [640, 480], "reason": None})
    return rows


@pytest.fixture(scope="module")
def ten_thousand(tmp_path_factory):
    out = tmp_path_factory.mktemp("ten_thousand")
    started = time.perf_counter()
    write_gallery(out, [{**row, "outputs": {kind: str(out / path[4:]) for kind, path in row["outputs"].items()}}
                        for row in synthetic_rows(10_000)])
    print(f"gallery of 10,000 records built in {time.perf_counter() - started:.2f} s "
          f"(page {(out / GALLERY_NAME).stat().st_size} B, data {(out / GALLERY_DATA_NAME).stat().st_size} B)")
    return out


@pytest.mark.slow
def test_ten_thousand_records_keep_the_page_small(ten_thousand, tmp_path):
    gallery = read_gallery(ten_thousand)
    assert gallery["counts"] == {"images": 9980, "failed": 20, "pending": 0} and len(gallery["images"]) == 9980
    assert len(gallery["problems"]) == 20 and len(gallery["classes"]) == 200
    write_gallery(tmp_path, synthetic_rows(10))
    page = (ten_thousand / GALLERY_NAME).read_bytes()
    assert page == (tmp_path / GALLERY_NAME).read_bytes() and len(page) < 16_000  # the page does not grow with the run
    assert (ten_thousand / GALLERY_DATA_NAME).stat().st_size < 250 * 10_000  # ~170 bytes per image
    assert gallery["images"][0][1] is None  # no picture on disk, so no thumbnail; the page shows the link


@pytest.mark.slow
def test_the_gallery_filters_sorts_pages_and_lists_failures_in_a_real_browser(folder_run, ten_thousand, browser):
    _, out, names, _ = folder_run
    gallery = read_gallery(out)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    failed_loads: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("requestfailed", lambda request: failed_loads.append(request.url))
    page.goto((out / GALLERY_NAME).as_uri())  # file://, no server
    page.wait_for_load_state("load")

    def shown() -> list[tuple[str, float]]:
        return [(path, float(value)) for path, value in page.eval_on_selector_all(
            "#grid .card", "cards => cards.map(card => [card.dataset.path, card.dataset.value])")]

    best = {image[0]: image[3][0][1] for image in gallery["images"]}
    assert shown() == sorted(best.items(), key=lambda item: (-item[1], item[0]))
    assert page.eval_on_selector_all("#grid img", "images => images.every(image => image.loading === 'lazy')")
    page.wait_for_function("[...document.querySelectorAll('#grid img')].every(image => image.complete)")
    assert page.eval_on_selector_all("#grid img", "images => images.every(image => image.naturalWidth > 0)")

    members = {index: {image[0]: value for image in gallery["images"] for chosen, value in image[3] if chosen == index}
               for index in range(len(gallery["classes"]))}
    index = min((index for index in members if 0 < len(members[index]) < len(names)), key=lambda i: len(members[i]))
    page.select_option("#class-filter", str(index))
    assert shown() == sorted(members[index].items(), key=lambda item: (-item[1], item[0]))
    assert set(page.locator("#grid .card .chosen .class-name").all_inner_texts()) == {gallery["classes"][index]}
    page.select_option("#sort", "value-asc")
    assert shown() == sorted(members[index].items(), key=lambda item: (item[1], item[0]))
    page.select_option("#class-filter", "")
    page.select_option("#sort", "name")
    assert [path for path, _ in shown()] == sorted(names)

    problems = page.locator("#problems")
    assert problems.is_visible() and page.inner_text("#problems-title") == "1 failed"
    assert page.inner_text("#problem-rows").count("broken.jpg") == 2  # the input, and the reason naming it
    assert not errors and not failed_loads, (errors, failed_loads)
    if os.environ.get("FCN_GALLERY_SCREENSHOT"):
        page.screenshot(path=os.environ["FCN_GALLERY_SCREENSHOT"])

    page.goto((ten_thousand / GALLERY_NAME).as_uri())
    page.wait_for_load_state("load")
    assert len(shown()) == 100 and "page 1 of 100 · 9980 shown" in page.inner_text("#page-label")
    first_page = shown()
    page.click("#next")
    second_page = shown()
    values = [value for _, value in first_page + second_page]
    assert len(second_page) == 100 and values == sorted(values, reverse=True)
    assert "page 2 of 100" in page.inner_text("#page-label") and page.inner_text("#problems-title") == "20 failed"
    assert not errors, errors  # (its pictures do not exist: only the page's own errors count here)
    page.close()


@pytest.mark.slow
def test_an_interrupted_runs_page_shows_the_not_reached_count_in_a_real_browser(interrupted_run, browser):
    out, names, _ = interrupted_run
    not_reached = len(names) - SCORED_BEFORE_THE_INTERRUPT
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto((out / GALLERY_NAME).as_uri())
    page.wait_for_load_state("load")
    assert page.inner_text("#counts") == f"{SCORED_BEFORE_THE_INTERRUPT} images · {1 + not_reached} not done"
    assert page.inner_text("#problems-title") == \
        f"1 failed, {not_reached} not reached (the run was interrupted; rerun to finish)"
    statuses = page.eval_on_selector_all("#problem-rows tr", "rows => rows.map(row => row.cells[1].textContent)")
    assert statuses == ["failed"] + ["not reached"] * not_reached
    assert not errors, errors
    page.close()
