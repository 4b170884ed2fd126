"""Shared test helpers: seeded random weights with the right shapes, tiny models, tiny images."""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fcn_app.models import build_classifier, cached_weights_path, default_weights

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def random_state_dict(arch: str = "vgg16", seed: int = 0) -> dict[str, torch.Tensor]:
    """A seeded random state dict of torchvision's ``arch`` (He-scaled, so activations stay in range)."""
    with torch.device("meta"):
        shapes = {key: value.shape for key, value in build_classifier(arch).state_dict().items()}
    return random_state_for_shapes(shapes, seed)


def random_state_for_shapes(shapes: dict[str, torch.Size], seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random tensors for a state dict's ``shapes`` (He-scaled weights, small biases, unit batch norms)."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in shapes.items():
        if key.endswith("running_var"):
            state[key] = torch.ones(shape)
        elif key.endswith("num_batches_tracked"):
            state[key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("running_mean") or key.endswith("bias"):
            state[key] = torch.randn(shape, generator=generator) * 0.01
        elif len(shape) == 1:  # batch-norm weight
            state[key] = 1.0 + 0.1 * torch.randn(shape, generator=generator)
        else:
            fan_in = math.prod(shape[1:])
            state[key] = torch.randn(shape, generator=generator) * math.sqrt(2.0 / fan_in)
    return state


#: Where generated weight files are kept between test sessions (``FCN_TEST_WEIGHTS_CACHE`` overrides): drawing and
#: writing VGG16's 528 MB took ~5 s of every session, and deleting the copy in an old session folder ~4 s more.
WEIGHTS_CACHE = Path(os.environ.get("FCN_TEST_WEIGHTS_CACHE")
                     or Path(tempfile.gettempdir()) / f"fcn-heatmap-test-weights-{os.getuid()}")


def _cached_random_weights(arch: str, seed: int) -> Path:
    """The file of :func:`random_state_dict` ``(arch, seed)``, written once per torch version, shapes and generator
    code (all in its name) to a temporary name and renamed, so concurrent sessions never see half a file."""
    with torch.device("meta"):
        shapes = [(key, tuple(value.shape)) for key, value in build_classifier(arch).state_dict().items()]
    recipe = repr((arch, seed, torch.__version__, shapes, inspect.getsource(random_state_for_shapes)))
    path = WEIGHTS_CACHE / f"{arch}-seed{seed}-{hashlib.sha256(recipe.encode()).hexdigest()[:16]}.pth"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(random_state_for_shapes(dict(shapes), seed), partial)
        os.replace(partial, path)
    return path


def write_default_weights(torch_home: Path, arch: str = "vgg16", seed: int = 0) -> Path:
    """Pre-fill ``torch_home``'s hub cache with seeded random weights at the exact default file name: a hard link to
    the kept file (nothing in the product or the tests writes into a hub-cache file; it is read, copied or
    deleted), or a copy where links cannot be made."""
    path = torch_home / "hub" / "checkpoints" / Path(default_weights(arch).url).name
    path.parent.mkdir(parents=True, exist_ok=True)
    source = _cached_random_weights(arch, seed)
    path.unlink(missing_ok=True)
    try:
        os.link(source, path)
    except OSError:
        shutil.copyfile(source, path)
    return path


def tiny_classifier(num_classes: int = 5, pool: nn.Module | None = None, seed: int = 0) -> nn.Sequential:
    """A small VGG-style classifier for 32×32 crops: 3 conv blocks (stride 8), flatten, 2 Linear layers."""
    torch.manual_seed(seed)
    pool = pool if pool is not None else nn.Identity()
    grid = 4 if isinstance(pool, nn.Identity) else pool.output_size
    grid = grid if isinstance(grid, int) else grid[0]
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        pool,
        nn.Flatten(),
        nn.Linear(16 * grid * grid, 32), nn.ReLU(), nn.Dropout(0.2),
        nn.Linear(32, num_classes),
    )


#: fp32 tolerances for the same mathematics through different kernels (a convolution where the classifier runs a
#: GEMM, a runtime's own kernels, another CPU's vector width: another summation order): ``rtol`` per value plus an
#: absolute part relative to the largest magnitude compared, so a test means the same for logits of 0.1 and of 100.
#: Measured: converted VGG/AlexNet logits at 224² differ from torchvision's by up to 3.1e-6 × max |logit| on an
#: AVX2-only EPYC (an absolute 1e-5 failed there for logits up to 18).
FP32_RTOL, FP32_ATOL_SCALE = 1e-4, 1e-5


def assert_close_scaled(actual, expected, *, rtol: float = FP32_RTOL, atol_scale: float = FP32_ATOL_SCALE,
                        **kwargs) -> None:
    """``torch.testing.assert_close`` with ``atol = atol_scale × max |expected|``: an absolute tolerance relative to
    the magnitude compared, never a fixed one on values of arbitrary size."""
    magnitude = torch.as_tensor(expected).detach().abs()
    scale = float(magnitude.max()) if magnitude.numel() else 0.0
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol_scale * scale, **kwargs)


#: Per-pixel labels computed by two kernels can differ only where the top two classes nearly tie: pixels where the
#: top class leads by at most this much probability (on a boundary between two regions) may go either way.
LABEL_MARGIN = 1e-4


def assert_labels_where_decided(labels: torch.Tensor, probabilities: torch.Tensor,
                                margin: float = LABEL_MARGIN) -> None:
    """``labels`` (H×W) equal ``probabilities.argmax(0)`` (K×H×W) wherever the top class leads the second by more
    than ``margin``, and such decided pixels are at least 99 % of the image: labels are an argmax of floats, and a
    near tie flips when another kernel sums in another order."""
    top = probabilities.topk(2, dim=0)
    decided = top.values[0] - top.values[1] > margin
    assert float(decided.float().mean()) >= 0.99, f"only {float(decided.float().mean()):.2%} of pixels decided"
    assert torch.equal(labels[decided], top.indices[0][decided]), \
        f"{int((labels[decided] != top.indices[0][decided]).sum())} decided pixels differ"


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(height, width, 3), dtype=np.uint8)


def seeded_classifier(arch: str = "vgg16", seed: int = 0) -> nn.Module:
    """torchvision ``arch`` holding :func:`random_state_dict` weights, built without the slow default init."""
    with torch.device("meta"):
        model = build_classifier(arch)
    model.load_state_dict(random_state_dict(arch, seed), assign=True)
    return model.eval()


def meta_classifier(arch: str = "vgg16") -> nn.Module:
    """torchvision ``arch`` on the meta device: shapes only, for geometry tests that never compute."""
    with torch.device("meta"):
        return build_classifier(arch).eval()


def one_hot_heats(geometry, image_size: tuple[int, int]):
    """For every cell of ``geometry``'s grid: ``(row, col, heat, peaks)`` — the per-pixel map of a one-hot score
    grid at that cell, and the pixels ``(y, x)`` at its maximum (a plateau where clamped beyond the centres)."""
    import torch

    from fcn_app.geometry import upsample_to_pixels

    for row in range(geometry.grid[0]):
        for col in range(geometry.grid[1]):
            cells = torch.zeros(geometry.grid)
            cells[row, col] = 1.0
            heat = upsample_to_pixels(cells, geometry, image_size).numpy()
            yield row, col, heat, np.argwhere(np.isclose(heat, heat.max(), rtol=0, atol=1e-6))


def tiny_training_config(shapes: Path, run: Path, *overrides: str):
    """A training config for the tiny_vgg FCN-8s on a folder dataset, CPU, no progress bar; ``overrides`` last."""
    from fcn_app.train.config import load_config

    base = ["model.variant=fcn8s", "model.backbone=tiny_vgg", "model.pretrained=false", "data.format=folder",
            f"data.root={shapes}", "data.train_split=train.txt", "data.num_workers=0", f"run.output_dir={run}",
            "run.progress=false"]
    return load_config(None, base + list(overrides))
