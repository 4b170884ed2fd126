"""A browsable gallery of a folder run: ``OUT/index.html`` that works from disk (``file://``), with no server.

Browsers refuse ``fetch()`` of a local JSON file from a ``file://`` page, so the index travels as a small
script, ``OUT/gallery-index.js`` (``window.FCN_GALLERY = {...}``), loaded by ``<script src>``. The page itself
is a fixed template (its size does not grow with the run); it filters by class, sorts by peak probability or
name and shows one page of cards at a time, with lazily loaded thumbnails, so 10,000 images stay fast.

Thumbnails (``OUT/.thumbs/<main picture's path>.jpg``, at most :data:`THUMBNAIL_SIDE` px) are written by the
batch writer as each image's outputs are written (:func:`write_thumbnail`); :func:`build_gallery` runs once per
run, from the finished ``summary.json``, and makes only the thumbnails that are missing or older than their
picture (outputs written before the gallery existed, or with it turned off).

The gallery is a function of the outputs on disk: a run resumed after an interruption writes the same bytes as
an uninterrupted one (``ok`` and ``skipped`` rows are both simply "done"; no times or counts of this run). One
exception: a thumbnail remade from a JPEG/WebP output (lost in a kill between the picture and its thumbnail) is
made from the lossy file, not the pixels, and may differ slightly.
"""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from ..errors import FcnError
from ..io import atomic_write_bytes, atomic_write_stream, atomic_write_text, encode_image
from .summary import SUMMARY_NAME

__all__ = [
    "GALLERY_DATA_NAME",
    "GALLERY_NAME",
    "THUMBNAILS_DIR",
    "THUMBNAIL_SIDE",
    "build_gallery",
    "gallery_records",
    "main_picture",
    "thumbnail_path",
    "write_gallery",
    "write_thumbnail",
]

logger = logging.getLogger(__name__)

GALLERY_NAME = "index.html"
GALLERY_DATA_NAME = "gallery-index.js"
THUMBNAILS_DIR = ".thumbs"
#: Longer side of a thumbnail: sharp in a ~220 px card on a 1.5× screen, ~10 kB as JPEG.
THUMBNAIL_SIDE = 320
THUMBNAIL_QUALITY = 80
PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
#: The per-class number a task reports in its summary rows, in order of preference, and how the page names it.
METRICS = {"peak_probability": "peak probability", "score": "detection score", "pixel_fraction": "pixel fraction"}
GALLERY_FORMAT = 1
#: Failures listed in the page; the rest are counted (summary.json has them all).
MAX_LISTED_PROBLEMS = 2000


def main_picture(outputs: dict) -> Path | None:
    """The picture that stands for an image: the first picture among its outputs (tasks list their overlay
    first), or ``None``."""
    for path in outputs.values():
        if str(path).lower().endswith(PICTURE_SUFFIXES):
            return Path(path)
    return None


def _relative(out_dir: str, path: str | os.PathLike) -> str:
    """``path`` relative to the absolute ``out_dir``, POSIX form (string work: this runs for every output of a run)."""
    absolute = os.path.abspath(path)
    if absolute.startswith(out_dir + os.sep):
        relative = absolute[len(out_dir) + 1:]
    else:
        relative = os.path.relpath(absolute, out_dir)
    return relative.replace(os.sep, "/")


def thumbnail_path(out_dir: str | os.PathLike, picture: str | os.PathLike) -> Path:
    """Where the thumbnail of output ``picture`` (a path below ``out_dir``) goes."""
    return Path(out_dir) / THUMBNAILS_DIR / f"{_relative(os.path.abspath(out_dir), picture)}.jpg"


def _thumbnail_bytes(picture: Image.Image) -> bytes:
    picture = picture.convert("RGB") if picture.mode not in ("RGB", "L") else picture
    picture.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.BILINEAR, reducing_gap=2.0)
    return encode_image(np.asarray(picture), "jpg", quality=THUMBNAIL_QUALITY)


def write_thumbnail(picture_rgb: np.ndarray, path: str | os.PathLike) -> Path:
    """A small JPEG of an RGB (or grey) uint8 picture, written atomically."""
    return atomic_write_bytes(path, _thumbnail_bytes(Image.fromarray(np.ascontiguousarray(picture_rgb))))


def _fresh_thumbnail(out_dir: str, picture: str) -> str | None:
    """The link to the thumbnail of ``picture``, made from the file if missing or older; ``None`` if impossible."""
    relative = f"{THUMBNAILS_DIR}/{_relative(out_dir, picture)}.jpg"
    thumbnail = os.path.join(out_dir, relative)
    try:
        picture_time = os.stat(picture).st_mtime_ns
    except OSError:
        return None
    try:
        if os.stat(thumbnail).st_mtime_ns >= picture_time:
            return relative
    except OSError:
        pass
    try:
        with Image.open(picture) as opened:
            opened.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))  # JPEGs decode at a reduced scale
            data = _thumbnail_bytes(opened)
        atomic_write_bytes(thumbnail, data)
        return relative
    except (OSError, ValueError, FcnError) as error:
        logger.warning("no thumbnail for %s (%s); the gallery shows the picture itself", picture, error)
        return None


def _class_values(top_classes: list[dict]) -> tuple[dict[str, float], str | None]:
    """Best value per class name in a row's ``top_classes`` (a detection row may name a class twice)."""
    values: dict[str, float] = {}
    metric = None
    for entry in top_classes or []:
        if not isinstance(entry, dict) or "name" not in entry:
            continue
        key = next((key for key in METRICS if isinstance(entry.get(key), (int, float))), None)
        if key is None:
            continue
        metric = metric or key
        name = str(entry["name"])
        values[name] = max(values.get(name, float("-inf")), float(entry[key]))
    return values, metric


def gallery_records(out_dir: str | os.PathLike, rows: list[dict], *, thumbnails: bool = True) -> dict:
    """The gallery's data for summary ``rows``: classes, one compact record per finished image, the failures.

    An image record is ``[path, thumbnail, picture, [[class index, value], ...] best first, [[kind, link], ...],
    [width, height]]``; links are relative to ``out_dir``. With ``thumbnails`` missing or stale thumbnails are
    made from the pictures on disk.
    """
    out_dir = os.path.abspath(out_dir)
    finished, problems, metrics = [], [], []
    problem_counts = {"failed": 0, "pending": 0}
    for row in rows:
        status = row.get("status")
        if status in ("ok", "skipped"):
            outputs = row.get("outputs") or {}
            picture = main_picture(outputs)
            picture = str(picture) if picture is not None else None
            thumbnail = _fresh_thumbnail(out_dir, picture) if thumbnails and picture is not None else None
            values, metric = _class_values(row.get("top_classes"))
            if metric is not None:
                metrics.append(metric)
            finished.append((row, picture, thumbnail, values, outputs))
        else:
            problem_counts["pending" if status == "pending" else "failed"] += 1
            if len(problems) < MAX_LISTED_PROBLEMS:
                problems.append([str(row.get("path")), str(status), str(row.get("reason") or "")])
    names = sorted({name for _, _, _, values, _ in finished for name in values})
    index_of = {name: index for index, name in enumerate(names)}
    images = []
    for row, picture, thumbnail, values, outputs in finished:
        classes = sorted(([index_of[name], round(value, 4)] for name, value in values.items()),
                         key=lambda pair: (-pair[1], pair[0]))
        images.append([
            str(row.get("path")),
            thumbnail,
            _relative(out_dir, picture) if picture is not None else None,
            classes,
            [[kind, _relative(out_dir, path)] for kind, path in outputs.items()],
            row.get("image_size"),
        ])
    metric = max(set(metrics), key=metrics.count) if metrics else "peak_probability"
    return {"images": images, "classes": names, "problems": problems, "problem_counts": problem_counts,
            "metric": metric, "metric_label": METRICS[metric]}


def _page_template() -> str:
    return resources.files(__package__).joinpath("gallery.html").read_text(encoding="utf-8")


def write_gallery(out_dir: str | os.PathLike, rows: list[dict], *, model: str | None = None,
                  thumbnails: bool = True) -> Path:
    """Write ``gallery-index.js`` then ``index.html`` (each atomically) for summary ``rows``; returns the page."""
    out_dir = Path(out_dir)
    records = gallery_records(out_dir, rows, thumbnails=thumbnails)
    header = {
        "format": GALLERY_FORMAT,
        "model": model,
        "metric": records["metric"],
        "metric_label": records["metric_label"],
        "classes": records["classes"],
        "counts": {"images": len(records["images"]), **records["problem_counts"]},
        "problems": records["problems"],
    }

    def dump(value) -> bytes:
        return json.dumps(value, ensure_ascii=True, separators=(",", ":")).encode("ascii")

    def write(stream: BinaryIO) -> None:
        # One record per line: a reader (or a diff) can follow it, and nothing but the list grows with the run.
        stream.write(b"window.FCN_GALLERY = " + dump(header)[:-1] + b',\n"images":[')
        for number, image in enumerate(records["images"]):
            stream.write((b",\n" if number else b"\n") + dump(image))
        stream.write(b"\n]};\n")

    atomic_write_stream(out_dir / GALLERY_DATA_NAME, write)
    return atomic_write_text(out_dir / GALLERY_NAME, _page_template())


def build_gallery(out_dir: str | os.PathLike, summary_path: str | os.PathLike | None = None, *,
                  thumbnails: bool = True) -> Path:
    """The gallery of the run whose ``summary.json`` is ``summary_path`` (default: the one in ``out_dir``)."""
    out_dir = Path(out_dir)
    summary_path = Path(summary_path) if summary_path is not None else out_dir / SUMMARY_NAME
    payload = json.loads(summary_path.read_text(encoding="utf-8"))
    model = payload.get("model")
    return write_gallery(out_dir, payload.get("inputs", []), model=model if isinstance(model, str) else None,
                         thumbnails=thumbnails)
