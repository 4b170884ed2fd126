"""AP50 of detections on digit scenes, per box mode / stride / pyramid scales, measured side by side in one run.

A small features+Linear classifier is trained on 32×32 crops of scikit-learn's bundled UCI digits (plus a
background class), converted with ``to_fully_convolutional(..., input_size=32)``, and run on generated scenes of
several held-out digits (22–30 px) whose boxes are known. AP comes from pycocotools. ``--draws N`` then runs the
proof test's recipe (stride 4, scales 0.9/1/1.1, window × 26/32) on N independent draws of 12 scenes each (scene
seeds seed+1 … seed+N) and prints AP50 per draw, as tests/test_detect_digits.py does for the first three.

    PYTHONPATH=$PWD python scripts/bench_detect.py [--scenes 40] [--seed 0] [--draws 6]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from helpers_detect import (  # noqa: E402
    CATEGORIES,
    RECIPE_STRIDE,
    WINDOW,
    detect_scenes,
    make_scenes,
    scene_draw_metrics,
    scenes_ground_truth,
    train_digit_classifier,
)

from fcn_app.dense import densify  # noqa: E402
from fcn_app.coco import evaluate_detections  # noqa: E402
from fcn_app.detect import DetectOptions  # noqa: E402
from fcn_app.models import to_fully_convolutional  # noqa: E402


def run(network, scenes, truth, *, stride, scales, options, fuse="max"):
    results = detect_scenes(densify(network, stride), scenes, truth, scales=scales, options=options, fuse=fuse)
    return evaluate_detections(results, truth)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="only the main rows")
    parser.add_argument("--draws", type=int, default=0, help="AP50 of the proof recipe on this many scene draws")
    args = parser.parse_args()

    start = time.perf_counter()
    classifier = train_digit_classifier(seed=args.seed)
    network = to_fully_convolutional(classifier, input_size=WINDOW, categories=CATEGORIES)
    print(f"trained classifier in {time.perf_counter() - start:.1f} s")
    scenes = make_scenes(count=args.scenes, seed=args.seed + 1)
    truth = scenes_ground_truth(scenes)
    print(f"{len(scenes)} scenes, {len(truth['annotations'])} digits (22–30 px)\n")

    base = dict(threshold_mode="absolute", threshold=0.5, min_score=0.5, box_mode="window")
    fill = 26 / WINDOW  # training digits are 24–28 px in the 32 px window
    three, five = (0.85, 1.0, 1.2), (0.8, 0.9, 1.0, 1.1, 1.25)
    rows = [
        ("region (component bbox)", 8, (1.0,), DetectOptions(**{**base, "box_mode": "region"})),
        ("window at peak", 8, (1.0,), DetectOptions(**base)),
        ("window at best of 3 scales", 8, three, DetectOptions(**base)),
        ("window x fill, 3 scales", 8, three, DetectOptions(**base, window_fill=fill)),
        ("window at peak", 4, (1.0,), DetectOptions(**base)),
        ("window x fill", 4, (1.0,), DetectOptions(**base, window_fill=fill)),
        ("window x fill at centroid", 4, (1.0,), DetectOptions(**base, window_fill=fill, center="centroid")),
        ("window at best of 3 scales", 4, three, DetectOptions(**base)),
        ("window x fill, 3 scales", 4, three, DetectOptions(**base, window_fill=fill)),
        ("window x fill, 3 scales 0.9-1.1", 4, (0.9, 1.0, 1.1), DetectOptions(**base, window_fill=fill)),
        ("window x fill, 5 scales", 4, five, DetectOptions(**base, window_fill=fill)),
        ("window x fill, 3 scales, mean fuse", 4, three, DetectOptions(**base, window_fill=fill)),
        ("window x fill, 3 scales 0.9-1.1", 2, (0.9, 1.0, 1.1), DetectOptions(**base, window_fill=fill)),
    ]
    print(f"{'box mode':36s} {'stride':>6s} {'scales':>22s} {'AP50':>6s} {'AP':>6s}")
    for name, stride, scales, options in rows[: 4 if args.quick else None]:
        fuse = "mean" if "mean" in name else "max"
        metrics = run(network, scenes, truth, stride=stride, scales=scales, options=options, fuse=fuse)
        print(f"{name:36s} {stride:6d} {','.join(f'{s:g}' for s in scales):>22s} "
              f"{metrics['AP50']:6.3f} {metrics['AP']:6.3f}", flush=True)
    if args.draws:
        dense = densify(network, RECIPE_STRIDE)
        print(f"\nproof recipe on {args.draws} independent draws of 12 scenes:")
        ap50 = []
        for seed in range(args.seed + 1, args.seed + 1 + args.draws):
            ap50.append(scene_draw_metrics(dense, seed)["AP50"])
            print(f"scene seed {seed:3d}  AP50 {ap50[-1]:.3f}", flush=True)
        print(f"mean AP50 {sum(ap50) / len(ap50):.3f}, lowest {min(ap50):.3f}")
    print(f"\ntotal {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
