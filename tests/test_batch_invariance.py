"""An image's outputs do not depend on the batch: alone, or in a folder at any batch size with any neighbours,
every output file (overlay, grid, JSON, raw scores) has the same bytes; the Python API agrees bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fcn_app.batch import collect_inputs, run_batch
from fcn_app.scoring import compute_score_map, compute_score_maps
from fcn_app.tasks import HeatmapOptions, HeatmapTask, process_image

from helpers import random_rgb
from helpers_batch import tiny_fcn

OPTIONS = HeatmapOptions(grid=True, save_scores=True, write_json=True, topk=2)


def same_size_folder(root: Path) -> list[str]:
    """Nine 40×40 images (so batches of 3 and 8 really form) and two of other sizes."""
    names = []
    for index in range(9):
        names.append(f"same_{index}.png")
        Image.fromarray(random_rgb(40, 40, seed=100 + index)).save(root / names[-1])
    for index, size in enumerate([(48, 56), (64, 33)]):
        names.append(f"other_{index}.png")
        Image.fromarray(random_rgb(*size, seed=200 + index)).save(root / names[-1])
    return names


def output_bytes(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*"))
            if path.is_file() and path.name != "summary.json"}


def test_the_api_scores_a_list_exactly_as_one_by_one():
    network = tiny_fcn()
    images = [random_rgb(40, 40, seed=seed) for seed in range(8)]  # a size where a joint pass sums differently
    together = compute_score_maps(network, images, precision="fp32")
    for image, score_map in zip(images, together):
        alone = compute_score_map(network, image, precision="fp32")
        assert torch.equal(score_map.logits, alone.logits)  # bit for bit, not within a tolerance


def test_every_output_is_byte_identical_alone_and_at_batch_sizes_1_3_8(tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    names = same_size_folder(inputs)
    network = tiny_fcn()
    alone = tmp_path / "alone"
    alone.mkdir()
    for name in names:
        pixels = np.asarray(Image.open(inputs / name).convert("RGB"))
        process_image(HeatmapTask(network, OPTIONS), pixels, alone / Path(name).stem, source=str(inputs / name))
    expected = output_bytes(alone)
    assert len(expected) == 4 * len(names)  # overlay, grid, JSON, scores of every image
    items, _ = collect_inputs([inputs])
    for batch_size in (1, 3, 8):
        out = tmp_path / f"batch_{batch_size}"
        result = run_batch(HeatmapTask(network, OPTIONS), items, out, batch_size=batch_size, num_workers=1)
        assert result.counts["ok"] == len(names)
        assert output_bytes(out) == expected, f"batch size {batch_size}"
