"""Which heatmap to trust: every ``--method`` on trained classifiers, measured by faithfulness metrics.

Two classifiers are trained here on real bundled data (scikit-learn's UCI digits; 32×32 crops of ten digits plus
a background class, see ``tests/helpers_detect.py``):

- ``digits``: the detection benchmark's classifier (3 conv blocks → Flatten → Linear → ReLU → Linear), converted
  by the layer-list path. It has no free window, so no ``cam``.
- ``vgg-gap``: a VGG-shaped net (three blocks of two 3×3 convolutions and a max pool) ending in global average
  pooling and one Linear layer — the VGG-GAP of Zhou et al. (2016) in miniature — trained briefly (4 epochs, as
  the digits classifier's recipe) and converted by the graph path.

Both run on generated scenes (default 96×128 px, three held-out digits of 22–30 px each, boxes known). For every digit in a
scene each method maps that digit's class, and the map is measured: pointing game (Zhang et al. 2016, 15 px),
deletion AUC ↓ and insertion AUC ↑ (Petsiuk et al. 2018; ``--steps`` steps, mean colour / blurred start), Average
Drop ↓ and Increase in Confidence ↑ (Chattopadhay et al. 2018; the map min-max scaled), and seconds per map. The
score is the class's probability on its surest window (:func:`fcn_app.methods.class_score_function`). Each draw is
an independent set of scenes; the table gives mean ± standard deviation over draws.

    PYTHONPATH=$PWD nice -n 10 python scripts/bench_faithfulness.py [--draws 3] [--scenes 3] [--steps 16]
        [--picture docs/images/compare.png]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from helpers_detect import CATEGORIES, WINDOW, make_scenes, train_digit_classifier, training_crops  # noqa: E402

from fcn_app.heatmaps import ClassSelection, min_max_scaled  # noqa: E402
from fcn_app.method_registry import get_method  # noqa: E402
from fcn_app.methods import class_score_function, method_heatmap, require_grad_cam  # noqa: E402
from fcn_app.metrics import (average_drop, deletion_curve, explanation_map_scores, increase_in_confidence,  # noqa: E402
                             insertion_curve, pointing_game_hit)
from fcn_app.models import to_fully_convolutional  # noqa: E402
from fcn_app.models.graph import convert_graph_classifier, has_free_window  # noqa: E402
from fcn_app.scoring import prepare_batch  # noqa: E402
from fcn_app.tasks.compare import compare_methods, write_comparison  # noqa: E402

METHODS = ("fcn", "cam", "gradcam", "gradcam++", "layercam", "eigencam", "scorecam", "ablationcam")


def vgg_gap_classifier() -> nn.Sequential:
    """VGG-shaped: blocks of two 3×3 conv-BN-ReLU and a 2×2 max pool (stride 8 after three), then global average
    pooling and one Linear layer (VGG-GAP, Zhou et al. 2016)."""
    def block(inputs: int, outputs: int) -> list[nn.Module]:
        return [nn.Conv2d(inputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU(),
                nn.Conv2d(outputs, outputs, 3, padding=1), nn.BatchNorm2d(outputs), nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(64, len(CATEGORIES)))


def train_vgg_gap(seed: int = 0, epochs: int = 4) -> nn.Sequential:
    """:func:`vgg_gap_classifier` trained on the digits' 32×32 crops by the digits classifier's own recipe
    (seeded; Adam, one-cycle schedule)."""
    return train_digit_classifier(seed, epochs, copies=2, make_model=vgg_gap_classifier)


def crop_accuracy(classifier: nn.Module, seed: int = 99) -> float:
    """Accuracy on fresh crops (another seed of the same recipe: new backgrounds, sizes, offsets)."""
    crops, labels = training_crops(seed, copies=1)
    with torch.no_grad():
        logits = classifier(torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255.0))
    return float((logits.argmax(1).numpy() == labels).mean())


def measure_draw(network, methods, scenes, steps: int) -> dict[str, dict[str, float]]:
    """Per method: pointing-game accuracy and mean deletion/insertion AUC, AD, IC, seconds over every digit."""
    rows = {method: {"hits": [], "deletion": [], "insertion": [], "full": [], "masked": [], "seconds": []}
            for method in methods}
    for scene in scenes:
        batch, padding = prepare_batch(network, [scene.image])
        assert padding == (0, 0, 0, 0)
        image = batch[0].contiguous()
        for digit in sorted(set(scene.labels)):
            selection = ClassSelection(CATEGORIES[digit], (digit,))
            boxes = [box for box, label in zip(scene.boxes, scene.labels) if label == digit]
            score = class_score_function(network, selection)
            for method in methods:
                heat, seconds, cells = method_heatmap(network, scene.image, method, selection)
                row = rows[method]
                row["hits"].append(pointing_game_hit(heat, boxes, cells=cells))
                row["deletion"].append(deletion_curve(score, image, heat, steps=steps, batch_size=steps + 1).auc)
                row["insertion"].append(insertion_curve(score, image, heat, steps=steps, batch_size=steps + 1).auc)
                full, masked = explanation_map_scores(score, [image], [min_max_scaled(heat)])
                row["full"].append(full[0])
                row["masked"].append(masked[0])
                row["seconds"].append(seconds)
    return {method: {"pointing": float(np.mean(row["hits"])), "deletion": float(np.mean(row["deletion"])),
                     "insertion": float(np.mean(row["insertion"])),
                     "average_drop": average_drop(row["full"], row["masked"]),
                     "increase": increase_in_confidence(row["full"], row["masked"]),
                     "seconds": float(np.median(row["seconds"]))}
            for method, row in rows.items()}


def table(name: str, per_draw: list[dict], methods) -> list[str]:
    keys = [("pointing", "pointing game ↑", "{:.2f}"), ("deletion", "deletion AUC ↓", "{:.3f}"),
            ("insertion", "insertion AUC ↑", "{:.3f}"), ("average_drop", "avg drop % ↓", "{:.1f}"),
            ("increase", "conf. increase % ↑", "{:.1f}"), ("seconds", "ms per map", "{:.1f}")]
    lines = [f"| {name} | " + " | ".join(title for _, title, _ in keys) + " |",
             "|---|" + "---:|" * len(keys)]
    for method in methods:
        cells = []
        for key, _, style in keys:
            values = np.asarray([draw[method][key] for draw in per_draw]) * (1000.0 if key == "seconds" else 1.0)
            cells.append(f"{style.format(values.mean())} ± {style.format(values.std())}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=3)
    parser.add_argument("--scenes", type=int, default=3, help="scenes per draw")
    parser.add_argument("--digits", type=int, default=3, help="digits per scene")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128), help="scene height and width")
    parser.add_argument("--steps", type=int, default=16, help="steps of the deletion/insertion curves")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--networks", default="digits,vgg-gap", help="which classifiers to measure")
    parser.add_argument("--picture", type=Path, default=None, help="also write a compare picture of one scene here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    require_grad_cam("gradcam")  # the import is not any method's time
    start = time.perf_counter()

    wanted = args.networks.split(",")
    networks = {}
    if "digits" in wanted:
        digits = train_digit_classifier(seed=args.seed)
        networks["digits"] = (to_fully_convolutional(digits, input_size=WINDOW, categories=CATEGORIES),
                              crop_accuracy(digits))
    if "vgg-gap" in wanted or args.picture is not None:
        vgg_gap = train_vgg_gap(seed=args.seed)
        networks["vgg-gap"] = (convert_graph_classifier(vgg_gap, input_size=WINDOW, categories=CATEGORIES),
                               crop_accuracy(vgg_gap))
    print(f"trained the classifiers in {time.perf_counter() - start:.0f} s; accuracy on fresh 32×32 crops: "
          + ", ".join(f"{name} {accuracy:.3f}" for name, (_, accuracy) in networks.items()), flush=True)
    for name, (network, _) in networks.items():
        if name not in wanted:
            continue
        methods = [method for method in METHODS
                   if has_free_window(network) or not get_method(method).needs_pooled_head]
        per_draw = []
        for draw in range(args.draws):
            scenes = make_scenes(count=args.scenes, size=tuple(args.size), digits_per_scene=args.digits,
                                 seed=args.seed + 101 + draw)
            per_draw.append(measure_draw(network, methods, scenes, args.steps))
            print(f"  {name}: draw {draw + 1}/{args.draws} done ({time.perf_counter() - start:.0f} s)", flush=True)
        print(f"\n{name}: {args.draws} draws × {args.scenes} scenes of {args.size[0]}×{args.size[1]} px with "
              f"{args.digits} digits each; mean ± std over draws\n")
        print("\n".join(table(name, per_draw, methods)) + "\n", flush=True)
    if args.picture is not None:
        network = networks["vgg-gap"][0]
        scene = make_scenes(count=1, size=(128, 160), seed=args.seed + 100)[0]
        digit = scene.labels[0]
        comparison = compare_methods(network, scene.image, ["fcn", "cam", "gradcam", "gradcam++", "scorecam",
                                                            "ablationcam", "eigencam", "layercam"],
                                     classes=[str(digit)], steps=args.steps)
        enlarged = cv2.resize(scene.image, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST)
        written = write_comparison(args.picture, comparison, enlarged, source="digit scene (vgg-gap)")
        print(f"wrote {written['picture']} (class {CATEGORIES[digit]}, box {scene.boxes[0]})")
    print(f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
