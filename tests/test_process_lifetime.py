"""No process outlives a folder run, and SIGTERM / SIGINT stop one in order.

The end-to-end tests start ``python -m fcn_app FOLDER`` with two decode workers and the gated tiny network of
``helpers_batch`` (the run scores one image, then holds on the next until the test's gate lets it through: the
signal lands mid-run on any machine), wait until the process tree shows both workers and an image is written, and
then signal the main process. Each process below it is recorded *before* the signal by pid and start time (read
from ``/proc``, so a reused pid is not mistaken for a survivor) and must be gone 10 s after. The results the
workers decode ahead do not fit in their pipe: the condition under which a worker whose parent was killed used to
block for ever writing its result.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from fcn_app.batch import SUMMARY_NAME, collect_inputs, run_batch
from fcn_app.cli import main
from fcn_app.io import decode_input
from fcn_app.processes import StopSignals, Terminated, loader_worker_init
from fcn_app.tasks import HeatmapOptions, HeatmapTask
from helpers import random_rgb
from helpers_batch import GATE_ENV, assert_nothing_partial, is_gallery_file, open_gate, tiny_fcn
from helpers_processes import children, descendants, on_linux_proc, process_stat, still_alive, survivors_after

REPO = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
#: The gated network needs the torch backend (conftest pins it too; said here because the gate depends on it).
ENV = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS)]), OMP_NUM_THREADS="1",
           FCN_HEATMAP_BACKEND="torch")
IMAGES = 10
#: A Linux pipe holds 64 KiB; what the workers hold ahead must not fit, or the old deadlock could not happen here.
PIPE_BUFFER = 64 * 1024



# --- a folder run held mid-way ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_folder(tmp_path_factory) -> tuple[Path, Path]:
    """:data:`IMAGES` noise images whose decoded form is larger than a pipe's buffer, and a clean run's outputs."""
    root = tmp_path_factory.mktemp("big") / "photos"
    root.mkdir()
    for index in range(IMAGES):
        Image.fromarray(random_rgb(256, 256, seed=100 + index)).save(root / f"noise_{index:02d}.png")
    network = tiny_fcn()
    task = HeatmapTask(network, HeatmapOptions(write_json=True))
    decoded = decode_input(root / "noise_00.png", task.decode_request)
    # A worker may be two results ahead of the main process (prefetch 2): those must not fit in the pipe.
    assert 2 * len(pickle.dumps(decoded)) > PIPE_BUFFER, "results this small would never fill the workers' pipe"
    clean = tmp_path_factory.mktemp("clean")
    assert run_batch(task, collect_inputs([root])[0], clean, num_workers=0).counts["ok"] == IMAGES
    return root, clean


def image_outputs(out: Path) -> dict[str, bytes]:
    """Every image's output under ``out`` (summaries and the gallery aside), by relative path."""
    return {path.relative_to(out).as_posix(): path.read_bytes() for path in sorted(out.rglob("*"))
            if path.is_file() and not path.name.startswith("summary") and not is_gallery_file(path, out)}


def complete_images(out: Path) -> int:
    return sum((out / f"noise_{index:02d}.heatmap.png").is_file() and (out / f"noise_{index:02d}.json").is_file()
               for index in range(IMAGES))


def start_held_run(folder: Path, out: Path, gate: Path) -> tuple[subprocess.Popen, dict[int, int]]:
    """Start a folder run with two decode workers that scores one image and holds on the next; return once the
    image is written and both workers are up (their results for the images after it then wait in their pipes),
    with every process below the run recorded."""
    open_gate(gate, 1)
    command = [sys.executable, "-m", "fcn_app", str(folder), "--out", str(out), "--json", "--num-workers", "2",
               "--model", "helpers_batch:gated_tiny_fcn"]
    process = subprocess.Popen(command, env=dict(ENV, **{GATE_ENV: str(gate)}), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + 120
    while complete_images(out) < 1 or len(children(process.pid)) < 2:
        assert process.poll() is None, f"the run ended (code {process.returncode}): {process.stderr.read().decode()}"
        assert time.monotonic() < deadline, "the run never had an image written and two workers up"
        time.sleep(0.05)
    below = descendants(process.pid)
    assert len(below) >= 2 and process.poll() is None
    assert complete_images(out) == 1, "the gate let more than one image through"
    return process, below


def rerun_in_this_process(folder: Path, out: Path) -> int:
    try:
        main([str(folder), "--out", str(out), "--json", "--model", "helpers_batch:tiny_fcn", "--num-workers", "2"])
    except SystemExit as stop:
        return int(stop.code or 0)
    return 0


@on_linux_proc
@pytest.mark.slow
@pytest.mark.parametrize("stop, whole_group, expected_code", [
    pytest.param(signal.SIGKILL, False, -signal.SIGKILL, id="kill-9-main"),
    pytest.param(signal.SIGTERM, False, 143, id="sigterm-main"),
    pytest.param(signal.SIGTERM, True, 143, id="sigterm-group"),  # a service manager stopping every process
    pytest.param(signal.SIGINT, False, 130, id="sigint-main"),  # a terminal's Ctrl-C to the group: test_batch.py
])
def test_a_signalled_run_leaves_no_process_and_a_rerun_completes_it(big_folder, tmp_path, stop, whole_group,
                                                                     expected_code):
    folder, clean = big_folder
    out = tmp_path / "out"
    process, below = start_held_run(folder, out, tmp_path / "gate")
    try:
        if whole_group:
            os.killpg(process.pid, stop)
        else:
            os.kill(process.pid, stop)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)
    assert process.returncode == expected_code, stderr.decode()
    assert survivors_after(below) == [], f"alive 10 s after the main process ended: {below}"

    assert_nothing_partial(out, allow_temporaries=stop == signal.SIGKILL)
    done = complete_images(out)
    if stop != signal.SIGKILL:  # stopped in order: a summary saying what was done and what was not
        summary = json.loads((out / SUMMARY_NAME).read_text(encoding="utf-8"))
        assert summary["interrupted"] and summary["counts"]["pending"] > 0, summary["counts"]
        assert summary["counts"]["ok"] == done >= 1 and summary["counts"]["failed"] == 0
        for row in summary["inputs"]:
            assert all(Path(path).is_file() for path in row["outputs"].values()), row
    assert 1 <= done < IMAGES

    assert rerun_in_this_process(folder, out) == 0
    counts = json.loads((out / SUMMARY_NAME).read_text(encoding="utf-8"))["counts"]
    assert counts == {"ok": IMAGES - done, "skipped": done, "failed": 0, "pending": 0}
    assert image_outputs(out) == image_outputs(clean)
    assert_nothing_partial(out)


# --- the pieces: dying with the parent, the workers' signals, stop signals in the main process --------------------

ORPHAN_SCRIPT = textwrap.dedent("""
    import os, subprocess, sys, time
    if sys.argv[1] == "parent":  # starts the child, says its pid, then waits to be killed
        child = subprocess.Popen([sys.executable, __file__, "child", sys.argv[2]], stdout=subprocess.PIPE)
        print(child.pid, child.stdout.readline().decode().strip(), flush=True)
        time.sleep(600)
    else:
        from fcn_app.processes import die_with_parent
        how = die_with_parent(os.getppid(), use_prctl=sys.argv[2] == "prctl")
        print(how, flush=True)
        while True:  # busy in Python, as a decoding worker is
            time.sleep(0.01)
""")


@on_linux_proc
@pytest.mark.parametrize("how", ["prctl", "watchdog"])
def test_a_child_dies_with_its_parent_by_prctl_or_by_the_portable_watchdog(tmp_path, how):
    """``kill -9`` of the parent; the child (``PR_SET_PDEATHSIG``, or the watchdog thread used where there is no
    prctl) is gone within 10 s."""
    script = tmp_path / "orphan.py"
    script.write_text(ORPHAN_SCRIPT)
    parent = subprocess.Popen([sys.executable, str(script), "parent", how], env=ENV, stdout=subprocess.PIPE,
                              start_new_session=True)
    try:
        child_pid, chosen = parent.stdout.readline().decode().split()
        assert chosen == how
        child = {int(child_pid): process_stat(int(child_pid))[2]}
        assert still_alive(child)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=60)
        assert survivors_after(child) == []
    finally:
        os.killpg(parent.pid, signal.SIGKILL) if parent.poll() is None else None
        parent.wait(timeout=60)


def test_a_child_whose_parent_is_already_gone_leaves_at_once():
    """The parent may die between the fork and ``die_with_parent``: the child then leaves instead of waiting."""
    code = "from fcn_app.processes import die_with_parent; die_with_parent(-1); print('still here')"
    completed = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, timeout=60)
    assert completed.returncode == 1 and completed.stdout == b""


class _WorkerState(list):
    """A dataset of one item per worker: what the worker's start set up."""

    def __getitem__(self, index):
        import ctypes

        death_signal = ctypes.c_int(-1)
        if sys.platform.startswith("linux"):
            ctypes.CDLL(None).prctl(2, ctypes.byref(death_signal), 0, 0, 0)  # PR_GET_PDEATHSIG
        return (death_signal.value, signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
                getattr(signal.getsignal(signal.SIGTERM), "__name__", None), os.getppid())


def test_loader_workers_die_with_the_parent_ignore_ctrl_c_and_leave_on_sigterm():
    from torch.utils.data import DataLoader

    loader = DataLoader(_WorkerState([0, 1]), batch_size=None, num_workers=2, worker_init_fn=loader_worker_init())
    for death_signal, ignores_ctrl_c, on_sigterm, parent in loader:
        if sys.platform.startswith("linux"):
            assert death_signal == signal.SIGKILL
        assert ignores_ctrl_c and on_sigterm == "_leave_now" and parent == os.getpid()


def test_every_dataloader_of_the_package_gets_the_worker_start():
    """A source check: each ``DataLoader(...)`` call in ``fcn_app`` that can start workers passes
    ``worker_init_fn=loader_worker_init()``, so a loader added later cannot forget it."""
    import ast

    missing = []
    for path in sorted((REPO / "fcn_app").rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        if "DataLoader" not in source:
            continue
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "DataLoader":
                keywords = {keyword.arg: keyword.value for keyword in node.keywords}
                if "num_workers" not in keywords:
                    continue  # no workers: nothing to outlive the process
                init = keywords.get("worker_init_fn")
                if not (isinstance(init, ast.Call) and getattr(init.func, "id", None) == "loader_worker_init"):
                    missing.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not missing, f"DataLoaders without worker_init_fn=loader_worker_init(): {missing}"


@pytest.fixture
def default_signal_handlers():
    """These tests send real signals to this process: only where :class:`StopSignals` takes them over (the main
    thread, Python's default handlers), or SIGTERM would end the test run."""
    import threading

    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) is not \
            signal.SIG_DFL or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("signal handlers of this test process are not Python's defaults, or not in the main thread")


def test_stop_signals_raise_hold_and_deliver_later(default_signal_handlers):
    with StopSignals() as stop:  # SIGTERM raises Terminated
        with pytest.raises(Terminated):
            signal.raise_signal(signal.SIGTERM)
    assert stop.signal == signal.SIGTERM and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL

    with StopSignals() as stop:  # held: raised at the end of the block, not in its middle
        steps = []
        with pytest.raises(KeyboardInterrupt):
            with stop.held():
                signal.raise_signal(signal.SIGINT)
                steps.append("the block ran to its end")
        assert steps and stop.signal == signal.SIGINT
        signal.raise_signal(signal.SIGTERM)  # a second signal while stopping: ignored
        stop.finish()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    with pytest.raises(KeyboardInterrupt):  # after finish(), a signal that stopped nothing comes after the context
        with StopSignals() as stop:
            stop.finish()
            signal.raise_signal(signal.SIGINT)
            steps.append("finished")
    assert steps[-1] == "finished" and stop.signal is None


def test_a_run_stopped_by_sigterm_in_process_says_so(tmp_path, big_folder, default_signal_handlers):
    """``run_batch`` records what stopped it: SIGTERM (exit code 143 in the CLI) apart from Ctrl-C (130)."""
    folder, _ = big_folder
    network = tiny_fcn()
    calls = []

    def terminate_at_the_second_image(module, args):
        calls.append(1)
        if len(calls) == 2:
            signal.raise_signal(signal.SIGTERM)

    network.features.register_forward_pre_hook(terminate_at_the_second_image)
    result = run_batch(HeatmapTask(network, HeatmapOptions()), collect_inputs([folder])[0], tmp_path, num_workers=0)
    assert result.interrupted and result.stopped_by == signal.SIGTERM
    assert result.counts["ok"] == 1 and result.counts["pending"] == IMAGES - 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
