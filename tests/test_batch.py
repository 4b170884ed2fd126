"""Batch jobs: inputs, outputs, summary, exit codes, resume after interruption, sharding (in-process and torchrun).

The model is the tiny 32×32-crop network of ``helpers_batch`` (``--model helpers_batch:tiny_fcn``), so each run
costs milliseconds of compute; subprocesses are used only where a real signal or real processes are the point.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fcn_app.errors import OptionError
from fcn_app.batch import (
    SUMMARY_NAME,
    collect_inputs,
    merge_summaries,
    parse_shard,
    rank_summary_path,
    run_batch,
    run_job,
    shard_items,
)
from fcn_app.cli import main
from fcn_app.io import load_image
from fcn_app.models import load_network
from fcn_app.tasks import HeatmapOptions, HeatmapTask
from helpers_batch import GATE_ENV, is_gallery_file, make_image_folder, open_gate
from helpers_processes import children, descendants, survivors_after

REPO = Path(__file__).resolve().parent.parent
TINY = "helpers_batch:tiny_fcn"
SUBPROCESS_ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(REPO / "tests")]))


def run_cli(*args: str) -> int:
    """Run ``fcn-heatmap ARGS`` in this process; returns the exit code."""
    try:
        main([str(arg) for arg in args])
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


def output_files(out_dir: Path, gallery: bool = False) -> dict[str, bytes]:
    """Every output below ``out_dir`` (not summaries; the gallery's files only with ``gallery``) by relative path →
    bytes."""
    return {
        path.relative_to(out_dir).as_posix(): path.read_bytes()
        for path in sorted(out_dir.rglob("*"))
        if path.is_file() and not path.name.startswith("summary") and (gallery or not is_gallery_file(path, out_dir))
    }


def gallery_images(index_script: bytes) -> list[list]:
    """The image records of a gallery-index.js, with class names in place of class indices."""
    gallery = json.loads(index_script.decode()[len("window.FCN_GALLERY = "):-2])
    return [[*image[:3], [[gallery["classes"][index], value] for index, value in image[3]], *image[4:]]
            for image in gallery["images"]]


def summary_rows(path: Path) -> dict[str, dict]:
    return {row["path"]: row for row in json.loads(path.read_text())["inputs"]}


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("inputs") / "photos"
    return root, make_image_folder(root)


@pytest.fixture(scope="module")
def reference(image_folder, tmp_path_factory) -> tuple[Path, int]:
    """One uninterrupted, unsharded run over the whole folder: what every other run must reproduce."""
    root, _ = image_folder
    out = tmp_path_factory.mktemp("reference")
    code = run_cli(root, "--recursive", "--out", out, "--model", TINY, "--json", "--batch-size", "4")
    return out, code


# --- inputs ------------------------------------------------------------------------------------------------------

def test_collect_inputs_extensions_recursion_filters_and_collisions(image_folder, tmp_path):
    root, files = image_folder
    items, passed_over = collect_inputs([root], recursive=True)
    assert [item.relative for item in items] == sorted(files["good"] + files["bad"])
    assert sorted(path.relative_to(root).as_posix() for path in passed_over) == sorted(files["ignored"])
    top_level, _ = collect_inputs([root])
    assert not any(item.relative.startswith("sub/") for item in top_level)
    # photo.JPG / photo.bmp / photo.webp share a stem, so they keep their extension in the output name
    stems = {item.relative: item.output_stem for item in items}
    assert stems["photo.JPG"] == "photo.JPG" and stems["rgb_00.png"] == "rgb_00"
    assert stems["sub/nested_0.jpeg"] == "sub/nested_0"
    only_jpeg, _ = collect_inputs([root], recursive=True, include=["*.jpeg", "*.JPG"], exclude=["sub/nested_2.*"])
    assert [item.relative for item in only_jpeg] == ["photo.JPG", "sub/nested_0.jpeg", "sub/nested_1.jpeg"]
    globbed, _ = collect_inputs([str(root / "**" / "*.jpeg")])
    assert [item.relative for item in globbed] == ["nested_0.jpeg", "nested_1.jpeg", "nested_2.jpeg"]
    inside, _ = collect_inputs([root], recursive=True, out_dir=root / "sub")
    assert not any(item.relative.startswith("sub/") for item in inside)


def test_list_file_paths_are_relative_to_the_list(image_folder, tmp_path):
    root, _ = image_folder
    listing = root / "list.txt"
    listing.write_text("# two photos and a missing one\nrgb_00.png\n\nsub/nested_1.jpeg\nmissing.png\n")
    try:
        items, _ = collect_inputs(list_file=listing)
    finally:
        listing.unlink()
    assert [item.relative for item in items] == ["missing.png", "rgb_00.png", "sub/nested_1.jpeg"]


def test_shards_are_disjoint_and_complete(image_folder):
    items, _ = collect_inputs([image_folder[0]], recursive=True)
    for world_size in (1, 2, 3, 7):
        shards = [shard_items(items, rank, world_size) for rank in range(world_size)]
        flat = [item.relative for shard in shards for item in shard]
        assert sorted(flat) == [item.relative for item in items] and len(set(flat)) == len(flat)
    assert parse_shard("1/4") == (1, 4)
    for bad in ("4/4", "-1/2", "1", "a/b", "0/0"):
        with pytest.raises(OptionError, match="INDEX"):
            parse_shard(bad)


# --- a whole folder ----------------------------------------------------------------------------------------------

def test_folder_outputs_summary_and_exit_code(image_folder, reference):
    root, files = image_folder
    out, code = reference
    assert code == 1  # three bad files
    rows = summary_rows(out / SUMMARY_NAME)
    assert sorted(rows) == sorted(files["good"] + files["bad"])
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["counts"] == {"ok": len(files["good"]), "skipped": 0, "failed": 3, "pending": 0}
    for name in files["bad"]:
        row = rows[name]
        assert row["status"] == "failed" and row["outputs"] == {}
        assert name in row["reason"] and "\n" not in row["reason"]
    for name in files["good"]:
        row = rows[name]
        assert row["status"] == "ok" and len(row["top_classes"]) == 3
        overlay = Path(row["outputs"]["overlay"])
        assert overlay.parent == (out / name).parent  # mirrors the input tree
        with Image.open(overlay) as picture:
            picture.load()
            expected_height, expected_width = load_image(root / name).shape[:2]
            assert picture.size == (expected_width, expected_height)  # no silent resize
        assert json.loads(Path(row["outputs"]["json"]).read_text())["image"] == str(root / name)
    assert not list(out.rglob("*.tmp"))


def test_image_in_folder_equals_image_alone(image_folder, reference, tmp_path):
    root, _ = image_folder
    out, _ = reference
    assert run_cli(root / "rgb_03.png", "--out", tmp_path, "--model", TINY, "--json") == 0
    for name in ("rgb_03.heatmap.png", "rgb_03.json"):
        assert (tmp_path / name).read_bytes() == (out / name).read_bytes()


def test_all_good_exits_zero_and_rerun_skips(image_folder, tmp_path):
    root, _ = image_folder
    arguments = [root, "--out", tmp_path, "--model", TINY, "--include", "rgb_0[0-2].png"]
    assert run_cli(*arguments) == 0
    first = output_files(tmp_path)
    assert sorted(first) == ["rgb_00.heatmap.png", "rgb_01.heatmap.png", "rgb_02.heatmap.png"]
    assert run_cli(*arguments) == 0
    summary = json.loads((tmp_path / SUMMARY_NAME).read_text())
    assert summary["counts"]["skipped"] == 3 and summary["counts"]["ok"] == 0
    assert summary_rows(tmp_path / SUMMARY_NAME)["rgb_00.png"]["top_classes"]  # carried over from the first run
    later = time.time() + 5
    os.utime(root / "rgb_01.png", (later, later))  # an edited input is redone
    try:
        assert run_cli(*arguments) == 0
        assert json.loads((tmp_path / SUMMARY_NAME).read_text())["counts"] == {
            "ok": 1, "skipped": 2, "failed": 0, "pending": 0}
    finally:
        os.utime(root / "rgb_01.png")
    assert run_cli(*arguments, "--overwrite") == 0
    assert json.loads((tmp_path / SUMMARY_NAME).read_text())["counts"]["ok"] == 3
    assert output_files(tmp_path) == first


def test_interrupted_run_resumes_to_the_same_outputs(image_folder, reference, tmp_path):
    """Ctrl-C arriving in the middle of scoring: summary written, nothing half-written, rerun completes (and writes
    the gallery of an uninterrupted run, byte for byte)."""
    root, files = image_folder
    items, _ = collect_inputs([root], recursive=True)
    options = HeatmapOptions(write_json=True)
    network = load_network(TINY)
    calls = {"count": 0}

    def interrupt_in_the_third_batch(module, args):
        calls["count"] += 1
        if calls["count"] == 9:  # images are scored one by one: the first image of the third batch of 4
            raise KeyboardInterrupt

    hook = network.features.register_forward_pre_hook(interrupt_in_the_third_batch)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".nested_0.heatmap.png.abc123.tmp").write_bytes(b"half")  # a kill -9 leftover
    job_arguments = {"batch_size": 4, "num_workers": 1, "extra_summary": {"model": TINY}}  # (the CLI's summary)
    result = run_job(HeatmapTask(network, options), items, tmp_path, **job_arguments).result
    hook.remove()
    assert result.interrupted
    statuses = {row["path"]: row["status"] for row in json.loads((tmp_path / SUMMARY_NAME).read_text())["inputs"]}
    assert "pending" in statuses.values() and "ok" in statuses.values()
    assert not list(tmp_path.rglob("*.tmp"))
    done = sum(status == "ok" for status in statuses.values())
    resumed = run_job(HeatmapTask(network, options), items, tmp_path, **job_arguments).result
    assert not resumed.interrupted
    assert resumed.counts == {"ok": len(files["good"]) - done, "skipped": done, "failed": 3, "pending": 0}
    assert output_files(tmp_path, gallery=True) == output_files(reference[0], gallery=True)


@pytest.mark.slow
def test_ctrl_c_and_kill_then_rerun_match_an_uninterrupted_run(image_folder, reference, tmp_path):
    """Real signals to a real process with two decode workers, each sent while the run is provably mid-way (the
    gated network of ``helpers_batch`` holds it on an image the test has not let through, however fast the
    machine): SIGINT to the process group, as a terminal's Ctrl-C → exit 130, a summary, no process left behind;
    SIGKILL → the rerun finishes the job."""
    root, files = image_folder
    out, gate = tmp_path / "out", tmp_path / "gate"
    arguments = [sys.executable, "-m", "fcn_app", str(root), "-r", "--out", str(out), "--json", "--num-workers", "2"]

    def start_and_signal(sig: int, images: int) -> tuple[int, str]:
        """Run, letting ``images`` images through; once they are written and both workers are up, signal."""
        open_gate(gate, images)
        already = len(list(out.rglob("*.heatmap.png")))
        process = subprocess.Popen([*arguments, "--model", "helpers_batch:gated_tiny_fcn"],
                                   env=dict(SUBPROCESS_ENV, FCN_HEATMAP_BACKEND="torch", **{GATE_ENV: str(gate)}),
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 120
        while len(list(out.rglob("*.heatmap.png"))) < already + images or len(children(process.pid)) < 2:
            assert process.poll() is None, f"the run ended (code {process.returncode}) before the signal"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.05)
        below = descendants(process.pid)
        os.killpg(process.pid, sig)  # like a terminal: the whole process group, decode workers included
        _, stderr = process.communicate(timeout=60)
        assert survivors_after(below) == [], "a process of the run outlived it"
        return process.returncode, stderr.decode()

    code, stderr = start_and_signal(signal.SIGINT, 1)
    assert code == 130, stderr
    summary = json.loads((out / SUMMARY_NAME).read_text())
    assert summary["interrupted"] and summary["counts"]["pending"] > 0
    code, _ = start_and_signal(signal.SIGKILL, 2)
    assert code == -signal.SIGKILL
    finished = subprocess.run([*arguments, "--model", TINY], env=SUBPROCESS_ENV, capture_output=True, timeout=120)
    assert finished.returncode == 1, finished.stderr.decode()  # the three bad files
    counts = json.loads((out / SUMMARY_NAME).read_text())["counts"]
    assert counts["skipped"] >= 1 and counts["ok"] + counts["skipped"] == len(files["good"])
    assert output_files(out) == output_files(reference[0])
    ours, clean = output_files(out, gallery=True), output_files(reference[0], gallery=True)
    ours_index, clean_index = gallery_images(ours.pop("gallery-index.js")), gallery_images(clean.pop("gallery-index.js"))
    assert ours == clean  # the page and every thumbnail
    # Images finished by the killed run have no classes or size in summary.json (no summary of theirs survived), so
    # none in the gallery either; their thumbnails and links, and all of every other image, are the clean run's.
    assert [image[:3] + image[4:5] for image in ours_index] == [image[:3] + image[4:5] for image in clean_index]
    for mine, theirs in zip(ours_index, clean_index):
        assert mine == theirs or (mine[3] == [] and mine[5] is None), (mine, theirs)
    assert not list(out.rglob("*.tmp"))


# --- sharding ----------------------------------------------------------------------------------------------------

def test_shard_job_array_union_equals_single_run(image_folder, reference, tmp_path):
    root, files = image_folder
    for index in range(2):
        run_cli(root, "-r", "--out", tmp_path, "--model", TINY, "--json", "--batch-size", "4", "--shard", f"{index}/2")
        assert (tmp_path / SUMMARY_NAME).exists() == (index == 1)  # the last shard to finish merges
    shard_paths = [set(summary_rows(rank_summary_path(tmp_path, rank))) for rank in range(2)]
    assert not shard_paths[0] & shard_paths[1]
    merged = json.loads((tmp_path / SUMMARY_NAME).read_text())
    assert merged["counts"] == json.loads((reference[0] / SUMMARY_NAME).read_text())["counts"]
    assert merged["world_size"] == 2 and merged["ranks"] == [0, 1]
    assert output_files(tmp_path, gallery=True) == output_files(reference[0], gallery=True)  # the gallery too
    rank0 = rank_summary_path(tmp_path, 0)
    rank0.write_text(rank_summary_path(tmp_path, 1).read_text().replace('"ranks": [\n    1', '"ranks": [\n    0'))
    with pytest.raises(ValueError, match="two shard summaries"):
        merge_summaries(tmp_path, 2)


@pytest.mark.slow
def test_torchrun_two_ranks_equal_single_run(image_folder, reference, tmp_path):
    """Two real processes under torchrun (gloo on CPU): disjoint work, union equals the single-process run."""
    root, files = image_folder
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "fcn_app", str(root), "-r", "--out", str(tmp_path), "--model", TINY, "--json", "--num-workers", "0",
    ]
    env = dict(SUBPROCESS_ENV, OMP_NUM_THREADS="1")
    completed = subprocess.run(command, env=env, capture_output=True, timeout=180)
    stderr = completed.stderr.decode()
    assert completed.returncode != 0, stderr  # the bad files fail their rank (exit 1), so torchrun fails too
    per_rank = [summary_rows(rank_summary_path(tmp_path, rank)) for rank in range(2)]
    processed = [[path for path, row in rows.items() if row["status"] in ("ok", "failed")] for rows in per_rank]
    assert processed[0] and processed[1], stderr
    assert not set(processed[0]) & set(processed[1])  # nothing processed twice
    assert sorted(processed[0] + processed[1]) == sorted(files["good"] + files["bad"])
    merged = json.loads((tmp_path / SUMMARY_NAME).read_text())
    assert merged["world_size"] == 2
    assert merged["counts"] == json.loads((reference[0] / SUMMARY_NAME).read_text())["counts"]
    assert output_files(tmp_path) == output_files(reference[0])


def test_rows_are_spooled_to_disk_and_streamed_into_the_summary(tmp_path):
    """The summary is assembled from a JSON-lines spool (8 bytes per input in memory), in path order."""
    from fcn_app.batch.summary import RowSpool, summary_header, write_summary

    spool = RowSpool(tmp_path / SUMMARY_NAME, 3)
    assert spool.path.name.startswith(".summary.json.") and spool.path.name.endswith(".tmp")
    rows = [{"path": f"b{n}.png", "status": status, "reason": None} for n, status in enumerate(["ok", "failed", "ok"])]
    for position in (2, 0, 1):  # the writer thread records out of order
        spool.put(position, rows[position])
    assert 1 in spool and spool.get(1) == rows[1] and spool.counts == {"ok": 2, "skipped": 0, "failed": 1, "pending": 0}
    header = summary_header(dict(spool.counts), elapsed_s=2.0)
    written = write_summary(tmp_path / SUMMARY_NAME, header, (spool.get(position) for position in range(3)))
    spool.close()
    payload = json.loads(written.read_text())
    assert payload["inputs"] == rows and payload["total"] == 3 and payload["images_per_s"] == 1.5
    assert sorted(path.name for path in tmp_path.iterdir()) == [SUMMARY_NAME]  # the spool is gone


def test_a_commands_summary_fields_cannot_replace_the_summarys_own():
    """A detect folder run once wrote ``"format": "png"`` over the summary's schema field, so every reader of the
    summary (resume, gallery, shard merge) ignored it."""
    from fcn_app.batch.summary import summary_header

    counts = {"ok": 1, "failed": 0, "skipped": 0, "pending": 0}
    assert summary_header(counts, elapsed_s=1.0, extra={"model": "m", "image_format": "png"})["image_format"] == "png"
    for field in ("format", "counts", "inputs"):
        with pytest.raises(ValueError, match=field):
            summary_header(counts, elapsed_s=1.0, extra={field: "png"})
