"""How far the fused Conv2d + ReLU path is from the layers one by one, on this CPU.

    PYTHONPATH=$PWD python scripts/bench_fused_relu.py [--sizes 224x224,230x250,320x480,512x512]

``fcn_app.scoring.run_features(..., fuse=True)`` runs each ``Conv2d`` + ``ReLU`` of a sequential feature extractor
as one oneDNN convolution with the ReLU fused. The ReLU itself is exact; the convolution is oneDNN's, while torch's
own ``Conv2d`` picks its kernel per call (for a batch of one with few input values, e.g. a 3-channel first layer
under about 20 000 input values, it skips oneDNN for its native GEMM kernel, which sums in another order). Printed
per network, size and input layout: max |fused − layers| over the feature map, that over max |layers| (the
relative bound ``tests/test_perf.py`` asserts), and how many elements differ at all — with the CPU model, its
vector/matrix flags and torch's version, since the kernels differ between CPU kinds.

Networks: the test suite's seeded random VGG16 (``tests/helpers.py``, seed 0) and its tiny VGG-style classifier,
both converted and prepared (channels-last weights) as the scoring path leaves them; inputs are seeded normal noise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(1, str(REPO / "tests"))

from helpers import seeded_classifier, tiny_classifier  # noqa: E402

from fcn_app.device import cpu_flags, cpu_isa_cap, cpu_model  # noqa: E402
from fcn_app.models import to_fully_convolutional  # noqa: E402
from fcn_app.scoring import prepare_network, run_features  # noqa: E402

TINY_SIZES = ((32, 32), (45, 61), (64, 64), (100, 100), (200, 300))
LAYOUTS = {"NCHW": torch.contiguous_format, "channels-last": torch.channels_last}


def layers_one_by_one(network: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    for layer in network.features:
        batch = layer(batch)
    return batch


@torch.inference_mode()
def compare(network: torch.nn.Module, size: tuple[int, int],
            layout: torch.memory_format) -> tuple[float, float, int, int]:
    """(max |Δ|, max |Δ| / max |layers|, elements that differ, elements) of the fused path against the layers."""
    batch = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).contiguous(memory_format=layout)
    expected = layers_one_by_one(network, batch)
    difference = (run_features(network, batch, fuse=True) - expected).abs()
    largest = float(difference.max())
    return largest, largest / float(expected.abs().max()), int((difference > 0).sum()), difference.numel()


def parse_sizes(text: str) -> list[tuple[int, int]]:
    return [tuple(int(side) for side in size.split("x")) for size in text.split(",")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=parse_sizes, default=parse_sizes("224x224,230x250,320x480,512x512"),
                        help="VGG16 input sizes, HxW, comma-separated")
    arguments = parser.parse_args()
    flags = " ".join(sorted(flag for flag in cpu_flags() if flag.startswith(("avx", "amx", "fma")))) or "none"
    cap = cpu_isa_cap()
    print(f"CPU: {cpu_model()}; flags: {flags}{f' (capped at {cap})' if cap else ''}")
    onednn = next((line.split("MKL-DNN")[1].split("(")[0].strip() for line in torch.__config__.show().splitlines()
                   if "MKL-DNN" in line), "unknown")
    print(f"torch {torch.__version__}, oneDNN {onednn}, {torch.get_num_threads()} threads")
    tiny = prepare_network(to_fully_convolutional(tiny_classifier(), input_size=32))
    vgg16 = prepare_network(to_fully_convolutional(seeded_classifier("vgg16", seed=0), input_size=224))
    print(f"{'network':8} {'size':>9} {'layout':>13} {'max |Δ|':>10} {'/ max |layers|':>15} "
          f"{'elements differing':>22}")
    worst = 0.0
    for name, network, sizes in (("tiny", tiny, TINY_SIZES), ("vgg16", vgg16, arguments.sizes)):
        for size in sizes:
            for layout_name, layout in LAYOUTS.items():
                largest, relative, differing, total = compare(network, size, layout)
                worst = max(worst, relative)
                print(f"{name:8} {f'{size[0]}x{size[1]}':>9} {layout_name:>13} {largest:10.3g} {relative:15.3g} "
                      f"{f'{differing}/{total}':>22}", flush=True)
    print(f"largest relative difference: {worst:.3g}")


if __name__ == "__main__":
    main()
