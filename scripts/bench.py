#!/usr/bin/env python
"""Benchmark of fcn-heatmap's inference path: every number is a ratio measured side by side in this one run.

    PYTHONPATH=. python scripts/bench.py            # full run (minutes on 2 cores)
    PYTHONPATH=. python scripts/bench.py --quick    # smaller sizes, for iterating

a. FCN pass vs batched sliding-window classification of all 224×224 crops at stride 32 (512²)
b. the product's default path (``compute_score_map``) vs a naive NCHW fp32 pass of the same network (1024²),
   plus bf16 (speed and top-1 class-map agreement vs fp32) where the CPU has native bf16
c. achieved GFLOP/s of the whole network vs the best single conv layer (and fc6 as conv vs as GEMM)
d. top-5 class heatmaps at 512²: ours (on the fastest path, auto's choice in the API and the web app, and on the
   CLI's choice for an image alone or in a folder) vs pytorch-grad-cam's GradCAM, 5 heatmaps on the same model
e. peak RSS of an 8000² image with automatic tiling (child process), and max |Δ| tiled vs untiled at 2048²
f. onnxruntime on the exported network vs the default path (same size as b)
h. every backend × precision (torch, OpenVINO, ONNX Runtime; fp32, bf16) at 512² and 1024², each as a ratio to
   the naive NCHW fp32 torch pass measured in the same run, with its agreement with torch fp32; and what
   converting the network for a runtime costs (once per process)
--families: one row per classifier family (ResNet, ConvNeXt, EfficientNet, …) at 512²: top-5 heatmaps vs GradCAM ×5

Weights: the real ImageNet VGG16 weights when they are in the torch hub cache (or ``--weights``), otherwise a
seeded random VGG16 (same shapes and cost; agreement figures are then only indicative). Times are the best of
``--repeats`` interleaved runs (wall clock). Bench-only dependency: ``grad-cam`` (PyPI).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from fcn_app.device import ISA_CAP_ENV, cpu_isa_cap  # noqa: E402
from fcn_app.device import cpu_flags as device_cpu_flags  # noqa: E402
from fcn_app.device import cpu_model  # noqa: E402  (also what the other scripts import from here)
from fcn_app.errors import FcnError, WeightsError  # noqa: E402
from fcn_app.heatmaps import class_heatmaps  # noqa: E402
from fcn_app.models import build_classifier, default_weights, load_classifier, to_fully_convolutional  # noqa: E402
from fcn_app.runtimes import RUNTIMES, command_backend, runtime_available, runtime_precisions  # noqa: E402
from fcn_app.scoring import (  # noqa: E402
    compute_score_map,
    scoring_summary,
    cpu_has_native_bf16,
    prepare_batch,
    prepare_network,
    window_conv_as_matmul,
)
from fcn_app.tiling import default_max_memory, format_bytes, plan_tiles  # noqa: E402

PHOTO = REPO / "examples" / "chelsea.jpg"


# ----------------------------------------------------------------------------------------------------- helpers
def best_times(functions: dict, repeats: int) -> dict[str, float]:
    """Best wall time of each function, runs interleaved (so background load hits all of them alike)."""
    for function in functions.values():  # warm-up: oneDNN primitive creation, allocator
        function()
    best = {name: float("inf") for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def photo(size: int) -> np.ndarray:
    return np.asarray(Image.open(PHOTO).convert("RGB").resize((size, size), Image.BICUBIC))


def openvino_version() -> str:
    try:
        import openvino
    except ImportError:
        return "not installed"
    return openvino.__version__.split("-")[0]


def cpu_flags() -> str:
    """The vector/matrix extensions that decide CPU inference speed (AVX2, AVX-512 variants, AMX) that kernels may
    use here: /proc/cpuinfo's, less those above an ``ONEDNN_MAX_CPU_ISA`` cap (then named)."""
    flags = " ".join(sorted(flag for flag in device_cpu_flags() if flag.startswith(("avx", "amx", "fma")))) or "none"
    cap = cpu_isa_cap()
    if not cap:
        return flags
    # torch's own vector kernels and MKL (torch's BLAS: the GEMM head) have caps of their own
    others = "".join(f", {name}={os.environ[name]}" for name in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS")
                     if os.environ.get(name))
    return f"{flags}; capped at {ISA_CAP_ENV}={cap}{others}, emulating a CPU without the extensions above it"


def load_models(weights: str | None) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    """(classifier, converted network, description of the weights)."""
    os.environ.setdefault("FCN_HEATMAP_OFFLINE", "1")
    entry = default_weights("vgg16")
    try:
        classifier, entry = load_classifier("vgg16", weights_path=weights, progress=False)
        source = "ImageNet VGG16 weights"
    except WeightsError:
        torch.manual_seed(0)
        classifier = build_classifier("vgg16").eval()
        source = "seeded RANDOM VGG16 weights (real weights not available offline)"
    preprocessing = entry.transforms()
    network = to_fully_convolutional(classifier, input_size=224, categories=entry.meta["categories"], arch="vgg16",
                                     mean=preprocessing.mean, std=preprocessing.std)
    return classifier, network, source


def naive_copy(network: torch.nn.Module) -> torch.nn.Module:
    """The same network with plain contiguous (NCHW) weights."""
    reference = copy.deepcopy(network)
    for parameter in reference.parameters():
        parameter.data = parameter.data.contiguous()
    return reference


def conv_flops(network: torch.nn.Module, batch: torch.Tensor) -> tuple[int, list]:
    """Total conv FLOPs (2 per multiply-add) of one pass, and each conv layer with its input."""
    layers = []

    def record(module, inputs, output):
        layers.append((module, inputs[0].detach().clone()))

    hooks = [module.register_forward_hook(record) for module in network.modules() if isinstance(module, torch.nn.Conv2d)]
    with torch.inference_mode():
        network(batch)
    for hook in hooks:
        hook.remove()
    total = 0
    for module, inputs in layers:
        rows = inputs.shape[2] - module.kernel_size[0] + 1 + 2 * module.padding[0]
        cols = inputs.shape[3] - module.kernel_size[1] + 1 + 2 * module.padding[1]
        total += 2 * module.in_channels * module.out_channels * module.kernel_size[0] * module.kernel_size[1] * rows * cols
    return total, layers


def layer_flops(module: torch.nn.Conv2d, inputs: torch.Tensor) -> int:
    rows = inputs.shape[2] - module.kernel_size[0] + 1 + 2 * module.padding[0]
    cols = inputs.shape[3] - module.kernel_size[1] + 1 + 2 * module.padding[1]
    return 2 * module.in_channels * module.out_channels * module.kernel_size[0] * module.kernel_size[1] * rows * cols


def agreement(first: torch.Tensor, second: torch.Tensor) -> float:
    """Share of score cells whose top-1 class is the same."""
    return float((first.argmax(0) == second.argmax(0)).float().mean())


class Report:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str]] = []

    def add(self, item: str, ours: str, baseline: str, ratio: str, target: str) -> None:
        self.rows.append((item, ours, baseline, ratio, target))
        print(f"  {item}: {ours} vs {baseline} → {ratio} (target {target})", flush=True)

    def table(self) -> str:
        header = ("item", "ours", "baseline", "result", "target")
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------ items
def bench_sliding_window(report: Report, classifier, network, size: int, repeats: int) -> None:
    print(f"[a] FCN pass vs sliding-window crops at {size}²", flush=True)
    image = photo(size)
    batch, _ = prepare_batch(network, [image])
    crops = torch.cat([batch[:, :, top:top + 224, left:left + 224]
                       for top in range(0, size - 224 + 1, 32) for left in range(0, size - 224 + 1, 32)])
    crops = crops.contiguous(memory_format=torch.channels_last)
    fast_classifier = copy.deepcopy(classifier).to(memory_format=torch.channels_last)

    def sliding_window():
        with torch.inference_mode():
            return torch.cat([fast_classifier(chunk) for chunk in crops.split(20)])

    times = best_times({"fcn": lambda: compute_score_map(network, image), "crops": sliding_window}, repeats)
    cells = compute_score_map(network, image).logits
    crop_scores = sliding_window().T.reshape(cells.shape)
    report.add(f"a. FCN pass vs {len(crops)} crops 224² stride 32, batched ({size}²)", f"{times['fcn']:.2f} s",
               f"{times['crops']:.2f} s", f"{times['crops'] / times['fcn']:.1f}×", "≥ 15×")
    print(f"     top-1 agreement crops vs cells: {agreement(cells, crop_scores):.1%} (crops see zero padding at their "
          "borders where the FCN sees real neighbours, so cells are not bit-equal to crops)")


def bench_default_path(report: Report, network, size: int, repeats: int) -> float:
    print(f"[b] default path vs naive NCHW fp32 at {size}²", flush=True)
    image = photo(size)
    naive = naive_copy(network)
    batch = prepare_batch(naive, [image])[0].contiguous()

    def naive_pass():
        with torch.no_grad():
            return naive(batch)

    functions = {"default": lambda: compute_score_map(network, image), "naive": naive_pass}
    native_bf16 = cpu_has_native_bf16()
    functions["bf16"] = lambda: compute_score_map(network, image, precision="bf16", backend="torch")
    times = best_times(functions, repeats)
    default = scoring_summary("auto", "auto", "cpu")
    default_name = f"{default['backend']} {default['precision']}"
    report.add(f"b. default path ({default_name}) vs naive NCHW fp32 ({size}²)",
               f"{times['default']:.2f} s", f"{times['naive']:.2f} s", f"{times['naive'] / times['default']:.2f}×",
               "≥ 5× (AMX) / ≥ 1.5× (no AMX)")
    exact = compute_score_map(network, image, precision="fp32", backend="torch").logits
    reduced = compute_score_map(network, image, precision="bf16", backend="torch").logits
    with torch.no_grad():
        naive_logits = naive_pass()[0]
    report.add(f"b'. bf16 autocast (native bf16: {'yes' if native_bf16 else 'no'}) vs naive NCHW fp32 ({size}²)",
               f"{times['bf16']:.2f} s", f"{times['naive']:.2f} s", f"{times['naive'] / times['bf16']:.2f}×",
               "opt-in")
    report.add("b''. bf16 top-1 class-map agreement vs fp32 (photo)", f"{agreement(reduced, exact):.2%}",
               "fp32", f"max abs Δ default vs naive {float((exact - naive_logits).abs().max()):.1e}", "≥ 99%")
    return times["default"]


def bench_gflops(report: Report, network, size: int, repeats: int, default_time: float) -> None:
    print(f"[c] achieved GFLOP/s at {size}²", flush=True)
    batch = prepare_batch(network, [photo(size)])[0]
    total, layers = conv_flops(network, batch)
    best_rate, best_name = 0.0, ""
    with torch.inference_mode():
        for index, (module, inputs) in enumerate(layers):
            if module.kernel_size != (3, 3):
                continue
            seconds = best_times({"layer": lambda: module(inputs)}, max(1, repeats - 1))["layer"]
            rate = layer_flops(module, inputs) / seconds / 1e9
            if rate > best_rate:
                best_rate, best_name = rate, f"conv {module.in_channels}→{module.out_channels} @ {inputs.shape[2]}²"
        fc6, pool5 = next((module, inputs) for module, inputs in layers if module.kernel_size == (7, 7))
        head_times = best_times({"conv": lambda: fc6(pool5), "gemm": lambda: window_conv_as_matmul(fc6, pool5)},
                                repeats)
    fc6_flops = layer_flops(fc6, pool5)
    network_rate = total / default_time / 1e9
    report.add(f"c. whole network ({total / 1e9:.0f} GFLOP at {size}²) vs best single conv ({best_name})",
               f"{network_rate:.0f} GFLOP/s", f"{best_rate:.0f} GFLOP/s", f"{network_rate / best_rate:.0%}", "close")
    report.add("c'. fc6 (7×7×512→4096) as GEMM vs as oneDNN conv", f"{fc6_flops / head_times['gemm'] / 1e9:.0f} GFLOP/s",
               f"{fc6_flops / head_times['conv'] / 1e9:.0f} GFLOP/s",
               f"{head_times['conv'] / head_times['gemm']:.2f}×", "—")


def gradcam_model(classifier: torch.nn.Module) -> torch.nn.Module:
    """An eval-mode copy of ``classifier`` for pytorch-grad-cam: gradients must flow through the ReLUs, and
    in-place ones break its hooks."""
    model = copy.deepcopy(classifier).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.ReLU):
            module.inplace = False
    return model


def bench_gradcam(report: Report, classifier, network, size: int, repeats: int) -> None:
    """Top-5 heatmaps on the fastest path — ``auto``'s choice in the Python API and the web app, the runtime and
    precision ``scoring_summary`` names, the network converted once beforehand as the web app does — and on what
    the CLI runs for an image alone or in a folder (``command_backend``: torch), each vs GradCAM ×5 on the same
    classifier and image."""
    print(f"[d] top-5 heatmaps vs pytorch-grad-cam GradCAM at {size}²", flush=True)
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        print("     skipped: pip install grad-cam (bench-only dependency)")
        return
    image = photo(size)
    fastest = scoring_summary("auto", "auto", "cpu")
    fastest_name = f"{fastest['backend']} {fastest['precision']}"
    one_image = scoring_summary("auto", command_backend("auto"), "cpu")
    one_image_name = f"{one_image['backend']} {one_image['precision']}"

    def ours_fastest():
        return class_heatmaps(compute_score_map(network, image, precision=fastest["precision"],
                                                backend=fastest["backend"]), topk=5)

    start = time.perf_counter()
    classes = [heat.selection.indices[0] for heat in ours_fastest()]
    print(f"     {fastest_name}: first call at {size}² (conversion + compile unless an earlier item did them) "
          f"{time.perf_counter() - start:.1f} s", flush=True)
    model = gradcam_model(classifier)
    batch = prepare_batch(network, [image])[0].contiguous()

    def gradcam():
        with GradCAM(model=model, target_layers=[model.features[29]]) as cam:
            return [cam(input_tensor=batch, targets=[ClassifierOutputTarget(index)])[0] for index in classes]

    times = best_times({"fastest": ours_fastest,
                        "one_image": lambda: class_heatmaps(compute_score_map(
                            network, image, precision=one_image["precision"], backend=one_image["backend"]), topk=5),
                        "gradcam": gradcam}, max(1, repeats - 1))
    report.add(f"d. 5 class heatmaps ({size}²): FCN ({fastest_name}, auto in the API/web app) + upsampling "
               "vs GradCAM ×5",
               f"{times['fastest']:.2f} s", f"{times['gradcam']:.2f} s", f"{times['gradcam'] / times['fastest']:.1f}×",
               "≥ 50× (AMX) / ≥ 25×")
    report.add(f"d'. same, CLI's auto, one image or a folder ({one_image_name}) vs GradCAM ×5",
               f"{times['one_image']:.2f} s", f"{times['gradcam']:.2f} s",
               f"{times['gradcam'] / times['one_image']:.1f}×", "≥ 25×")


def bench_tiling_exactness(report: Report, network, size: int) -> None:
    print(f"[e] tiled vs untiled at {size}²", flush=True)
    image = photo(size)
    budget = default_max_memory()
    tiles = plan_tiles(network, (size, size), budget)
    start = time.perf_counter()
    tiled = compute_score_map(network, image, precision="fp32")
    tiled_time = time.perf_counter() - start
    start = time.perf_counter()
    untiled = compute_score_map(network, image, precision="fp32", max_memory="64G")
    untiled_time = time.perf_counter() - start
    difference = float((tiled.logits - untiled.logits).abs().max())
    report.add(f"e'. max abs Δ tiled ({len(tiles or [])} tiles, budget {format_bytes(budget)}) vs untiled ({size}²)",
               f"{difference:.1e}", f"{tiled_time:.1f} s vs {untiled_time:.1f} s", "exact" if difference <= 1e-4
               else "NOT exact", "≤ 1e-4")


def huge_child(size: int, weights: str | None) -> None:
    """Runs in a child process: score one ``size``² photo with the default budget, print JSON with peak RSS."""
    def vm_hwm() -> int:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))

    _, network, _ = load_models(weights)
    prepare_network(network)
    image = photo(size)
    loaded_peak = vm_hwm()
    try:  # reset the high-water mark so the scoring peak is measured on its own too
        with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
            clear.write("5")
    except OSError:
        pass
    tiles = plan_tiles(network, (size, size), default_max_memory())
    start = time.perf_counter()
    score_map = compute_score_map(network, image)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "tiles": len(tiles or []), "grid": list(score_map.logits.shape),
                      "loaded_peak": loaded_peak, "scoring_peak": vm_hwm(), "budget": default_max_memory()}))


def bench_huge(report: Report, size: int, weights: str | None) -> None:
    print(f"[e] peak RSS of a {size}² image with automatic tiling (child process)", flush=True)
    command = [sys.executable, __file__, "--huge-child", str(size)] + (["--weights", weights] if weights else [])
    result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)))
    if result.returncode != 0:
        print(result.stderr[-2000:])
        report.add(f"e. peak RSS, {size}² image", "failed", "—", "—", "≤ 3 GB")
        return
    data = json.loads(result.stdout.strip().splitlines()[-1])
    peak = max(data["loaded_peak"], data["scoring_peak"])
    report.add(f"e. peak RSS, {size}² image, {data['tiles']} tiles, grid {data['grid'][1]}×{data['grid'][2]}",
               f"{peak / 1e9:.2f} GB", f"{data['seconds']:.0f} s; model+image loaded {data['loaded_peak'] / 1e9:.2f} GB",
               "ok" if peak <= 3e9 else "over", "≤ 3 GB")


def bench_onnx(report: Report, network, size: int, repeats: int) -> None:
    print(f"[f] onnxruntime vs default path at {size}²", flush=True)
    try:
        import onnxruntime
    except ImportError:
        print("     skipped: onnxruntime not installed")
        return
    from fcn_app.export import export_onnx

    image = photo(size)
    batch = prepare_batch(network, [image])[0].contiguous().numpy()
    with tempfile.TemporaryDirectory() as folder:
        path = export_onnx(network, Path(folder) / "vgg16_fcn.onnx")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        times = best_times({"ours": lambda: compute_score_map(network, image),
                            "onnx": lambda: session.run(None, {"images": batch})}, repeats)
        scores = torch.from_numpy(session.run(None, {"images": batch})[0][0])
    difference = float((scores - compute_score_map(network, image, precision="fp32").logits).abs().max())
    report.add(f"f. onnxruntime {onnxruntime.__version__} vs default path ({size}²)", f"{times['onnx']:.2f} s",
               f"{times['ours']:.2f} s", f"{times['ours'] / times['onnx']:.2f}× (max abs Δ {difference:.1e})", "—")


def bench_backends(report: Report, network, sizes: tuple[int, ...], repeats: int) -> None:
    print(f"[h] backend × precision vs naive NCHW fp32 at {', '.join(f'{size}²' for size in sizes)}", flush=True)
    backends = [backend for backend in RUNTIMES if runtime_available(backend)]  # torch first
    default = scoring_summary("auto", "auto", "cpu")
    naive = naive_copy(network)
    for backend in backends[1:]:  # conversion + first compile, once per process, apart from the timed passes
        start = time.perf_counter()
        compute_score_map(network, photo(256), precision="fp32", backend=backend)
        report.add(f"h. {backend}: convert to ONNX + compile fp32 (once per process)",
                   f"{time.perf_counter() - start:.1f} s", "—", "—", "—")
    for size in sizes:
        image = photo(size)
        batch = prepare_batch(naive, [image])[0].contiguous()

        def naive_pass():
            with torch.no_grad():
                return naive(batch)

        rows = []
        for backend in backends:
            for precision in (p for p in ("fp32", "bf16") if p in runtime_precisions(backend)):
                if precision == "bf16" and not cpu_has_native_bf16():
                    report.add(f"h. {backend} {precision} ({size}²)", "—", "—",
                               "not run: no native bf16 on this CPU (emulated bf16 is several times slower)", "—")
                    continue
                try:  # e.g. OpenVINO bf16 under ONEDNN_MAX_CPU_ISA=AVX2: not every CPU can run every row
                    compute_score_map(network, photo(256), precision=precision, backend=backend)
                except FcnError as error:
                    report.add(f"h. {backend} {precision} ({size}²)", "—", "—", f"cannot run here: {error}", "—")
                    continue
                rows.append((backend, precision))
        functions = {"naive": naive_pass}
        for backend, precision in rows:
            functions[(backend, precision)] = (
                lambda backend=backend, precision=precision:
                compute_score_map(network, image, precision=precision, backend=backend))
        times = best_times(functions, repeats)
        exact = compute_score_map(network, image, precision="fp32", backend="torch").logits
        for backend, precision in rows:
            logits = compute_score_map(network, image, precision=precision, backend=backend).logits
            quality = (f"max abs Δ vs torch fp32 {float((logits - exact).abs().max()):.1e}" if precision == "fp32"
                       else f"top-1 agreement {agreement(logits, exact):.1%} (random weights: indicative only)")
            if backend == "onnxruntime" and cpu_isa_cap():  # MLAS dispatches on CPUID alone
                quality += "; NOT capped: ONNX Runtime's own kernels ignore the ISA caps and use every extension"
            marker = " ← auto here" if (backend, precision) == (default["backend"], default["precision"]) else ""
            report.add(f"h. {backend} {precision} vs naive NCHW fp32 torch ({size}²){marker}",
                       f"{times[(backend, precision)]:.2f} s", f"{times['naive']:.2f} s",
                       f"{times['naive'] / times[(backend, precision)]:.2f}× ({quality})",
                       "≥ 5× (AMX) / ≥ 1.5× (no AMX) at 1024² for auto" if marker else "—")


def bench_compile(report: Report, network, size: int, repeats: int) -> None:
    print(f"[g] torch.compile vs default path at {size}²", flush=True)
    image = photo(size)
    batch = prepare_batch(network, [image])[0]
    start = time.perf_counter()
    compiled = torch.compile(network)
    with torch.inference_mode():
        compiled(batch)
    compile_seconds = time.perf_counter() - start

    def compiled_pass():
        with torch.inference_mode():
            return compiled(batch)

    times = best_times({"ours": lambda: compute_score_map(network, image), "compiled": compiled_pass}, repeats)
    report.add(f"g. torch.compile (first call {compile_seconds:.0f} s) vs default path ({size}²)",
               f"{times['compiled']:.2f} s", f"{times['ours']:.2f} s", f"{times['ours'] / times['compiled']:.2f}×", "—")


# ------------------------------------------------------------------------------------------------------- main
# ------------------------------------------------------------------------------------ families (--families)
#: One torchvision classifier per family, with the layer GradCAM explains (pytorch-grad-cam's documented choice:
#: the last block before the global pool).
FAMILY_MODELS = {
    "ResNet": ("resnet50", lambda m: m.layer4[-1]),
    "ConvNeXt": ("convnext_tiny", lambda m: m.features[-1]),
    "EfficientNet": ("efficientnet_b0", lambda m: m.features[-1]),
    "MobileNetV3": ("mobilenet_v3_large", lambda m: m.features[-1]),
    "RegNet": ("regnet_y_400mf", lambda m: m.trunk_output[-1]),
    "DenseNet": ("densenet121", lambda m: m.features[-1]),
    "ShuffleNetV2": ("shufflenet_v2_x1_0", lambda m: m.conv5),
    "MNASNet": ("mnasnet1_0", lambda m: m.layers[-1]),
    "SqueezeNet": ("squeezenet1_1", lambda m: m.features[-1]),
    "GoogLeNet": ("googlenet", lambda m: m.inception5b),
    "Inception-v3": ("inception_v3", lambda m: m.Mixed_7c),
    "VGG": ("vgg16", lambda m: m.features[-1]),
    "AlexNet": ("alexnet", lambda m: m.features[-1]),
}


def _family_models(arch: str) -> tuple[torch.nn.Module, torch.nn.Module, str]:
    """(classifier, converted network, weights source): ImageNet weights if cached, else seeded random ones."""
    from fcn_app.models import cached_weights_path, convert_classifier
    from fcn_app.models.zoo import _drop_auxiliary_heads

    entry = default_weights(arch)
    if cached_weights_path(entry).is_file():
        classifier, entry = load_classifier(arch, progress=False)
        source = "ImageNet"
    else:
        torch.manual_seed(0)
        classifier, source = _drop_auxiliary_heads(build_classifier(arch), arch).eval(), "random"
    preprocessing = entry.transforms()
    crop = int(preprocessing.crop_size[0])
    network = convert_classifier(classifier, input_size=crop, categories=entry.meta["categories"], arch=arch,
                                 mean=preprocessing.mean, std=preprocessing.std)
    return classifier, prepare_network(network), source


def bench_families(repeats: int, size: int = 512) -> None:
    """One row per family at ``size``²: top-5 class heatmaps from the converted network (the product's default
    path, upsampling included) vs pytorch-grad-cam's GradCAM ×5 on the same classifier and image."""
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError:
        print("families skipped: pip install grad-cam (bench-only dependency)")
        return
    os.environ.setdefault("FCN_HEATMAP_OFFLINE", "1")
    print(f"families: top-5 heatmaps at {size}², FCN vs GradCAM ×5, best of {repeats} after a warm-up")
    print(f"machine: {cpu_model()} ({cpu_flags()}), torch threads {torch.get_num_threads()}, load average "
          f"{os.getloadavg()[0]:.1f} at start")
    image = photo(size)
    rows = ["| family | model | weights | score grid | FCN top-5 | GradCAM ×5 | GradCAM / FCN |", "|---|---|---|---|---|---|---|"]
    for family, (arch, target_layer) in FAMILY_MODELS.items():
        classifier, network, source = _family_models(arch)
        score_map = compute_score_map(network, image)
        classes = [heat.selection.indices[0] for heat in class_heatmaps(score_map, topk=5)]
        model = gradcam_model(classifier)
        batch = prepare_batch(network, [image])[0].contiguous()

        def gradcam():
            with GradCAM(model=model, target_layers=[target_layer(model)]) as cam:
                return [cam(input_tensor=batch, targets=[ClassifierOutputTarget(index)])[0] for index in classes]

        times = best_times({"ours": lambda: class_heatmaps(compute_score_map(network, image), topk=5),
                            "gradcam": gradcam}, repeats)
        grid = "×".join(map(str, score_map.logits.shape[1:]))
        rows.append(f"| {family} | {arch} | {source} | {grid} | {times['ours']:.2f} s | {times['gradcam']:.2f} s | "
                    f"{times['gradcam'] / times['ours']:.1f}× |")
        print(f"  {rows[-1]}", flush=True)
    print()
    print("\n".join(rows))
    print(f"load average {os.getloadavg()[0]:.1f} at end")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per item (best is kept)")
    parser.add_argument("--weights", default=None, help="VGG16 state dict (default: hub cache, else random)")
    parser.add_argument("--only", default="abcdefgh", help="items to run, e.g. 'ab'")
    parser.add_argument("--compile", action="store_true", help="also measure torch.compile (slow to compile)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--huge-child", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--families", action="store_true",
                        help="only: one row per classifier family, top-5 heatmaps vs GradCAM at 512²")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.huge_child:
        huge_child(args.huge_child, args.weights)
        return
    if args.families:
        bench_families(args.repeats or 1)
        return

    repeats = args.repeats or (2 if args.quick else 3)
    sizes = {"a": 512, "b": 512 if args.quick else 1024, "d": 512, "e_exact": 1536 if args.quick else 2048,
             "e_huge": 3000 if args.quick else 8000}
    import onnxruntime
    import torchvision

    print("fcn-heatmap benchmark", "(--quick)" if args.quick else "")
    print(f"machine: {cpu_model()}, {os.cpu_count()} logical CPUs, torch threads {torch.get_num_threads()}, "
          f"native bf16: {'yes' if cpu_has_native_bf16() else 'no'}, load average {os.getloadavg()[0]:.1f} at start")
    print(f"cpu flags: {cpu_flags()}")
    default = scoring_summary("auto", "auto", "cpu")
    print(f"auto here: backend {default['backend']}, precision {default['precision']}")
    print(f"versions: python {platform.python_version()}, torch {torch.__version__}, torchvision "
          f"{torchvision.__version__}, onnxruntime {onnxruntime.__version__}, openvino {openvino_version()}, oneDNN "
          f"{'on' if torch.backends.mkldnn.is_available() else 'off'}")
    classifier, network, source = load_models(args.weights)
    prepare_network(network)
    print(f"model: vgg16 converted, {source}; photo: {PHOTO.relative_to(REPO)} resized to each size; "
          f"default activation budget {format_bytes(default_max_memory())}")
    report = Report()
    started = time.perf_counter()
    if "a" in args.only:
        bench_sliding_window(report, classifier, network, sizes["a"], repeats)
    default_time = None
    if "b" in args.only or "c" in args.only:
        default_time = bench_default_path(report, network, sizes["b"], repeats)
    if "c" in args.only:
        bench_gflops(report, network, sizes["b"], repeats, default_time)
    if "d" in args.only:
        bench_gradcam(report, classifier, network, sizes["d"], repeats)
    if "e" in args.only:
        bench_tiling_exactness(report, network, sizes["e_exact"])
        bench_huge(report, sizes["e_huge"], args.weights)
    if "f" in args.only:
        bench_onnx(report, network, sizes["b"], repeats)
    if "h" in args.only:
        bench_backends(report, network, (256, 512) if args.quick else (512, 1024), repeats)
    if args.compile and "g" in args.only:
        bench_compile(report, network, 512, repeats)
    print()
    print(report.table())
    print(f"\ntotal {time.perf_counter() - started:.0f} s; load average {os.getloadavg()[0]:.1f} at end "
          "(other processes sharing the CPUs slow every row alike: runs are interleaved)")


if __name__ == "__main__":
    main()
