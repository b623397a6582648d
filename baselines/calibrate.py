"""Score thresholds per class, chosen on the validation split: for each class, the threshold that
maximises its F1 when only outputs scoring at least that much are kept.

Why F1 per class: a pre-label that is wrong costs an annotator a deletion, one that is missing costs a
drawing; F1 weighs both, and a class's own threshold lets a rare class (arms) keep low-scoring boxes
that a common one (abdomen) can afford to drop. The choice is ours; the paper has no thresholds.
A request's own threshold still overrides these (see cvat_plugin.functions).
"""
from __future__ import annotations

from typing import Sequence

IOU_MATCH = 0.5  # a box counts as found at IoU >= 0.5, as mAP@.5 counts it


def best_f1_threshold(scores: Sequence[float], correct: Sequence[bool], positives: int) -> tuple[float, float] | None:
    """(threshold, F1) of the best cut of one class's outputs, each a score and whether it is right;
    `positives`: how many there are to find. None when there is nothing to choose from."""
    if not scores or positives <= 0:
        return None
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    best: tuple[float, float] | None = None
    found = 0
    for rank, index in enumerate(order, 1):
        found += bool(correct[index])
        if rank < len(order) and scores[order[rank]] == scores[index]:
            continue  # a cut between equal scores is not a threshold
        precision, recall = found / rank, found / positives
        f1 = 2 * precision * recall / (precision + recall) if found else 0.0
        if best is None or f1 > best[1]:
            best = (float(scores[index]), f1)
    return best


def classifier_thresholds(truth: Sequence[int], scores: Sequence[Sequence[float]], classes: Sequence[str]) -> dict[str, float]:
    """For each class, a threshold on the top score of the rows predicted as that class."""
    out = {}
    for k, name in enumerate(classes):
        rows = [i for i, row in enumerate(scores) if max(range(len(row)), key=row.__getitem__) == k]
        chosen = best_f1_threshold([scores[i][k] for i in rows], [truth[i] == k for i in rows], sum(t == k for t in truth))
        if chosen is not None:
            out[name] = round(chosen[0], 4)
    return out


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax1, ay1, bx1, by1 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w, h = min(ax1, bx1) - max(a[0], b[0]), min(ay1, by1) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def detector_thresholds(ground_truth: Sequence[dict], predictions: Sequence[dict], classes: Sequence[str]) -> dict[str, float]:
    """For each class, a threshold on box scores; a box is right when it takes a ground-truth box of
    its class at IoU >= 0.5 that no higher-scoring box took (COCO's greedy matching). Boxes are
    COCO [x, y, w, h], labels 0-based (what `engine.predict_boxes` returns)."""
    out = {}
    for k, name in enumerate(classes):
        scores, correct, positives = [], [], 0
        for truth, predicted in zip(ground_truth, predictions):
            targets = [box for box, label in zip(truth["boxes"], truth["labels"]) if label == k]
            positives += len(targets)
            taken: set[int] = set()
            mine = sorted(((s, box) for box, label, s in zip(predicted["boxes"], predicted["labels"], predicted["scores"]) if label == k),
                          key=lambda item: -item[0])
            for score, box in mine:
                overlaps = [(_iou(box, target), j) for j, target in enumerate(targets) if j not in taken]
                iou, j = max(overlaps, default=(0.0, -1))
                scores.append(score)
                correct.append(iou >= IOU_MATCH)
                if iou >= IOU_MATCH:
                    taken.add(j)
        chosen = best_f1_threshold(scores, correct, positives)
        if chosen is not None:
            out[name] = round(chosen[0], 4)
    return out
