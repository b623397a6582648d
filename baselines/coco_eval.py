"""Detection metrics through pycocotools, from in-memory ground truth and predictions."""
from __future__ import annotations

import contextlib
import io
from typing import Sequence

import numpy as np


def coco_metrics(
    ground_truth: Sequence[dict], predictions: Sequence[dict], categories: Sequence[str]
) -> dict:
    """COCO box metrics.

    ground_truth: per image {"boxes": [[x, y, w, h], ...], "labels": [category index, ...], "width", "height"}
    predictions:  per image (same order) {"boxes": [[x, y, w, h], ...], "labels": [...], "scores": [...]}
    Category indices are 0-based in schema order; COCO ids are index + 1.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations, detections = [], [], []
    for image_id, (truth, predicted) in enumerate(zip(ground_truth, predictions), start=1):
        images.append({"id": image_id, "width": truth.get("width", 672), "height": truth.get("height", 389)})
        for box, label in zip(truth["boxes"], truth["labels"]):
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": int(label) + 1,
                                "bbox": [float(v) for v in box], "area": float(box[2] * box[3]), "iscrowd": 0})
        for box, label, score in zip(predicted["boxes"], predicted["labels"], predicted["scores"]):
            detections.append({"image_id": image_id, "category_id": int(label) + 1, "bbox": [float(v) for v in box],
                               "score": float(score)})
    gt = COCO()
    gt.dataset = {"images": images, "annotations": annotations,
                  "categories": [{"id": i + 1, "name": n} for i, n in enumerate(categories)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    if not detections:
        return {"mAP": 0.0, "mAP50": 0.0, "mAP75": 0.0, "mAR100": 0.0, "per_class_AP": {c: 0.0 for c in categories},
                "per_class_AP50": {c: 0.0 for c in categories},
                "images": len(images), "detections": 0}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats
    precision = evaluator.eval["precision"]  # [IoU thresholds, recall, categories, areas, max dets]
    per_class, per_class_50 = {}, {}
    for k, name in enumerate(categories):
        per_class[name] = _mean_precision(precision[:, :, k, 0, -1])
        per_class_50[name] = _mean_precision(precision[0, :, k, 0, -1])  # IoU .5 alone: thin limbs lose most at .75+
    return {"mAP": _clean(stats[0]), "mAP50": _clean(stats[1]), "mAP75": _clean(stats[2]), "mAR100": _clean(stats[8]),
            "per_class_AP": per_class, "per_class_AP50": per_class_50, "images": len(images), "detections": len(detections)}


def _mean_precision(values: np.ndarray) -> float:
    values = values[values > -1]
    return float(values.mean()) if values.size else float("nan")


def _clean(value: float) -> float:
    return float(max(value, 0.0)) if np.isfinite(value) else 0.0
