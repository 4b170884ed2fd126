"""Segmentation datasets on disk: Pascal VOC 2012 (+ optional SBD), and a plain folder layout.

Every sample is an ``H×W×3`` uint8 RGB image and an ``H×W`` int64 label mask, where :data:`IGNORE_INDEX` (255)
marks pixels that count for nothing (VOC's object borders, crop padding). Problems are found when a sample is
read and reported as :class:`~fcn_app.errors.DatasetError` naming the file and the fix.

Layouts::

    VOC2012/                              my_data/
      JPEGImages/<id>.jpg                   images/<id>.(jpg|png|...)
      SegmentationClass/<id>.png (palette)  masks/<id>.png    (integer labels 0..N-1, 255 = ignore)
      ImageSets/Segmentation/train.txt      classes.txt       (one class name per line, line i = label i)
                                            train.txt, val.txt (optional lists of ids; default: all images)
    SBD (benchmark_RELEASE/dataset)/
      img/<id>.jpg, cls/<id>.mat (or .png), train.txt
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ..errors import DatasetError, InputImageError
from ..io import IMAGE_EXTENSIONS, load_image

__all__ = [
    "IGNORE_INDEX",
    "VOC_CLASSES",
    "FolderSegmentation",
    "SegmentationDataset",
    "VOCSegmentation",
    "read_id_list",
    "read_label_mask",
    "voc_palette",
]

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


def voc_palette(count: int = 256) -> np.ndarray:
    """The Pascal VOC colour palette (``count × 3`` uint8, RGB): label bits spread over the colour channels."""
    palette = np.zeros((count, 3), dtype=np.uint8)
    for label in range(count):
        value, red, green, blue = label, 0, 0, 0
        for bit in range(8):
            red |= ((value >> 0) & 1) << (7 - bit)
            green |= ((value >> 1) & 1) << (7 - bit)
            blue |= ((value >> 2) & 1) << (7 - bit)
            value >>= 3
        palette[label] = (red, green, blue)
    return palette


def read_id_list(list_path: Path, root: Path) -> list[str]:
    """Sample ids from a list file (first column, blank lines and ``#`` comments skipped), checked to stay in ``root``."""
    if not list_path.is_file():
        raise DatasetError(f"{list_path}: list file not found; check data.root and the split name")
    ids = []
    resolved_root = root.resolve()
    for number, line in enumerate(list_path.read_text(encoding="utf-8").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        sample_id = text.split()[0]
        target = (resolved_root / sample_id).resolve()
        if os.path.isabs(sample_id) or (target != resolved_root and resolved_root not in target.parents):
            raise DatasetError(
                f"{list_path}:{number}: entry {sample_id!r} points outside the dataset root {root}; list entries "
                "must be ids relative to the dataset"
            )
        ids.append(sample_id)
    if not ids:
        raise DatasetError(f"{list_path}: the list is empty")
    return ids


def _scipy_loadmat():
    """``scipy.io.loadmat`` for SBD's ``.mat`` masks — scipy is an optional dependency (the ``voc`` extra)."""
    try:
        from scipy.io import loadmat
    except ImportError:
        raise DatasetError(
            "SBD masks (.mat files) need scipy: pip install 'fcn-heatmap[voc]' (or pip install scipy)"
        ) from None
    return loadmat


def read_label_mask(path: Path) -> np.ndarray:
    """An ``H×W`` int64 label mask from a palette/grey PNG (pixel value = label) or an SBD ``.mat`` file."""
    if not path.is_file():
        raise DatasetError(f"{path}: mask not found; every image needs a mask with the same id")
    loadmat = _scipy_loadmat() if path.suffix.lower() == ".mat" else None
    try:
        if loadmat is not None:
            labels = np.asarray(loadmat(str(path))["GTcls"][0]["Segmentation"][0])
        else:
            with Image.open(path) as mask:
                if mask.mode not in ("P", "L", "I", "I;16"):
                    raise DatasetError(
                        f"{path}: mask has mode {mask.mode}; masks must store one label per pixel (palette or "
                        "greyscale PNG), not colours"
                    )
                labels = np.asarray(mask)
    except DatasetError:
        raise
    except Exception as error:  # noqa: BLE001 - any decoder failure is a broken mask file
        raise DatasetError(f"{path}: cannot read mask ({str(error).strip()[:120] or type(error).__name__})") from None
    return labels.astype(np.int64)


@dataclass(frozen=True)
class _Entry:
    sample_id: str
    image: Path
    mask: Path


class SegmentationDataset:
    """A list of (image, mask) files; ``read(index)`` → validated ``(image uint8 H×W×3, labels int64 H×W)``."""

    def __init__(self, entries: list[_Entry], class_names: list[str], name: str) -> None:
        if not entries:
            raise DatasetError(f"{name}: no samples found")
        self.entries = entries
        self.class_names = list(class_names)
        self.num_classes = len(self.class_names)
        self.name = name

    def __len__(self) -> int:
        return len(self.entries)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        entry = self.entries[index]
        if not entry.image.is_file():
            raise DatasetError(f"{entry.image}: image of sample {entry.sample_id!r} not found")
        try:
            image = load_image(entry.image)
        except InputImageError as error:
            raise DatasetError(str(error)) from None
        labels = read_label_mask(entry.mask)
        if labels.shape != image.shape[:2]:
            raise DatasetError(
                f"{entry.mask}: mask is {labels.shape[1]}×{labels.shape[0]} but image {entry.image.name} is "
                f"{image.shape[1]}×{image.shape[0]}; masks must have the image's size"
            )
        bad = (labels >= self.num_classes) & (labels != IGNORE_INDEX) | (labels < 0)
        if bad.any():
            value = int(labels[bad][0])
            raise DatasetError(
                f"{entry.mask}: label {value} but the dataset has {self.num_classes} classes (0–"
                f"{self.num_classes - 1}, {IGNORE_INDEX} = ignore); fix the mask or the class list"
            )
        return image, labels


class VOCSegmentation(SegmentationDataset):
    """Pascal VOC 2012 segmentation split, optionally extended with SBD training ids (minus ``exclude`` ids)."""

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        *,
        sbd_root: str | os.PathLike | None = None,
        sbd_split: str = "train",
        exclude_split: str | None = None,
    ) -> None:
        root = Path(root)
        if not (root / "JPEGImages").is_dir():
            raise DatasetError(f"{root}: not a VOC2012 folder (no JPEGImages/); point data.root at VOCdevkit/VOC2012")
        lists = root / "ImageSets" / "Segmentation"
        ids = read_id_list(lists / f"{split}.txt", root / "JPEGImages")
        entries = [_Entry(i, root / "JPEGImages" / f"{i}.jpg", root / "SegmentationClass" / f"{i}.png") for i in ids]
        if sbd_root is not None:
            sbd_root = Path(sbd_root)
            excluded = set(ids)
            if exclude_split:
                excluded |= set(read_id_list(lists / f"{exclude_split}.txt", root / "JPEGImages"))
            for sample_id in read_id_list(sbd_root / f"{sbd_split}.txt", sbd_root / "img"):
                if sample_id in excluded:
                    continue
                mask = sbd_root / "cls" / f"{sample_id}.mat"
                if not mask.exists() and (sbd_root / "cls" / f"{sample_id}.png").exists():
                    mask = sbd_root / "cls" / f"{sample_id}.png"
                entries.append(_Entry(sample_id, sbd_root / "img" / f"{sample_id}.jpg", mask))
            if any(entry.mask.suffix == ".mat" for entry in entries):
                _scipy_loadmat()  # now, rather than at the first SBD sample hours into training
        super().__init__(entries, list(VOC_CLASSES), f"VOC2012 {split}" + (" + SBD" if sbd_root else ""))


class FolderSegmentation(SegmentationDataset):
    """``root/images/<id>.*`` with ``root/masks/<id>.png`` integer labels and a class-names file."""

    def __init__(
        self,
        root: str | os.PathLike,
        list_file: str | None = None,
        *,
        classes_file: str | os.PathLike | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        root = Path(root)
        images_dir, masks_dir = root / "images", root / "masks"
        if not images_dir.is_dir():
            raise DatasetError(f"{root}: no images/ folder; expected {root}/images and {root}/masks")
        classes_path = Path(classes_file) if classes_file is not None else root / "classes.txt"
        if not classes_path.is_absolute() and classes_file is not None and not classes_path.exists():
            classes_path = root / classes_path
        if classes_path.is_file():
            class_names = [line.strip() for line in classes_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        elif class_names is None:
            raise DatasetError(f"{classes_path}: class-names file not found (one name per line, line i = label i)")
        if not class_names:
            raise DatasetError(f"{classes_path}: no class names")
        by_stem = {path.stem: path for path in sorted(images_dir.iterdir())
                   if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS}
        if list_file:
            ids = read_id_list(root / list_file, images_dir)
            missing = [i for i in ids if i not in by_stem]
            if missing:
                raise DatasetError(f"{root / list_file}: image {missing[0]!r} not found in {images_dir}")
        else:
            ids = sorted(by_stem)
        entries = [_Entry(i, by_stem[i], masks_dir / f"{i}.png") for i in ids]
        super().__init__(entries, class_names, f"{root}" + (f" ({list_file})" if list_file else ""))
