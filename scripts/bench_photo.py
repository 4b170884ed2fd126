"""A 12 MP phone photo end to end: decode → VGG16 score map → heatmaps on the original pixels → overlay → file.

The photo is synthetic and written once per run: ``examples/chelsea.jpg`` enlarged to 4032×3024 with sensor-
like noise, JPEG quality 90 with an sRGB ICC profile (~a phone photo's size in bytes). Two paths, same run:

* **working size** (the default from :mod:`fcn_app.resolution`, or ``--windows``): ``decode_image`` at the working
  size (JPEG draft), VGG16 on that, ``score_map_on_original``, heatmaps of the top-3 classes on the original
  4032×3024 pixels, full-size decode for the overlay, overlay + legend, JPEG written with the ICC profile;
  ("end to end" excludes the two upsampling-only rows, which are timed separately to split the rendering: the
  fast path row is what showing one class and the peaks of three costs with ``peak_on_pixels``);
* **native** (the path before issue 17): full decode, VGG16 on all 12 MP (tiled), the same rendering, PNG;
* **the whole command, cold** (``--command-repeats``): ``python -m fcn_app phone.jpg --format jpg`` as a fresh
  process each time (imports, weight loading and all, and the start-up of :mod:`fcn_app.startup`, which decodes
  the photo while torch loads; default settings, so ``--precision auto``: bf16 on a CPU with AMX), then the same with ``--precision fp32``, wall and CPU seconds, and its start-up alone (``import
  torch``; ``import fcn_app.cli``; ``load_scoring_network("vgg16")``). With ``--before TREE`` (another source tree
  of fcn-heatmap, e.g. ``git worktree add /tmp/before COMMIT``) the same runs alternate between the two trees, so
  both columns see the same machine load, and are printed side by side.

Each stage is timed separately (best and median of ``--repeats`` for the working-size path; native once by
default, it takes a minute or more), and the CPU seconds of each stage (load-independent; see Stopwatch). VGG16 fp32 with the real ImageNet weights when cached, else seeded random
weights (same cost).

    PYTHONPATH=$PWD python scripts/bench_photo.py [--repeats 3] [--threads 2] [--windows 4] [--native-repeats 1]
        [--command-repeats 5] [--before TREE]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageCms

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS.parent))
sys.path.insert(0, str(SCRIPTS))

from bench import PHOTO, cpu_flags, cpu_model, load_models  # noqa: E402

from fcn_app.heatmaps import class_heatmaps, heatmap_for_class, top_classes  # noqa: E402
from fcn_app.io import atomic_write_image, atomic_write_png, decode_image, load_image  # noqa: E402
from fcn_app.tasks import HeatmapOptions, HeatmapTask  # noqa: E402
from fcn_app.resolution import (  # noqa: E402
    DEFAULT_WORK_WINDOWS,
    default_work_size,
    peak_on_pixels,
    score_map_on_original,
)
from fcn_app.runtimes import command_backend  # noqa: E402
from fcn_app.scoring import compute_score_map, scoring_summary  # noqa: E402
from fcn_app.startup import keep_freed_memory  # noqa: E402

PHOTO_SIZE = (4032, 3024)  # (width, height): a 12 MP phone photo


def make_photo(path: Path) -> None:
    rng = np.random.default_rng(0)
    with Image.open(PHOTO) as source:
        enlarged = np.asarray(source.convert("RGB").resize(PHOTO_SIZE, Image.Resampling.BICUBIC), dtype=np.float32)
    noisy = np.clip(enlarged + rng.normal(0.0, 3.0, enlarged.shape), 0, 255).astype(np.uint8)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(noisy).save(path, quality=90, icc_profile=srgb)


class Stopwatch:
    """Wall time and CPU time (all threads of this process) per stage name, accumulated over repeats.

    On a machine shared with other jobs wall time measures the neighbours too; CPU time is the work done, and
    with one thread it is close to the wall time the stage would take alone on one core.
    """

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = {}
        self.cpu: dict[str, list[float]] = {}

    def run(self, name: str, function, *args, **kwargs):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = function(*args, **kwargs)
        self.add(name, time.perf_counter() - start, time.process_time() - start_cpu)
        return result

    def add(self, name: str, wall: float, cpu: float) -> None:
        self.times.setdefault(name, []).append(wall)
        self.cpu.setdefault(name, []).append(cpu)

    def print(self) -> None:
        print(f"  {'stage':38s} {'best s':>8s} {'median s':>9s} {'CPU s':>7s}")
        for name, values in self.times.items():
            print(f"  {name:38s} {min(values):8.3f} {statistics.median(values):9.3f} "
                  f"{statistics.median(self.cpu[name]):7.3f}")


def shown_map_and_peaks(score_map, topk: int):
    """The fast path for what the overlay shows: one per-pixel map (the top class), peaks of all ``topk``."""
    probabilities = score_map.probabilities()
    selections = top_classes(score_map, topk, probabilities)
    peaks = [peak_on_pixels(probabilities[list(selection.indices)].sum(dim=0).clamp_(0.0, 1.0),
                            score_map.geometry, score_map.image_size) for selection in selections]
    return heatmap_for_class(score_map, selections[0], probabilities), peaks


def working_path(network, photo: Path, out: Path, work_size: int, clock: Stopwatch) -> tuple[int, ...]:
    start, start_cpu = time.perf_counter(), time.process_time()
    options = HeatmapOptions()
    decoded = clock.run("decode at working size (draft)", decode_image, photo, work_size)
    score_map = clock.run("network (VGG16 fp32)", compute_score_map, network, decoded.pixels, precision="fp32")
    score_map = score_map_on_original(score_map, decoded.original_size)
    full = clock.run("full-size decode for the overlay", decode_image, photo)
    # HeatmapTask.render upsamples the top-3 classes itself; timing that step alone splits upsampling from blending.
    clock.run("upsample top-3 heatmaps to 12 MP", class_heatmaps, score_map, options.classes, options.topk)
    clock.run("  fast path: 1 map + exact peaks of 3", shown_map_and_peaks, score_map, options.topk)
    rendered = clock.run("upsample + overlay + legend", HeatmapTask(None, options).render, full.pixels, score_map, None)
    clock.run("encode + write JPEG (ICC kept)", atomic_write_image, out, rendered.overlay,
              icc_profile=decoded.icc_profile)
    wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
    for name in ("upsample top-3 heatmaps to 12 MP", "  fast path: 1 map + exact peaks of 3"):
        wall, cpu = wall - clock.times[name][-1], cpu - clock.cpu[name][-1]
    clock.add("end to end", wall, cpu)
    return decoded.pixels.shape[:2], rendered.overlay.shape[:2]


def native_path(network, photo: Path, out: Path, clock: Stopwatch) -> None:
    start, start_cpu = time.perf_counter(), time.process_time()
    pixels = clock.run("decode (full)", load_image, photo)
    score_map = clock.run("network (VGG16 fp32, tiled)", compute_score_map, network, pixels, precision="fp32")
    rendered = clock.run("upsample + overlay + legend", HeatmapTask(None, HeatmapOptions()).render, pixels, score_map, None)
    clock.run("encode + write PNG", atomic_write_png, out, rendered.overlay)
    clock.add("end to end", time.perf_counter() - start, time.process_time() - start_cpu)


STARTUP_PROBE = """
import time
start = time.perf_counter()
import torch
imported_torch = time.perf_counter()
import fcn_app.cli
from fcn_app.scoring import load_scoring_network
imported_cli = time.perf_counter()
load_scoring_network("vgg16", device="cpu")
loaded = time.perf_counter()
print(imported_torch - start, imported_cli - imported_torch, loaded - imported_cli)
"""


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_in_tree(tree: Path, argv: list[str], environment: dict[str, str]) -> tuple[float, float, str]:
    """``python ARGV`` with ``tree`` first on the path: (wall s, CPU s of the process, stdout)."""
    start, start_cpu = time.perf_counter(), _child_cpu()
    result = subprocess.run([sys.executable, *argv], cwd=tree, capture_output=True, text=True,
                            env=dict(environment, PYTHONPATH=str(tree)))
    if result.returncode != 0:
        raise SystemExit(f"{tree}: {' '.join(argv)} failed:\n{result.stderr}")
    return time.perf_counter() - start, _child_cpu() - start_cpu, result.stdout


def command_environment(torch_home: Path, threads: int) -> dict[str, str]:
    """The environment of the commands run as a user runs them: the seeded weights' cache, offline, ``threads``."""
    return dict(os.environ, TORCH_HOME=str(torch_home), FCN_HEATMAP_OFFLINE="1", OMP_NUM_THREADS=str(threads))


def cold_command(trees: dict[str, Path], photo: Path, folder: Path, torch_home: Path, repeats: int, threads: int) -> None:
    """The whole command as a user runs it, ``repeats`` times per tree, the trees alternating run by run."""
    environment = command_environment(torch_home, threads)
    load_before = os.getloadavg()[0]
    command: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    fp32: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    startup: dict[str, list[list[float]]] = {name: [] for name in trees}
    for _ in range(repeats):
        for name, tree in trees.items():
            out = folder / f"out-{name}"
            argv = ["-m", "fcn_app", str(photo), "--format", "jpg", "--out", str(out)]
            wall, cpu, _ = run_in_tree(tree, argv, environment)
            command[name].append((wall, cpu))
            wall, cpu, _ = run_in_tree(tree, [*argv, "--precision", "fp32"], environment)
            fp32[name].append((wall, cpu))
            startup[name].append([float(value) for value in run_in_tree(tree, ["-c", STARTUP_PROBE],
                                                                          environment)[2].split()])
    names = list(trees)
    print(f"whole command, cold: fcn-heatmap phone.jpg --format jpg ({repeats} runs per tree, alternating; "
          f"OMP_NUM_THREADS={threads}; load average {load_before:.1f} before, {os.getloadavg()[0]:.1f} after)")
    print(f"  {'':38s}" + "".join(f" {name + ' median':>14s} {'min':>7s}" for name in names))

    def row(label: str, values_of) -> None:
        cells = []
        for name in names:
            values = values_of(name)
            cells.append(f" {statistics.median(values):14.2f} {min(values):7.2f}")
        print(f"  {label:38s}" + "".join(cells))

    row("wall s, whole command", lambda name: [wall for wall, _ in command[name]])
    row("CPU s, whole command", lambda name: [cpu for _, cpu in command[name]])
    row("wall s, same with --precision fp32", lambda name: [wall for wall, _ in fp32[name]])
    row("CPU s, same with --precision fp32", lambda name: [cpu for _, cpu in fp32[name]])
    for index, label in enumerate(("  import torch (wall s)", "  import fcn_app.cli (wall s)",
                                   "  load VGG16 weights (wall s)")):
        row(label, lambda name, index=index: [values[index] for values in startup[name]])
    print()


def folder_cost(photo: Path, folder: Path, torch_home: Path, images: int, threads: int) -> None:
    """Folders of phone photos, default settings, as a user runs them: ``fcn-heatmap DIR --format jpg --out OUT``
    on a folder of one photo and on one of ``images`` copies, fresh processes; the folder's own ``elapsed_s``
    (summary.json: after start-up, with a runtime's one-time conversion where the command picks one) of both, and their difference per
    additional photo — the per-image cost of a folder."""
    import json
    import shutil

    environment = command_environment(torch_home, threads)
    chosen = scoring_summary("auto", command_backend("auto"), "cpu")  # what the command picks for a folder
    print(f"folders (default settings here: backend {chosen['backend']}, precision {chosen['precision']})")
    elapsed = {}
    for count in (1, images):
        source = folder / f"photos-{count}"
        source.mkdir()
        for index in range(count):
            shutil.copyfile(photo, source / f"phone{index:03d}.jpg")
        out = folder / f"out-photos-{count}"
        wall, _, _ = run_in_tree(SCRIPTS.parent, ["-m", "fcn_app", str(source), "--format", "jpg", "--out", str(out)],
                                 environment)
        summary = json.loads((out / "summary.json").read_text())
        elapsed[count] = summary["elapsed_s"]
        print(f"folder of {count} photo(s): whole command {wall:.2f} s wall, folder elapsed_s {elapsed[count]:.2f} s")
    per_image = (elapsed[images] - elapsed[1]) / (images - 1)
    print(f"folder, per additional photo (default settings, --format jpg): {per_image:.2f} s "
          f"(({elapsed[images]:.2f} − {elapsed[1]:.2f}) / {images - 1}; load average {os.getloadavg()[0]:.1f})\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--native-repeats", type=int, default=1, help="0 skips the native path")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--windows", default=str(DEFAULT_WORK_WINDOWS),
                        help="working sizes as multiples of the model window, comma-separated (first = default)")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--command-repeats", type=int, default=5, help="runs of the whole command (0: skip)")
    parser.add_argument("--folder-images", type=int, default=6,
                        help="photos in the folder run (after --command-repeats; 0 or 1: skip)")
    parser.add_argument("--before", type=Path, default=None,
                        help="another fcn-heatmap source tree whose command runs alternate with this one's")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    kept = keep_freed_memory()  # as the command line's start-up does: the in-process stages see its allocator
    network_classifier, network, source = load_models(args.weights)
    window = network.input_size
    print(f"CPU: {cpu_model()}; torch threads: {torch.get_num_threads()}")
    print(f"CPU flags: {cpu_flags()}")
    print(f"model: VGG16 ({source}), window {window[0]} px, fp32; freed memory kept mapped: {kept}")

    with tempfile.TemporaryDirectory() as folder:
        photo = Path(folder) / "phone.jpg"
        make_photo(photo)
        print(f"photo: {PHOTO_SIZE[0]}×{PHOTO_SIZE[1]} JPEG q90 with sRGB ICC, {photo.stat().st_size / 1e6:.1f} MB\n")
        if args.command_repeats > 0:
            torch_home = Path(folder) / "torch_home"
            cached = torch_home / "hub" / "checkpoints" / "vgg16-397923af.pth"
            cached.parent.mkdir(parents=True)
            # the weights just loaded, in torch's zip format (torchvision's own 2017 file is in the legacy format,
            # which cannot be memory-mapped: it is read into memory, ~0.3 s more)
            torch.save(network_classifier.state_dict(), cached)
            trees = {"this tree": SCRIPTS.parent} if args.before is None else \
                {"before": args.before.resolve(), "after": SCRIPTS.parent}
            cold_command(trees, photo, Path(folder), torch_home, args.command_repeats, args.threads)
            if args.folder_images > 1:
                folder_cost(photo, Path(folder), torch_home, args.folder_images, args.threads)
        results = {}
        for multiple in (float(value) for value in args.windows.split(",")):
            work_size = default_work_size(window, multiple)
            clock = Stopwatch()
            working_path(network, photo, Path(folder) / "warmup.jpg", work_size, Stopwatch())  # oneDNN warm-up
            for _ in range(args.repeats):
                sizes = working_path(network, photo, Path(folder) / "phone.heatmap.jpg", work_size, clock)
            out_bytes = (Path(folder) / "phone.heatmap.jpg").stat().st_size
            print(f"working size {multiple:g} windows = {work_size} px longer side: network input "
                  f"{sizes[0][1]}×{sizes[0][0]}, overlay {sizes[1][1]}×{sizes[1][0]} ({out_bytes / 1e6:.1f} MB JPEG)")
            clock.print()
            results[multiple] = (clock.times["end to end"], clock.cpu["end to end"])
            print()

        if args.native_repeats > 0:
            clock = Stopwatch()
            for _ in range(args.native_repeats):
                native_path(network, photo, Path(folder) / "phone.native.png", clock)
            out_bytes = (Path(folder) / "phone.native.png").stat().st_size
            print(f"native {PHOTO_SIZE[0]}×{PHOTO_SIZE[1]} (before issue 17; overlay PNG {out_bytes / 1e6:.1f} MB)")
            clock.print()
            native, native_cpu = min(clock.times["end to end"]), min(clock.cpu["end to end"])
            for multiple, (times, cpu) in results.items():
                print(f"end to end, native / {multiple:g} windows: wall {native / min(times):.1f}× "
                      f"({native:.1f} s vs {min(times):.2f} s, best of each), CPU {native_cpu / min(cpu):.1f}× "
                      f"({native_cpu:.1f} s vs {min(cpu):.2f} s)")


if __name__ == "__main__":
    main()
