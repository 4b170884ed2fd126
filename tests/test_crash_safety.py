"""Crash safety and hostile folders: kill -9 at random moments, files that vanish, symlink loops, directories
named like images — the good inputs' outputs stay byte-identical to a clean run and nothing is left half-written.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fcn_app.batch import GALLERY_NAME, SUMMARY_NAME, collect_inputs, run_batch
from fcn_app.tasks import HeatmapOptions, HeatmapTask

from helpers_batch import GATE_ENV, assert_nothing_partial, is_gallery_file, make_image_folder, open_gate, tiny_fcn
from hostile_corpus import build_corpus

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
ENV = dict(os.environ, PYTHONPATH=f"{REPO}{os.pathsep}{TESTS}", OMP_NUM_THREADS="1",
           FCN_HEATMAP_BACKEND="torch")  # (the gated network needs torch)


def output_bytes(out: Path) -> dict[str, bytes]:
    """Every output file below ``out`` (summaries and the gallery aside) by relative path."""
    return {
        str(path.relative_to(out)): path.read_bytes()
        for path in sorted(out.rglob("*"))
        if path.is_file() and not path.name.startswith("summary") and not is_gallery_file(path, out)
    }


def kill_group(process: subprocess.Popen) -> None:
    """SIGKILL the process and its decode workers (its own process group). The process must still be running and
    must die of this very signal: a kill that arrives after it finished would prove nothing, so it fails."""
    assert process.poll() is None, f"the process had already exited (code {process.returncode}) before the kill"
    os.killpg(process.pid, signal.SIGKILL)  # ProcessLookupError here fails the test too
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, f"exit code {process.returncode}: not killed by the SIGKILL"


def final_outputs(out: Path) -> list[Path]:
    """Outputs under their final names (no temporaries, no summaries, no gallery) below ``out``."""
    return [path for path in out.rglob("*") if path.is_file() and not path.name.endswith(".tmp")
            and not path.name.startswith("summary") and not is_gallery_file(path, out)]


@pytest.mark.slow
def test_hostile_folder_keeps_good_outputs_identical_to_a_clean_run(tmp_path):
    hostile = tmp_path / "hostile"
    cases = build_corpus(hostile)
    (hostile / "folder.jpg").mkdir()  # a directory named like an image
    (hostile / "folder.jpg" / "inside.png").write_bytes((hostile / "rgba.png").read_bytes())
    os.symlink(hostile, hostile / "loop")  # a symlink loop inside the folder
    vanishing = hostile / "vanishing.png"
    shutil.copyfile(hostile / "rgba.png", vanishing)

    clean = tmp_path / "clean"
    clean.mkdir()
    for case in cases:
        if case.ok:
            shutil.copyfile(hostile / case.name, clean / case.name)
    shutil.copytree(hostile / "folder.jpg", clean / "folder.jpg")

    task = HeatmapTask(tiny_fcn(), HeatmapOptions(grid=True))  # (JSON would name the differing input folders)
    reference = run_batch(task, collect_inputs([clean], recursive=True)[0], tmp_path / "out_clean", num_workers=1)
    assert reference.counts["failed"] == 0

    items, _ = collect_inputs([hostile], recursive=True)  # the symlink loop does not make this endless
    assert len({item.source.resolve() for item in items}) == len(items), "an input was listed twice"
    vanishing.unlink()  # disappears between listing and reading
    result = run_batch(task, items, tmp_path / "out_hostile", num_workers=1)

    rows = {row["path"]: row for row in json.loads(result.summary_path.read_text(encoding="utf-8"))["inputs"]}
    assert rows["vanishing.png"]["status"] == "failed" and "no such file" in rows["vanishing.png"]["reason"]
    for case in cases:
        row = rows[case.name]
        assert row["status"] == ("ok" if case.ok else "failed"), (case.name, row)
        if not case.ok:
            assert "\n" not in row["reason"] and case.name in row["reason"]
    assert rows["folder.jpg/inside.png"]["status"] == "ok"
    assert output_bytes(tmp_path / "out_hostile") == output_bytes(tmp_path / "out_clean")
    assert_nothing_partial(tmp_path / "out_hostile")


@pytest.fixture(scope="module")
def folder_and_reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    make_image_folder(root)
    reference = tmp_path_factory.mktemp("reference")
    task = HeatmapTask(tiny_fcn(), HeatmapOptions(write_json=True))
    run_batch(task, collect_inputs([root], recursive=True)[0], reference, num_workers=1)
    return root, reference


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kill_9_after_k_of_n_outputs_then_rerun_gives_the_clean_outputs(folder_and_reference, tmp_path, seed):
    """kill -9 once k of the n outputs exist (0 < k < n, a different k per seed, checked before the kill), then the
    same command again: every output byte-identical to a clean run's, no temporary file anywhere.

    The gated network of ``helpers_batch`` lets ⌈k/2⌉ images through and holds the run on the next, so the kill
    lands before the run can finish on any machine — possibly while the last image's second output is written."""
    root, reference = folder_and_reference
    out, gate = tmp_path / "out", tmp_path / "gate"
    expected = output_bytes(reference)
    n = len(expected)  # overlay + JSON per good image
    k = random.Random(seed).randint(1, n - 2)
    open_gate(gate, (k + 1) // 2)
    command = [sys.executable, "-m", "fcn_app", str(root), "-r", "--out", str(out), "--json", "--num-workers", "1"]
    process = subprocess.Popen([*command, "--model", "helpers_batch:gated_tiny_fcn"],
                               env=dict(ENV, **{GATE_ENV: str(gate)}), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while len(final_outputs(out)) < k:
            assert process.poll() is None, f"the run ended (code {process.returncode}) before {k} outputs"
            assert time.monotonic() < deadline, "the run made no progress"
            time.sleep(0.01)
        done = len(final_outputs(out))
        assert 0 < done < n and process.poll() is None, f"{done} of {n} outputs: the kill would not land mid-run"
        kill_group(process)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
    assert k <= len(final_outputs(out)) < n, "the run finished before the kill landed"
    assert_nothing_partial(out, allow_temporaries=True)
    assert not (out / SUMMARY_NAME).exists()  # killed, not stopped: no summary from that run
    complete = sum(path.with_name(path.name.replace(".json", ".heatmap.png")).is_file()
                   for path in out.rglob("*.json"))

    finished = subprocess.run([*command, "--model", "helpers_batch:tiny_fcn"], env=ENV, capture_output=True,
                              text=True, timeout=180)
    assert finished.returncode == 1, finished.stderr  # the folder's three bad files
    assert output_bytes(out) == expected
    assert_nothing_partial(out)  # not one temporary file left in the whole tree
    assert (out / GALLERY_NAME).is_file()  # the rerun wrote the gallery of the whole folder
    counts = json.loads((out / SUMMARY_NAME).read_text())["counts"]
    assert counts == {"ok": n // 2 - complete, "skipped": complete, "failed": 3, "pending": 0}  # resumed, not redone

