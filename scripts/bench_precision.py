"""Is reduced precision faster on this CPU, and what does it change on trained weights?

    PYTHONPATH=$PWD python scripts/bench_precision.py [--conv-only]

1. One 3×3 convolution in fp32, bf16 and fp16, side by side: each precision's time, GFLOP/s and ratio to fp32
   (channels-last, the layout oneDNN prefers), and which oneDNN kernel family the CPU offers.
2. Agreement with torch fp32 of every backend × precision, on TRAINED weights (random VGG16 logits are nearly flat,
   so their argmax flips mean nothing): the digits classifier of ``scripts/bench_detect.py`` (score maps of 12
   digit scenes at stride 4, and the AP50 of its detection recipe) and a small VGG-shaped classifier trained here
   briefly (BatchNorm, Adam, normalised inputs; 300 steps: 3 min on 2 shared cores) on the bundled photos
   (``examples/*.jpg`` and scikit-learn's two sample images: "which photo is this 64×64 crop from?", crops of the
   photos resized to 384–512 px wide; score maps of the five photos 448 px wide at stride 16). Printed per row:
   top-1 agreement of the cells whose fp32 top-1 probability is ≥ 0.5, max |Δ probability| over all cells and
   classes, digits AP50.
   ``--precision auto`` picks bf16 only where these and ``scripts/bench.py``'s speed-ups were measured.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "tests"))

from fcn_app.coco import evaluate_detections, to_coco_results  # noqa: E402
from fcn_app.dense import densify  # noqa: E402
from fcn_app.detect import detect_objects  # noqa: E402
from fcn_app.device import cpu_flags, cpu_model  # noqa: E402
from fcn_app.models import to_fully_convolutional  # noqa: E402
from fcn_app.runtimes import RUNTIMES  # noqa: E402
from fcn_app.scoring import ScoringOptions, compute_score_map  # noqa: E402

PHOTOS = [REPO / "examples" / name for name in ("chelsea.jpg", "coffee.jpg", "rocket.jpg")]
PATCH = 64


def best_time(function, repeats: int) -> float:
    function()  # warm-up: oneDNN builds its kernel on the first call
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def conv_table(channels: int, size: int, repeats: int) -> None:
    flops = 2 * channels * channels * 9 * size * size
    images = torch.randn(1, channels, size, size)
    times = {}
    with torch.inference_mode():
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
            conv = torch.nn.Conv2d(channels, channels, 3, padding=1).eval().to(dtype).to(memory_format=torch.channels_last)
            batch = images.to(dtype).contiguous(memory_format=torch.channels_last)
            times[name] = best_time(lambda: conv(batch), repeats)
    print(f"conv {channels}→{channels} 3×3 at {size}², channels-last, best of {repeats}:")
    for name, seconds in times.items():
        print(f"  {name}: {seconds * 1e3:7.1f} ms  {flops / seconds / 1e9:6.0f} GFLOP/s  "
              f"{times['fp32'] / seconds:4.2f}× fp32")


# --------------------------------------------------------------------------------- agreement on trained weights
def configurations() -> list[tuple[str, str]]:
    """(backend, precision) pairs compared with torch fp32: every installed runtime at each precision it runs."""
    pairs = [("torch", "bf16")]
    pairs += [(name, precision) for name, runtime in RUNTIMES.items() if runtime.converts and runtime.available()
              for precision in ("fp32", "bf16") if precision in runtime.precisions]
    return pairs


def bundled_photos() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(Image.open(path).convert("RGB")) for path in PHOTOS]
    return photos + [np.asarray(image) for image in load_sample_images().images]


def vgg_shaped_classifier(num_classes: int) -> nn.Sequential:
    """VGG16's layout at 1/8 of its width and 64-px input: conv blocks of 2, 2, 3, 3 3×3 convs (each with
    BatchNorm, as in ``vgg16_bn``: without it this 13-layer stack stayed at chance, loss ln 5, in a short run),
    max-pools (stride 16), then fc6/fc7/fc8 (fc6 reads the 4×4×64 grid) — converted the same way as VGG16."""
    layers, channels = [], 3
    for width, convs in ((8, 2), (16, 2), (32, 3), (64, 3)):
        for _ in range(convs):
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(64 * 4 * 4, 128), nn.ReLU(inplace=True),
                         nn.Linear(128, 128), nn.ReLU(inplace=True), nn.Linear(128, num_classes))


#: Widths the photos are resized to for training: the score maps read them at 448 px wide, ±15 % for scale jitter.
TRAINING_WIDTHS = (384, 448, 512)
SCORED_WIDTH = 448


def resized(photo: np.ndarray, width: int) -> np.ndarray:
    return np.asarray(Image.fromarray(photo).resize((width, round(width * photo.shape[0] / photo.shape[1])),
                                                    Image.BICUBIC))


def train_photo_classifier(photos: list[np.ndarray], steps: int, mean: torch.Tensor, std: torch.Tensor,
                           seed: int = 0) -> nn.Sequential:
    """Train on random 64×64 crops (with flips) of the photos at :data:`TRAINING_WIDTHS`, labelled with the photo
    they come from: the windows the score map scores at 448 px wide, so many of its cells are confident."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    scaled = [[(torch.from_numpy(resized(photo, width).copy()).permute(2, 0, 1).float().div(255.0)
                - mean[:, None, None]) / std[:, None, None] for width in TRAINING_WIDTHS] for photo in photos]
    model = vgg_shaped_classifier(len(photos)).to(memory_format=torch.channels_last)  # faster convs on CPU
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    correct = seen = 0
    for step in range(steps):
        patches, labels = [], []
        for _ in range(64):
            label = int(rng.integers(len(photos)))
            image = scaled[label][int(rng.integers(len(TRAINING_WIDTHS)))]
            top = int(rng.integers(image.shape[1] - PATCH + 1))
            left = int(rng.integers(image.shape[2] - PATCH + 1))
            patch = image[:, top:top + PATCH, left:left + PATCH]
            patches.append(patch.flip(-1) if rng.random() < 0.5 else patch)
            labels.append(label)
        targets = torch.tensor(labels)
        logits = model(torch.stack(patches).contiguous(memory_format=torch.channels_last))
        loss = nn.functional.cross_entropy(logits, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        correct += int((logits.argmax(1) == targets).sum())
        seen += len(labels)
        if step % 100 == 0 or step == steps - 1:
            print(f"    step {step:4d} loss {loss.item():.3f} (chance ln 5 = 1.609), training accuracy since last "
                  f"line {correct / seen:.1%}", flush=True)
            correct = seen = 0
    return model.to(memory_format=torch.contiguous_format).eval()


def trained_photo_network(photo_steps: int):
    """The VGG-shaped photo classifier, trained and converted, and the five photos it scores (448 px wide)."""
    photos = bundled_photos()
    pixels = torch.from_numpy(np.concatenate([photo.reshape(-1, 3) for photo in photos])).float().div(255.0)
    mean, std = pixels.mean(0), pixels.std(0)
    print(f"  training the VGG-shaped photo classifier ({photo_steps} steps of 64 patches, 5 bundled photos)",
          flush=True)
    started = time.perf_counter()
    model = train_photo_classifier(photos, photo_steps, mean, std)
    print(f"  trained in {time.perf_counter() - started:.0f} s", flush=True)
    network = to_fully_convolutional(model, input_size=PATCH, mean=mean.tolist(), std=std.tolist(),
                                     categories=["chelsea", "coffee", "rocket", "china", "flower"])
    return network, [resized(photo, SCORED_WIDTH) for photo in photos]


def agreement_figures(network, images: list[np.ndarray], backend: str, precision: str) -> tuple[float, float, int]:
    """(top-1 agreement on cells whose fp32 top-1 probability ≥ 0.5, max |Δ probability|, number of such cells)."""
    agree, confident, worst = 0, 0, 0.0
    for image in images:
        exact = compute_score_map(network, image, precision="fp32", backend="torch").probabilities()
        other = compute_score_map(network, image, precision=precision, backend=backend).probabilities()
        mask = exact.max(dim=0).values >= 0.5
        agree += int((exact.argmax(0) == other.argmax(0))[mask].sum())
        confident += int(mask.sum())
        worst = max(worst, float((exact - other).abs().max()))
    return agree / max(confident, 1), worst, confident


def digits_ap50(network, scenes, truth, backend: str, precision: str) -> float:
    from helpers_detect import RECIPE_OPTIONS, RECIPE_SCALES

    scoring = ScoringOptions(precision, backend=backend)
    per_image = [(entry["id"], entry["file_name"], detect_objects(network, scene.image, scales=RECIPE_SCALES,
                                                                  options=RECIPE_OPTIONS, scoring=scoring))
                 for scene, entry in zip(scenes, truth["images"])]
    return evaluate_detections(to_coco_results(per_image), truth)["AP50"]


def agreement_tables(photo_steps: int, scene_count: int) -> None:
    from helpers_detect import CATEGORIES, RECIPE_STRIDE, WINDOW, make_scenes, scenes_ground_truth, train_digit_classifier

    print(f"\nagreement with torch fp32 on trained weights (CPU {cpu_model()}; amx/avx512 flags: "
          f"{' '.join(sorted(f for f in cpu_flags() if f.startswith(('amx', 'avx512')))) or 'none'})")
    started = time.perf_counter()
    if not scene_count:
        return photo_only_table(photo_steps, started)
    digits = densify(to_fully_convolutional(train_digit_classifier(seed=0), input_size=WINDOW, categories=CATEGORIES),
                     RECIPE_STRIDE)
    scenes = make_scenes(count=scene_count, seed=1)
    truth = scenes_ground_truth(scenes)
    print(f"  digits classifier trained ({time.perf_counter() - started:.0f} s); {len(scenes)} scenes, "
          f"stride {RECIPE_STRIDE}", flush=True)
    photo_net = work = None
    if photo_steps:
        photo_net, work = trained_photo_network(photo_steps)
    reference_ap50 = digits_ap50(digits, scenes, truth, "torch", "fp32")
    header = (f"| backend | precision | digits: top-1 agreement (cells p≥0.5) | digits: max abs Δ prob | "
              f"digits AP50 (fp32 torch {reference_ap50:.3f}) | photos: top-1 agreement (cells p≥0.5) | "
              f"photos: max abs Δ prob |")
    print()
    print(header)
    print("|---|---|---|---|---|---|---|")
    for backend, precision in configurations():
        digit_agree, digit_delta, digit_cells = agreement_figures(digits, [scene.image for scene in scenes], backend,
                                                                  precision)
        ap50 = digits_ap50(digits, scenes, truth, backend, precision)
        photos_cells = "not run (--photo-steps 0) | —"
        if photo_net is not None:
            photo_agree, photo_delta, photo_cells = agreement_figures(photo_net, work, backend, precision)
            photos_cells = f"{photo_agree:.2%} of {photo_cells} | {photo_delta:.1e}"
        print(f"| {backend} | {precision} | {digit_agree:.2%} of {digit_cells} | {digit_delta:.1e} | "
              f"{ap50:.3f} (Δ {ap50 - reference_ap50:+.3f}) | {photos_cells} |", flush=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


def photo_only_table(photo_steps: int, started: float) -> None:
    """The photo classifier's rows alone (``--scenes 0``)."""
    photo_net, work = trained_photo_network(photo_steps)
    print("\n| backend | precision | photos: top-1 agreement (cells p≥0.5) | photos: max abs Δ prob |\n|---|---|---|---|")
    for backend, precision in configurations():
        agree, delta, cells = agreement_figures(photo_net, work, backend, precision)
        print(f"| {backend} | {precision} | {agree:.2%} of {cells} | {delta:.1e} |", flush=True)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--conv-only", action="store_true", help="only the convolution timings")
    parser.add_argument("--photo-steps", type=int, default=300,
                        help="training steps of the VGG-shaped classifier (0: skip it)")
    parser.add_argument("--scenes", type=int, default=12, help="digit scenes for agreement and AP50 (0: only the photo classifier)")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}")
    conv_table(args.channels, args.size, args.repeats)
    if not args.conv_only:
        agreement_tables(args.photo_steps, args.scenes)


if __name__ == "__main__":
    main()
