"""COCO formats for detections: run-length masks, results files, and AP/AR evaluation with pycocotools.

pycocotools is an optional dependency (``pip install 'fcn-heatmap[detect]'``); it is imported when first needed.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from .errors import DatasetError

__all__ = [
    "METRIC_NAMES",
    "coco_results_from_summary",
    "encode_mask",
    "evaluate_detections",
    "job_detection_results",
    "to_coco_results",
]

logger = logging.getLogger(__name__)


def _pycocotools(purpose: str):
    """The pycocotools package (an optional dependency), or one clear error saying how to install it."""
    try:
        import pycocotools.coco
        import pycocotools.cocoeval
        import pycocotools.mask
    except ImportError:  # pragma: no cover - depends on the environment
        raise DatasetError(f"{purpose} needs pycocotools: pip install 'fcn-heatmap[detect]'") from None
    return pycocotools


def encode_mask(mask: np.ndarray) -> dict:
    """COCO run-length encoding of a boolean mask (``{"size": [h, w], "counts": str}``)."""
    mask_utils = _pycocotools("encoding detection masks").mask
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(value) for value in rle["size"]], "counts": rle["counts"].decode("ascii")}


def to_coco_results(per_image: Sequence[tuple[int, str, Sequence]]) -> list[dict]:
    """COCO detection results for ``(image_id, file_name, detections)`` triples.

    Detections may be :class:`~fcn_app.detect.Detection` objects or their ``to_dict()`` form (as saved per image).

    ``category_id`` is ``class_index + 1``; ``file_name`` and ``category_name`` ride along so that
    :func:`evaluate_detections` can match images and categories of any ground truth by name.
    """
    results = []
    for image_id, file_name, detections in per_image:
        for detection in detections:
            record = detection if isinstance(detection, dict) else detection.to_dict()
            entry = {
                "image_id": int(image_id),
                "file_name": file_name,
                "category_id": int(record["class_index"]) + 1,
                "category_name": record["class_name"],
                "bbox": [round(float(value), 2) for value in record["box"]],
                "score": round(float(record["score"]), 6),
            }
            if record.get("mask") is not None:
                entry["segmentation"] = record["mask"]
            results.append(entry)
    return results


METRIC_NAMES = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large",
                "AR1", "AR10", "AR100", "AR_small", "AR_medium", "AR_large")


def _load_json(source: str | os.PathLike | dict | list, what: str):
    if isinstance(source, (dict, list)):
        return source
    path = Path(source)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: cannot read {what} as JSON ({error})") from None


def _align_results(results: list[dict], ground_truth: dict) -> list[dict]:
    """Map results' image and category ids onto the ground truth's, by ``file_name``/``category_name`` if given."""
    images_by_name = {Path(image["file_name"]).name: image["id"] for image in ground_truth.get("images", [])
                      if "file_name" in image}
    categories_by_name = {category["name"].lower(): category["id"] for category in ground_truth.get("categories", [])}
    aligned = []
    for entry in results:
        entry = dict(entry)
        name = entry.pop("file_name", None)
        if name is not None and Path(name).name in images_by_name:
            entry["image_id"] = images_by_name[Path(name).name]
        category = entry.pop("category_name", None)
        if category is not None and category.lower() in categories_by_name:
            entry["category_id"] = categories_by_name[category.lower()]
        aligned.append(entry)
    return aligned


def evaluate_detections(
    results: str | os.PathLike | list[dict], ground_truth: str | os.PathLike | dict, *, iou_type: str = "bbox"
) -> dict[str, float]:
    """COCO AP/AR of detection ``results`` against ``ground_truth`` (COCO JSON), computed by pycocotools.

    Images and categories are matched by file name and category name when the results carry them (as files
    written by ``fcn-heatmap detect`` do), else by id. Returns ``{"AP": …, "AP50": …, …}`` (COCO's 12 numbers).
    """
    coco = _pycocotools("evaluation")
    COCO, COCOeval = coco.coco.COCO, coco.cocoeval.COCOeval
    truth = _load_json(ground_truth, "ground-truth")
    predicted = _load_json(results, "results")
    if not isinstance(truth, dict) or "annotations" not in truth or "images" not in truth:
        raise DatasetError("ground truth must be COCO JSON with 'images', 'annotations' and 'categories'")
    if isinstance(predicted, dict):  # a per-run file written by `detect` also holds the results list
        predicted = predicted.get("results", predicted.get("annotations"))
    if not isinstance(predicted, list):
        raise DatasetError("results must be a COCO results list: [{image_id, category_id, bbox, score}, …]")
    truth.setdefault("info", {})
    truth.setdefault("licenses", [])
    for annotation in truth["annotations"]:
        annotation.setdefault("iscrowd", 0)
        if "area" not in annotation:
            annotation["area"] = float(annotation["bbox"][2] * annotation["bbox"][3])
    predicted = _align_results(predicted, truth)
    known_images = {image["id"] for image in truth["images"]}
    unknown = sorted({entry["image_id"] for entry in predicted} - known_images)
    if unknown:
        raise DatasetError(f"results name {len(unknown)} image(s) not in the ground truth (e.g. id {unknown[0]}); "
                           "check that both files describe the same images")
    if not predicted:
        logger.warning("no detections to evaluate; every metric is 0")
        return {name: 0.0 for name in METRIC_NAMES}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco_truth = COCO()
        coco_truth.dataset = truth
        coco_truth.createIndex()
        coco_results = coco_truth.loadRes(predicted)
        evaluator = COCOeval(coco_truth, coco_results, iou_type)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return {name: float(value) for name, value in zip(METRIC_NAMES, evaluator.stats)}


def job_detection_results(summary_path: str | os.PathLike) -> Iterator[tuple[int, str, dict]]:
    """``(image id, file name, its .detections.json)`` for each image of a finished detection job that has results
    (done now or skipped as done before; failed images have none). Image ids follow the summary's (sorted) input
    order, failed inputs included."""
    rows = json.loads(Path(summary_path).read_text(encoding="utf-8"))["inputs"]
    for image_id, row in enumerate(rows, start=1):
        json_path = row.get("outputs", {}).get("json")
        if row["status"] in ("ok", "skipped") and json_path:
            yield image_id, Path(row["input"]).name, json.loads(Path(json_path).read_text(encoding="utf-8"))


def coco_results_from_summary(summary_path: str | os.PathLike) -> list[dict]:
    """COCO results of a finished detection job (:func:`job_detection_results`)."""
    return to_coco_results([(image_id, name, result["detections"])
                            for image_id, name, result in job_detection_results(summary_path)])
