"""Classification metrics and the confusion-matrix plot."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np


def classification_metrics(truth: Sequence[int], predicted: Sequence[int], classes: Sequence[str]) -> dict:
    """Accuracy, macro-F1 (over classes present in truth or predictions), per-class precision/recall, confusion."""
    k = len(classes)
    confusion = np.zeros((k, k), dtype=np.int64)
    for t, p in zip(truth, predicted):
        confusion[int(t), int(p)] += 1
    total = confusion.sum()
    per_class, f1s = {}, []
    for i, name in enumerate(classes):
        tp = confusion[i, i]
        support = confusion[i].sum()
        predicted_i = confusion[:, i].sum()
        precision = tp / predicted_i if predicted_i else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(support)}
        if support or predicted_i:
            f1s.append(f1)
    return {
        "accuracy": float(np.trace(confusion) / total) if total else 0.0,
        "macro_f1": float(np.mean(f1s)) if f1s else 0.0,
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "classes": list(classes),
        "samples": int(total),
    }


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], out: Path | str, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion, dtype=float)
    rows = matrix.sum(1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    figure, axis = plt.subplots(figsize=(1.2 * len(classes) + 2.5, 1.1 * len(classes) + 2))
    image = axis.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            axis.text(j, i, f"{int(matrix[i, j])}\n{normalised[i, j]:.0%}", ha="center", va="center", fontsize=8,
                      color="white" if normalised[i, j] > 0.5 else "black")
    axis.set_xticks(range(len(classes)), classes, rotation=30)
    axis.set_yticks(range(len(classes)), classes)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    figure.colorbar(image, ax=axis, fraction=0.046)
    figure.tight_layout()
    out = Path(out)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out
