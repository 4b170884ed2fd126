"""Helpers for the batch tests: a tiny network the CLI can load (``--model helpers_batch:tiny_fcn``) and a
folder of small images of mixed sizes and modes plus bad files."""

from __future__ import annotations

import io
import itertools
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from fcn_app.models import to_fully_convolutional
from helpers import random_rgb, tiny_classifier

TINY_CATEGORIES = ["tabby cat", "tiger cat", "dog", "rocket", "coffee mug"]


def tiny_fcn():
    """The 32×32-crop tiny classifier of ``helpers``, converted; milliseconds per image on a CPU."""
    return to_fully_convolutional(tiny_classifier(num_classes=5, seed=0), input_size=32, categories=TINY_CATEGORIES,
                                  mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def spot_fcn():
    """An FCN whose answer is known: 8-px windows (8×8 average pool, stride 8), class ``"red spot"`` scores
    ``40·(R − G) − 20`` per window (pixels in [0, 1]), class ``"other"`` scores 0 — so the heat peaks at the
    centre of a red square that fills one window."""
    import torch
    from torch import nn

    from fcn_app.models.convert import FullyConvolutionalNet

    head = nn.Sequential(nn.Conv2d(3, 2, 1))
    with torch.no_grad():
        head[0].weight.zero_()
        head[0].bias.zero_()
        head[0].weight[0, 0, 0, 0], head[0].weight[0, 1, 0, 0], head[0].bias[0] = 40.0, -40.0, -20.0
    return FullyConvolutionalNet(nn.Sequential(nn.AvgPool2d(8, stride=8)), head, input_size=(8, 8), num_classes=2,
                                 categories=["red spot", "other"])


#: Environment variable naming the gate file of :func:`gated_tiny_fcn`.
GATE_ENV = "FCN_TEST_GATE"


def gated_tiny_fcn():
    """``tiny_fcn`` whose n-th image waits until the file named by ``$FCN_TEST_GATE`` holds a number ≥ n (no file:
    0). A test lets exactly as many images through as it wants and the run then holds, in the main process, on the
    next one: a signal sent then lands mid-run on any machine, however fast. Needs the torch backend (a runtime
    such as OpenVINO would run a converted copy of the network, without the hook)."""
    network = tiny_fcn()
    gate = os.environ.get(GATE_ENV)
    if gate:
        scored = itertools.count(1)

        def wait_for_the_gate(module, args):
            number = next(scored)
            while _gate_count(Path(gate)) < number:
                time.sleep(0.02)

        network.features.register_forward_pre_hook(wait_for_the_gate)
    return network


def _gate_count(gate: Path) -> int:
    try:
        return int(gate.read_text() or 0)
    except (FileNotFoundError, ValueError):  # not written yet, or caught half-written
        return 0


def open_gate(gate: Path, images: int) -> None:
    """Let :func:`gated_tiny_fcn` score ``images`` images in all (written atomically: the run never reads half)."""
    temporary = gate.with_name(gate.name + ".new")
    temporary.write_text(str(images))
    os.replace(temporary, gate)


def _save(path: Path, image: Image.Image, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def make_image_folder(root: Path) -> dict[str, list[str]]:
    """~20 small images (mixed sizes, modes, formats, a sub-folder, upper-case extensions) and bad files.

    Returns ``{"good": [...], "bad": [...], "ignored": [...]}`` of paths relative to ``root``.
    """
    good, bad, ignored = [], [], []
    sizes = [(40, 40), (40, 40), (40, 40), (48, 64), (64, 48), (33, 50), (20, 30), (64, 64)]
    for index, (height, width) in enumerate(sizes):
        _save(root / f"rgb_{index:02d}.png", Image.fromarray(random_rgb(height, width, seed=index)))
        good.append(f"rgb_{index:02d}.png")
    pixels = random_rgb(40, 40, seed=20)
    _save(root / "photo.JPG", Image.fromarray(pixels), quality=90)
    _save(root / "gray.png", Image.fromarray(pixels[:, :, 0]))
    _save(root / "rgba.png", Image.fromarray(np.dstack([pixels, pixels[:, :, :1]])))
    _save(root / "palette.gif", Image.fromarray(pixels).convert("P"))
    _save(root / "photo.bmp", Image.fromarray(random_rgb(36, 44, seed=21)))
    _save(root / "photo.webp", Image.fromarray(random_rgb(40, 40, seed=22)))
    _save(root / "scan.tiff", Image.fromarray(random_rgb(40, 40, seed=23)))
    good += ["photo.JPG", "gray.png", "rgba.png", "palette.gif", "photo.bmp", "photo.webp", "scan.tiff"]
    for index in range(3):
        _save(root / "sub" / f"nested_{index}.jpeg", Image.fromarray(random_rgb(40, 40, seed=30 + index)))
        good.append(f"sub/nested_{index}.jpeg")
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_text("not an image at all\n")
    buffer = io.BytesIO()
    Image.fromarray(random_rgb(64, 64, seed=40)).save(buffer, format="PNG")
    (root / "truncated.png").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    bad += ["empty.png", "text.jpg", "truncated.png"]
    (root / "notes.txt").write_text("ignored\n")
    (root / "sub" / "data.csv").write_text("a,b\n")
    ignored += ["notes.txt", "sub/data.csv"]
    return {"good": sorted(good), "bad": sorted(bad), "ignored": ignored}


def is_gallery_file(path: Path, out_dir: Path) -> bool:
    """Part of a folder run's gallery (``index.html``, ``gallery-index.js``, ``.thumbs/``), not an image's output."""
    from fcn_app.batch.gallery import GALLERY_DATA_NAME, GALLERY_NAME, THUMBNAILS_DIR

    return path.relative_to(out_dir).parts[0] in (GALLERY_NAME, GALLERY_DATA_NAME, THUMBNAILS_DIR)


def broken_factory():
    """A ``--model`` factory with a bug in it: the CLI must call it an internal error, not the user's mistake."""
    return {}["no such key"]


def tiny_segmentation_checkpoint(path: Path, variant: str = "fcn8s", seed: int = 0) -> Path:
    """A tiny_vgg FCN with seeded non-zero score layers (so every output pixel varies), saved as a checkpoint."""
    import torch

    from fcn_app.segmentation.checkpoint import save_checkpoint
    from fcn_app.segmentation.models import build_segmentation_model

    torch.manual_seed(seed)
    model = build_segmentation_model(variant, 3, backbone="tiny_vgg", pretrained=False,
                                     class_names=["background", "cat", "dog"])
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "score" in name:
                parameter.normal_(0, 0.5)
    save_checkpoint(path, {"model_config": model.model_config(), "class_names": model.class_names,
                           "model": model.state_dict()})
    return path


def assert_nothing_partial(out: Path, allow_temporaries: bool = False) -> None:
    """Every file under a final name below ``out`` is complete (images decode, JSON parses); no temporary file unless
    allowed (a process killed mid-write leaves its ``.*.tmp``, which the next run removes — never a truncated final
    file)."""
    import json

    for path in out.rglob("*"):
        if not path.is_file():
            continue
        if path.name.endswith(".tmp"):
            assert allow_temporaries, f"temporary file left: {path}"
            continue
        if path.suffix in (".png", ".jpg", ".webp"):
            with Image.open(path) as picture:
                picture.load()
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
