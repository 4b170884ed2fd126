#!/usr/bin/env python
"""Batch throughput and memory, measured side by side in one run.

Throughput (default): a folder of random JPEGs is processed by ``run_batch`` (decode workers, scoring, render
and write thread, summary) and, on the very same images already decoded in memory, by the model alone
(``compute_score_maps`` in the same batches). Runs alternate, best of ``--repeats`` each; printed as a ratio
folder / model-only (the target is ≥ 0.9: the pipeline around the model should cost under 10 %).

    python scripts/bench_batch.py                       # VGG16, random weights, 96 images of 224×224
    python scripts/bench_batch.py --model small --size 128 --images 64

Memory (``--memory N``): N small images through the ``small`` model; the resident memory of the main process
and of the decode workers is sampled every ``N/20`` images. Flat means the growth between the first sample and
the last is about the size of the summary rows kept for ``summary.json`` and nothing per image beyond that.

    python scripts/bench_batch.py --memory 10000

Weights are random (nothing is downloaded): speed does not depend on the weight values.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fcn_app.batch import collect_inputs, default_num_workers, run_batch  # noqa: E402
from fcn_app.io import load_image  # noqa: E402
from fcn_app.models import build_classifier, default_weights, to_fully_convolutional  # noqa: E402
from fcn_app.tasks import HeatmapTask  # noqa: E402
from fcn_app.scoring import compute_score_maps, scoring_summary  # noqa: E402


def small_classifier() -> nn.Module:
    """A random VGG-style classifier for 64×64 crops (stride 16, 1000 classes): milliseconds per image."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    channels = 3
    for width in (16, 32, 64, 64):
        layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels = width
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 4 * 4, 256), nn.ReLU(), nn.Linear(256, 1000))


def build_network(name: str):
    meta = default_weights("vgg16")
    categories = meta.meta["categories"]
    mean, std = meta.transforms().mean, meta.transforms().std
    if name == "small":
        return to_fully_convolutional(small_classifier(), input_size=64, categories=categories, mean=mean, std=std,
                                      arch="small")
    torch.manual_seed(0)
    return to_fully_convolutional(build_classifier(name), input_size=224, categories=categories, mean=mean, std=std,
                                  arch=name)


def make_images(folder: Path, count: int, size: int, distinct: int = 16) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    encoded = []
    for _ in range(min(distinct, count)):
        # smooth random images (JPEG of pure noise is unrealistically large and slow to decode)
        small = rng.integers(0, 256, size=(size // 8 + 1, size // 8 + 1, 3), dtype=np.uint8)
        picture = Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR)
        path = folder / "_template.jpg"
        picture.save(path, quality=90)
        encoded.append(path.read_bytes())
        path.unlink()
    for index in range(count):
        (folder / f"img_{index:05d}.jpg").write_bytes(encoded[index % len(encoded)])


def model_only(network, images: list[np.ndarray], batch_size: int) -> float:
    started = time.perf_counter()
    for start in range(0, len(images), batch_size):
        compute_score_maps(network, images[start : start + batch_size])
    return len(images) / (time.perf_counter() - started)


def folder_run(network, items, out: Path, batch_size: int, num_workers: int) -> float:
    started = time.perf_counter()
    result = run_batch(HeatmapTask(network), items, out, batch_size=batch_size, num_workers=num_workers,
                       overwrite=True)
    elapsed = time.perf_counter() - started
    assert result.counts["ok"] == len(items), result.counts
    return len(items) / elapsed


def bench_throughput(args) -> None:
    network = build_network(args.model)
    num_workers = default_num_workers() if args.num_workers is None else args.num_workers
    with tempfile.TemporaryDirectory() as temp:
        folder, out = Path(temp) / "in", Path(temp) / "out"
        make_images(folder, args.images, args.size)
        items, _ = collect_inputs([folder])
        images = [load_image(item.source) for item in items]
        compute_score_maps(network, images[: args.batch_size])  # warm-up
        model_speeds, folder_speeds = [], []
        for _ in range(args.repeats):
            model_speeds.append(model_only(network, images, args.batch_size))
            folder_speeds.append(folder_run(network, items, out, args.batch_size, num_workers))
    best_model, best_folder = max(model_speeds), max(folder_speeds)
    print(f"model {args.model} (random weights), {args.images} images {args.size}×{args.size} JPEG, "
          f"batch size {args.batch_size}, {num_workers} decode workers, torch threads {torch.get_num_threads()}, "
          f"best of {args.repeats}")
    runtime = scoring_summary("auto", "auto", "cpu")
    print(f"scoring defaults here (both paths): backend {runtime['backend']}, precision {runtime['precision']} "
          f"(CPU {runtime['cpu']['model']}; {' '.join(runtime['cpu']['flags']) or 'no amx/avx512 flags'})")
    print(f"model only : {best_model:8.2f} images/s   (runs: {', '.join(f'{speed:.2f}' for speed in model_speeds)})")
    print(f"folder     : {best_folder:8.2f} images/s   (runs: {', '.join(f'{speed:.2f}' for speed in folder_speeds)})")
    paired = sorted(folder / model for folder, model in zip(folder_speeds, model_speeds))
    print(f"ratio folder / model-only: {best_folder / best_model:.3f} (best vs best), "
          f"{paired[len(paired) // 2]:.3f} (median of back-to-back pairs)   (target ≥ 0.9)")


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as stream:
            return int(stream.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return 0.0


def _children(pid: int) -> list[int]:
    children = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stream:
                    if int(stream.read().rsplit(")", 1)[1].split()[1]) == pid:
                        children.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return children


def bench_memory(args) -> None:
    network = build_network("small")
    num_workers = default_num_workers() if args.num_workers is None else args.num_workers
    size = args.size if args.size_given else 64
    samples: list[tuple[int, float, float]] = []
    every = max(1, args.memory // 20)
    with tempfile.TemporaryDirectory() as temp:
        folder, out = Path(temp) / "in", Path(temp) / "out"
        make_images(folder, args.memory, size)
        items, _ = collect_inputs([folder])
        done = {"count": 0}

        def sample(row: dict) -> None:
            done["count"] += 1
            if done["count"] % every == 0:
                workers = sum(_rss_mb(child) for child in _children(os.getpid()))
                samples.append((done["count"], _rss_mb(os.getpid()), workers))

        result = run_batch(HeatmapTask(network), items, out, batch_size=args.batch_size,
                           num_workers=num_workers, on_row=sample)
    print(f"{args.memory} images {size}×{size}, model small, batch size {args.batch_size}, {num_workers} workers, "
          f"{result.images_per_s:.1f} images/s")
    print("   images   main RSS MB   workers RSS MB")
    samples = [sample for sample in samples if sample[2] > 0]  # the workers are gone once decoding has ended
    for count, main, workers in samples:
        print(f"{count:9d} {main:13.1f} {workers:16.1f}")
    first, last = samples[0], samples[-1]
    growth = last[1] - first[1]
    per_image_kb = growth * 1024 / max(1, last[0] - first[0])
    print(f"main process growth from {first[0]} to {last[0]} images: {growth:+.1f} MB ({per_image_kb:.2f} KB/image); "
          "summary rows are spooled to disk until summary.json is written")
    print(f"workers growth: {last[2] - first[2]:+.1f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="vgg16", help="vgg11/13/16/19(_bn), alexnet (224 px windows) or small")
    parser.add_argument("--images", type=int, default=96, help="folder size; start-up (decode workers) is amortised over it as in real jobs")
    parser.add_argument("--size", type=int, default=None, help="image side (default 224; 64 for --memory)")
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--memory", type=int, default=0, metavar="N", help="measure RSS over N small images instead")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    args.size_given = args.size is not None
    args.size = args.size or 224
    if args.memory:
        bench_memory(args)
    else:
        bench_throughput(args)


if __name__ == "__main__":
    main()
