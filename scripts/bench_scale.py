"""Which working size should the network see? Heat-peak hit rate and time per image, per working size.

Scenes where objects fill a photo-like share of the frame: held-out UCI digits rendered at 20–70 % of the
shorter side of a 2000×1500 image (one or two per scene), saved as JPEG (quality 90). The digits classifier of
``scripts/bench_detect.py`` (32-px window, trained in-process on the other digits) is converted to an FCN and run
through the product's path: ``decode_image`` at the working size (JPEG draft) → ``compute_score_map`` (fp32) →
``score_map_on_original`` → per-pixel heatmap of the object's class on the *original* pixels → its peak.
An object is a hit when that peak falls inside its box (when a class occurs twice in a scene, inside either).

Working sizes are multiples of the model's window (longer side = k·window), plus ``native``; so the rule
transfers to VGG16's 224-px window. Several draws (classifier seed and scenes) — the table gives the mean hit
rate over all objects of all draws, the lowest per-draw rate, and the rate per object size. The printed default
is the smallest (so fastest: network cost grows with the working size squared) working size whose hit rate is
within 1 percentage point of the best. Timings use 1 torch thread unless ``--threads`` says otherwise.

    PYTHONPATH=$PWD python scripts/bench_scale.py [--draws 3] [--scenes 30] [--windows 2,3,4,5,6,8]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

SCRIPTS = Path(__file__).resolve().parent
sys.path.insert(0, str(SCRIPTS.parent / "tests"))
sys.path.insert(0, str(SCRIPTS.parent))
sys.path.insert(0, str(SCRIPTS))

from bench import cpu_flags, cpu_model  # noqa: E402
from helpers_detect import CATEGORIES, WINDOW, make_scenes, train_digit_classifier  # noqa: E402

from fcn_app.heatmaps import ClassSelection, heatmap_for_class  # noqa: E402
from fcn_app.io import decode_image  # noqa: E402
from fcn_app.models import to_fully_convolutional  # noqa: E402
from fcn_app.resolution import score_map_on_original  # noqa: E402
from fcn_app.scoring import compute_score_map  # noqa: E402

SCENE_SIZE = (1500, 2000)  # (height, width): a 3 MP "photo"
FILL = (0.20, 0.70)  # object side as a share of the shorter image side
BUCKETS = ((0.20, 0.35), (0.35, 0.50), (0.50, 0.70))


def write_scenes(folder: Path, count: int, seed: int, per_scene: int):
    """Scenes as JPEG files with their boxes and labels."""
    short = min(SCENE_SIZE)
    sides = (int(FILL[0] * short), int(FILL[1] * short))
    scenes = make_scenes(count=count, size=SCENE_SIZE, digits_per_scene=per_scene, seed=seed, sizes=sides)
    items = []
    for number, scene in enumerate(scenes):
        path = folder / f"scene_{seed}_{number:03d}.jpg"
        Image.fromarray(scene.image).save(path, quality=90)
        items.append((path, scene.boxes, scene.labels))
    return items


def score_scene(network, path: Path, boxes, labels, work_size: int | None) -> tuple[list[bool], float]:
    """Hits (one per object) and the wall time from file to peaks on the original pixels."""
    start = time.perf_counter()
    decoded = decode_image(path, work_size)
    score_map = score_map_on_original(compute_score_map(network, decoded.pixels, precision="fp32"),
                                      decoded.original_size)
    probabilities = score_map.probabilities()
    peaks = {}
    for label in set(labels):
        heatmap = heatmap_for_class(score_map, ClassSelection(CATEGORIES[label], (label,)), probabilities)
        peaks[label] = heatmap.peak_pixel
    elapsed = time.perf_counter() - start
    hits = []
    for label in labels:
        peak_x, peak_y = peaks[label]
        hits.append(any(x <= peak_x < x + w and y <= peak_y < y + h
                        for (x, y, w, h), other in zip(boxes, labels) if other == label))
    return hits, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=3, help="classifier seeds × scene sets")
    parser.add_argument("--scenes", type=int, default=30, help="scenes per draw")
    parser.add_argument("--per-scene", type=int, default=2, help="digits per scene (fewer when they do not fit)")
    parser.add_argument("--windows", default="2,3,4,5,6,8", help="working sizes as multiples of the window")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: steadier timings on a shared machine; the ranking is what counts)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    multiples = [float(value) for value in args.windows.split(",")]
    sizes = [None] + [round(multiple * WINDOW) for multiple in multiples]
    names = ["native"] + [f"{multiple:g}×window" for multiple in multiples]

    print(f"CPU: {cpu_model()}; torch threads: {torch.get_num_threads()}")
    print(f"CPU flags: {cpu_flags()}")
    print(f"scenes: {SCENE_SIZE[1]}×{SCENE_SIZE[0]} px, digits {FILL[0]:.0%}–{FILL[1]:.0%} of the shorter side, "
          f"{args.draws} draws × {args.scenes} scenes; model window {WINDOW} px\n")
    hits = {name: [] for name in names}  # per draw: list of hits
    sides = []  # per draw: relative object sides
    chance = []  # per object: share of the image inside boxes of its class (hit rate of a random peak)
    times = {name: [] for name in names}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for draw in range(args.draws):
            classifier = train_digit_classifier(seed=draw)
            network = to_fully_convolutional(classifier, input_size=WINDOW, categories=CATEGORIES)
            items = write_scenes(Path(folder), args.scenes, seed=100 + draw, per_scene=args.per_scene)
            sides.append([box[2] / min(SCENE_SIZE) for _, boxes, _ in items for box in boxes])
            chance.extend(sum(w * h for (_, _, w, h), other in zip(boxes, labels) if other == label)
                          / (SCENE_SIZE[0] * SCENE_SIZE[1]) for _, boxes, labels in items for label in labels)
            for name in names:
                hits[name].append([])
            for path, boxes, labels in items:
                for name, size in zip(names, sizes):  # interleaved: background load hits every size alike
                    scene_hits, elapsed = score_scene(network, path, boxes, labels, size)
                    hits[name][-1].extend(scene_hits)
                    times[name].append(elapsed)
            print(f"draw {draw}: {len(sides[-1])} objects ({time.perf_counter() - start:.0f} s so far)", flush=True)

    all_sides = np.concatenate([np.asarray(draw_sides) for draw_sides in sides])
    header = (f"{'working size':>14s} {'px':>6s} {'hit rate':>9s} {'worst draw':>11s} "
              + " ".join(f"{f'{low:.0%}–{high:.0%}':>9s}" for low, high in BUCKETS) + f" {'s/image':>8s}")
    print("\n" + header)
    summary = []
    for name, size in zip(names, sizes):
        flat = np.concatenate([np.asarray(draw_hits, dtype=bool) for draw_hits in hits[name]])
        rate = float(flat.mean())
        worst = min(float(np.mean(draw_hits)) for draw_hits in hits[name])
        buckets = []
        for low, high in BUCKETS:
            inside = (all_sides >= low) & (all_sides < high + 1e-9)
            buckets.append(float(flat[inside].mean()) if inside.any() else float("nan"))
        seconds = float(np.median(times[name]))
        summary.append((name, size, rate, seconds))
        print(f"{name:>14s} {size or SCENE_SIZE[1]:6d} {rate:9.1%} {worst:11.1%} "
              + " ".join(f"{value:9.1%}" for value in buckets) + f" {seconds:8.3f}")
    print(f"a peak placed at random would hit {np.mean(chance):.1%} of the objects (share of the frame they cover)")
    print(f"objects per size bucket: "
          + ", ".join(f"{low:.0%}–{high:.0%}: {int(((all_sides >= low) & (all_sides < high + 1e-9)).sum())}"
                      for low, high in BUCKETS))

    best = max(rate for _, _, rate, _ in summary)
    eligible = [row for row in summary if row[2] >= best - 0.01]
    # "Fastest" by working size, not by the time column: this small network's time is mostly decoding and
    # upsampling at the original size, so its differences are noise; for VGG16 the network dominates and its
    # cost grows with the working size squared. Native counts as the largest.
    name, size, rate, seconds = min(eligible, key=lambda row: float("inf") if row[1] is None else row[1])
    multiple = "native" if size is None else f"{size / WINDOW:g} windows"
    print(f"\nbest hit rate {best:.1%}; rule: default = smallest (fastest) working size within 1 point of it → "
          f"{name} ({multiple}; hit rate {rate:.1%}, {seconds:.3f} s/image)")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
