"""Detection AP50 on digit scenes per window size (``--window K``), over several trained classifiers.

A digit classifier with a pooled head (tests/helpers_detect.py ``pooled_digit_classifier``: conv-BN-ReLU blocks,
stride 8, global average pool → Linear → ReLU → Linear) is trained on 32×32 crops of scikit-learn's bundled digits, once
per seed (8 epochs), and converted exactly (``convert_graph_classifier``): its training window is 4×4 feature cells. Each
window K = 1 … 4 (``with_window``; K = 1: one cell) then runs the detection recipe of the proof test (stride 4, scales
0.9/1/1.1, absolute threshold 0.5) on 12 held-out scenes (scene seed = seed + 1), with two kinds of boxes:
a 26-px box (the training digits' size) centred on the heat peak — the same box for every K, so only where the
heat peaks differs — and the bounding box of the heat component ("region").

    PYTHONPATH=$PWD python scripts/bench_window.py [--seeds 5] [--out docs/images/window_ap50.png]
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402
from bench import cpu_flags, cpu_model  # noqa: E402
from helpers_detect import (  # noqa: E402
    CATEGORIES,
    RECIPE_SCALES,
    RECIPE_STRIDE,
    WINDOW,
    pooled_digit_classifier,
    scene_draw_metrics,
    train_digit_classifier,
)

from fcn_app.dense import densify  # noqa: E402
from fcn_app.detect import DetectOptions  # noqa: E402
from fcn_app.io import atomic_write_bytes  # noqa: E402
from fcn_app.models.graph import convert_graph_classifier, with_window  # noqa: E402

#: Pixel side of the training digits (24–28 px in the 32-px window): the peak box of every window size.
DIGIT_SIDE = 26
BOXES = {"peak box (26 px)": "window", "region": "region"}
#: The pooled classifier needs more passes than the Flatten one (99.7 % on held-out crops of seed 7 after 8).
EPOCHS = 8


def options_for(network, box_mode: str) -> DetectOptions:
    # window boxes are the window (input_size) times window_fill: the fill that makes them DIGIT_SIDE px
    fill = DIGIT_SIDE / network.input_size[0]
    return DetectOptions(threshold_mode="absolute", threshold=0.5, min_score=0.5, box_mode=box_mode,
                         window_fill=fill if box_mode == "window" else 1.0)


def measure(seeds: list[int]) -> tuple[list[int], dict[str, dict[int, list[float]]]]:
    results: dict[str, dict[int, list[float]]] = {name: {} for name in BOXES}
    windows: list[int] = []
    for seed in seeds:
        start = time.perf_counter()
        classifier = train_digit_classifier(seed, epochs=EPOCHS, make_model=pooled_digit_classifier)
        network = convert_graph_classifier(classifier, input_size=WINDOW, categories=CATEGORIES, arch="digits_gap")
        windows = list(range(1, network.window[0] + 1))
        line = [f"seed {seed}: trained in {time.perf_counter() - start:.1f} s"]
        for window in windows:
            dense = densify(with_window(network, window), RECIPE_STRIDE)
            for name, box_mode in BOXES.items():
                ap50 = scene_draw_metrics(dense, seed + 1, options=options_for(dense, box_mode))["AP50"]
                results[name].setdefault(window, []).append(ap50)
                line.append(f"K={window} {box_mode} {ap50:.3f}")
        print("  ".join(line), flush=True)
    return windows, results


def spread(values: list[float]) -> str:
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.3f} ± {deviation:.3f} ({min(values):.3f}–{max(values):.3f})"


def write_figure(path: Path, windows: list[int], results: dict[str, dict[int, list[float]]], seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(5.2, 3.4), dpi=120)
    for name, per_window in results.items():
        means = [statistics.mean(per_window[window]) for window in windows]
        deviations = [statistics.stdev(per_window[window]) if seeds > 1 else 0.0 for window in windows]
        axes.errorbar(windows, means, yerr=deviations, marker="o", capsize=3, label=name)
    axes.set_xticks(windows, [f"{window}" + (" (1 cell)" if window == 1 else " (training)" if window == windows[-1]
                                             else "") for window in windows])
    axes.set_xlabel("--window K (feature cells, stride 8 px)")
    axes.set_ylabel("detection AP50")
    axes.set_ylim(0, 1)
    axes.set_title(f"digit scenes, mean ± std over {seeds} trained classifiers", fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5, help="classifiers trained (seeds 0 … N−1)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "window_ap50.png")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.perf_counter()
    print(f"CPU: {cpu_model()} ({cpu_flags()}), torch {torch.__version__}, 1 thread")
    print(f"recipe: stride {RECIPE_STRIDE}, scales {'/'.join(f'{s:g}' for s in RECIPE_SCALES)}, threshold 0.5, "
          f"12 scenes per seed\n")
    seeds = list(range(args.seeds))
    windows, results = measure(seeds)
    print(f"\nAP50, mean ± std (min–max) over {len(seeds)} seeds")
    print(f"{'window K':>10s} {'window px':>10s}  " + "  ".join(f"{name:>34s}" for name in BOXES))
    for window in windows:
        pixels = WINDOW + (window - windows[-1]) * 8
        print(f"{window:>10d} {pixels:>10d}  " + "  ".join(f"{spread(results[name][window]):>34s}" for name in BOXES))
    write_figure(args.out, windows, results, len(seeds))
    print(f"\nwrote {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}; "
          f"total {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
