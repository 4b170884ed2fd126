#!/usr/bin/env python
"""What scoring same-size images in one joint forward pass buys over scoring them one by one, side by side.

fcn-heatmap scores every image alone so that no output depends on its neighbours in a folder (a joint pass
changes the floating-point summation order of some kernels with the batch size: up to 4.5e-6 in VGG16 logits).
This script measures what that choice costs: for each model and image size, the best of ``--repeats``
alternating runs of (a) one forward pass over a batch of N images and (b) N passes of one image, on the same
normalised inputs and the same head (the GEMM window convolution of :mod:`fcn_app.scoring`).

    python scripts/bench_batching.py                  # VGG16 (random weights) at 224² and 451×300, N = 4 and 8
    python scripts/bench_batching.py --threads 2

Prints the CPU model and flags, then images/s of both and their ratio (joint / one by one).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import cpu_flags, cpu_model  # noqa: E402
from bench_batch import build_network  # noqa: E402

from fcn_app.scoring import _forward, prepare_batch, prepare_network  # noqa: E402


def images_per_second(function, count: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return count / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="vgg16", choices=("vgg16", "small"))
    parser.add_argument("--sizes", default="224x224,300x451", help="HxW sizes, comma separated")
    parser.add_argument("--batches", default="4,8")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_model()} · {torch.get_num_threads()} threads · flags: {cpu_flags()}")
    network = prepare_network(build_network(args.model).eval())
    generator = torch.Generator().manual_seed(0)
    print("| model | size | N | joint pass img/s | one by one img/s | joint / one by one |")
    print("|---|---|---|---|---|---|")
    for size in args.sizes.split(","):
        height, width = (int(value) for value in size.split("x"))
        for count in (int(value) for value in args.batches.split(",")):
            images = [torch.randint(0, 256, (height, width, 3), generator=generator, dtype=torch.uint8).numpy()
                      for _ in range(count)]
            batch, _ = prepare_batch(network, images)
            singles = [prepare_batch(network, [image])[0] for image in images]
            with torch.inference_mode():
                _forward(network, batch)  # warm-up: oneDNN primitives for both shapes
                _forward(network, singles[0])
                joint = images_per_second(lambda: _forward(network, batch), count, args.repeats)
                alone = images_per_second(lambda: [_forward(network, single) for single in singles], count,
                                          args.repeats)
            print(f"| {args.model} | {height}×{width} | {count} | {joint:.2f} | {alone:.2f} | {joint / alone:.3f} |")


if __name__ == "__main__":
    main()
