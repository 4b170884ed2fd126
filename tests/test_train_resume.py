"""Training resumes exactly after kill -9: once after a checkpoint, once in the middle of validation.

The run has everything that can break exact resumption at once: validation inside the run, weight decay,
two DataLoader workers, gradient accumulation over an epoch boundary (7 micro-batches per epoch, 2 per step),
momentum, scale/crop/flip augmentation and dropout in the head. The final weights are compared with an
uninterrupted run of the same command (same process settings, so the same kernels): exactly, tolerance 0.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from fcn_app.segmentation.checkpoint import load_checkpoint
from fcn_app.segmentation.synthetic import write_shapes_dataset
from fcn_app.train import loop
from fcn_app.train.config import load_config

REPO = Path(__file__).resolve().parent.parent
ENV = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
ITERATIONS, VAL_INTERVAL, CHECKPOINT_INTERVAL = 12, 6, 2


@pytest.fixture(scope="module")
def train_folder(tmp_path_factory):
    """14 small training images: 7 micro-batches of 2 per epoch, so an accumulated step spans two epochs."""
    return write_shapes_dataset(tmp_path_factory.mktemp("resume_train"), train=14, val=0, size_range=(40, 48), seed=0)


def overrides(train: Path, val: Path, run: Path, iterations: int = ITERATIONS, val_interval: int = VAL_INTERVAL) -> list[str]:
    return [
        f"data.root={train}", "data.train_split=train.txt", f"data.val_root={val}", "data.val_split=val.txt",
        "data.num_workers=2", "data.crop_size=[32, 32]", "data.scale_range=[0.8, 1.2]", "data.flip=true",
        "train.batch_size=2", "train.accumulate=2", "train.optimizer=sgd", "train.lr=0.01", "train.momentum=0.9",
        "train.weight_decay=0.0005", "train.scheduler=poly", f"train.iterations={iterations}",
        f"train.val_interval={val_interval}", f"train.checkpoint_interval={CHECKPOINT_INTERVAL}",
        "train.log_interval=1", "train.device=cpu", "run.progress=false", f"run.output_dir={run}",
    ]


def assert_same_training_state(resumed: dict, reference: dict) -> float:
    """Weights, optimizer state and history equal; returns the largest weight difference (for the report)."""
    largest = 0.0
    for key, value in reference["model"].items():
        torch.testing.assert_close(resumed["model"][key], value, rtol=0, atol=0, msg=lambda m, key=key: f"{key}: {m}")
        if value.is_floating_point():
            largest = max(largest, float((resumed["model"][key] - value).abs().max()))
    for number, state in reference["optimizer"]["state"].items():
        torch.testing.assert_close(resumed["optimizer"]["state"][number], state, rtol=0, atol=0)
    assert resumed["history"] == reference["history"]
    assert resumed["iteration"] == reference["iteration"]
    return largest


class Training:
    """``python -m fcn_app train`` in its own process group; its log lines collected as they come."""

    def __init__(self, train: Path, val: Path, run: Path, *extra: str) -> None:
        command = [sys.executable, "-m", "fcn_app", "train", str(REPO / "configs" / "example_folder.yaml"),
                   *overrides(train, val, run), *extra]
        self.process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                        text=True, start_new_session=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def wait_for_line(self, text: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while True:
            line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            assert line is not None, f"training ended before logging {text!r}:\n" + "\n".join(self.seen[-20:])
            self.seen.append(line)
            if text in line:
                return

    def kill(self, run: Path) -> None:
        """SIGKILL the trainer and its loader workers, which must still be running; what it had written under a
        final name is complete (a temporary file may be left)."""
        assert self.process.poll() is None, "training finished before the kill"
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=60)
        self.finish_reading()
        load_checkpoint(run / "last.pt")
        if (run / "history.json").exists():  # written after last.pt: the kill may come before either
            json.loads((run / "history.json").read_text())
        if (run / "curve.png").exists():
            with Image.open(run / "curve.png") as curve:
                curve.load()

    def finish_reading(self) -> list[str]:
        while (line := self.lines.get(timeout=60)) is not None:
            self.seen.append(line)
        return self.seen

    def wait(self, timeout: float = 300) -> int:
        code = self.process.wait(timeout=timeout)
        self.finish_reading()
        return code


def kill_group_quietly(training: Training) -> None:
    try:
        os.killpg(training.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_kill_9_after_a_checkpoint_and_mid_validation_then_resume_gives_the_uninterrupted_weights(train_folder, tmp_path):
    # 12 large validation images: one validation takes about a second, long enough to be killed inside it
    val = write_shapes_dataset(tmp_path / "val", train=0, val=12, size_range=(256, 256), seed=1)
    data = (train_folder, val)
    reference_run, run = tmp_path / "reference", tmp_path / "run"
    started: list[Training] = []
    try:
        reference = Training(*data, reference_run)
        started.append(reference)

        # 1. kill -9 as soon as the first checkpoint exists: the run is between checkpoints, before validation
        first = Training(*data, run)
        started.append(first)
        deadline = time.monotonic() + 180
        while not (run / "last.pt").is_file():
            assert first.process.poll() is None and time.monotonic() < deadline, "training wrote no checkpoint"
            time.sleep(0.01)
        assert (run / "last.pt").is_file()
        first.kill(run)
        killed_at = int(load_checkpoint(run / "last.pt")["iteration"])
        assert CHECKPOINT_INTERVAL <= killed_at < VAL_INTERVAL, killed_at
        assert not any("validating at it" in line for line in first.seen)

        # 2. resume, and kill -9 inside the first validation: after its start marker, before its result line
        second = Training(*data, run, "--resume")
        started.append(second)
        second.wait_for_line(f"validating at it {VAL_INTERVAL}")
        second.kill(run)
        assert not any(f"validation at it {VAL_INTERVAL}:" in line for line in second.seen), "validation had ended"
        at_kill = int(load_checkpoint(run / "last.pt")["iteration"])
        assert killed_at < at_kill < VAL_INTERVAL, at_kill  # resumed, went on, the post-validation save not reached

        # 3. resume to the end
        third = Training(*data, run, "--resume")
        started.append(third)
        assert third.wait() == 0, "\n".join(third.seen[-20:])
        assert any(f"resuming {run} at iteration {at_kill}" in line for line in third.seen)
        assert reference.wait() == 0, "\n".join(reference.seen[-20:])
    finally:
        for training in started:
            kill_group_quietly(training)

    largest = assert_same_training_state(load_checkpoint(run / "last.pt"), load_checkpoint(reference_run / "last.pt"))
    print(f"kill -9 at it {killed_at} and mid-validation at it {VAL_INTERVAL} (last checkpoint {at_kill}): "
          f"max |Δ weight| = {largest:g}")


@pytest.mark.slow  # a subprocess or a training run: kept out of the quick loop
def test_in_process_crash_at_the_end_of_validation_then_resume_gives_the_uninterrupted_weights(
    train_folder, tmp_path, monkeypatch
):
    """Cheaper twin: a clean stop after a checkpoint, then an exception raised after validation has run (every
    side effect of validation happened) but before the checkpoint that follows it; resume twice."""
    val = write_shapes_dataset(tmp_path / "val", train=0, val=3, size_range=(48, 48), seed=1)
    settings = lambda run: overrides(train_folder, val, run, iterations=8, val_interval=4)  # noqa: E731
    config = lambda run: load_config(REPO / "configs" / "example_folder.yaml", settings(run))  # noqa: E731
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        loop.train(config(tmp_path / "reference"))
        loop.train(config(tmp_path / "run"), stop_after=CHECKPOINT_INTERVAL)
        real_evaluate = loop.evaluate

        def evaluate_then_crash(*args, **kwargs):
            real_evaluate(*args, **kwargs)
            raise RuntimeError("simulated crash right after validation")

        monkeypatch.setattr(loop, "evaluate", evaluate_then_crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            loop.train(config(tmp_path / "run"), resume=True)
        assert load_checkpoint(tmp_path / "run" / "last.pt")["iteration"] == 4 - CHECKPOINT_INTERVAL
        monkeypatch.setattr(loop, "evaluate", real_evaluate)
        loop.train(config(tmp_path / "run"), resume=True)
    finally:
        torch.set_num_threads(threads)
    largest = assert_same_training_state(load_checkpoint(tmp_path / "run" / "last.pt"),
                                         load_checkpoint(tmp_path / "reference" / "last.pt"))
    print(f"in-process resume: max |Δ weight| = {largest:g}")
