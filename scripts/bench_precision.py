"""Is reduced precision faster on this CPU? One 3×3 convolution in fp32, bf16 and fp16, side by side.

    python scripts/bench_precision.py

Prints each precision's time and GFLOP/s and its ratio to fp32 (channels-last, the layout oneDNN prefers), and
which oneDNN kernel family the CPU offers. Decides whether ``--precision auto`` may pick bf16 on a CPU.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch


def best_time(function, repeats: int) -> float:
    function()  # warm-up: oneDNN builds its kernel on the first call
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--channels", type=int, default=256)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"machine: {platform.processor() or platform.machine()}, torch threads {torch.get_num_threads()}, "
          f"cpu capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}")
    channels, size = args.channels, args.size
    flops = 2 * channels * channels * 9 * size * size
    images = torch.randn(1, channels, size, size)
    times = {}
    with torch.inference_mode():
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)):
            conv = torch.nn.Conv2d(channels, channels, 3, padding=1).eval().to(dtype).to(memory_format=torch.channels_last)
            batch = images.to(dtype).contiguous(memory_format=torch.channels_last)
            times[name] = best_time(lambda: conv(batch), args.repeats)
    print(f"conv {channels}→{channels} 3×3 at {size}², channels-last, best of {args.repeats}:")
    for name, seconds in times.items():
        print(f"  {name}: {seconds * 1e3:7.1f} ms  {flops / seconds / 1e9:6.0f} GFLOP/s  "
              f"{times['fp32'] / seconds:4.2f}× fp32")


if __name__ == "__main__":
    main()
