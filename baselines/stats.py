"""Uncertainty of test scores when frames come in recording streams.

Consecutive frames of a stream are near-duplicates, so frames are not independent draws: a
bootstrap that resamples frames gives intervals far too narrow. These resample whole streams
(cluster bootstrap) and recompute the score on the frames of the drawn streams.
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np


def stream_of(image_id: str) -> str:
    """`image_id` is "<stream>/<frame name without extension>" everywhere in this project."""
    return image_id.split("/", 1)[0]


def group_by_stream(predictions: Sequence[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for p in predictions:
        groups.setdefault(stream_of(p["image_id"]), []).append(p)
    return groups


def stream_draws(streams: Sequence[str], draws: int, seed: int) -> list[list[str]]:
    """`draws` resamples of the stream list, with replacement, each as long as the list."""
    rng = np.random.default_rng(seed)
    return [[streams[k] for k in rng.integers(0, len(streams), len(streams))] for _ in range(draws)]


def seed_mean_distribution(runs: Sequence[Mapping[str, list[dict]]], score: Callable[[list[dict]], float],
                           draws: int, seed: int = 0) -> np.ndarray:
    """Distribution of the seed-averaged score over stream resamples.

    `runs`: one {stream: predictions} per training seed, on the same test streams. Each draw
    resamples streams once and scores every seed's model on the same drawn streams, so the
    interval covers test-set sampling; the spread between seeds is reported separately (sd).
    """
    streams = sorted(set().union(*(r.keys() for r in runs)))
    out = []
    for drawn in stream_draws(streams, draws, seed):
        out.append(np.mean([score([p for s in drawn for p in run.get(s, [])]) for run in runs]))
    return np.asarray(out)


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of a bootstrap distribution."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def accuracy(predictions: Sequence[dict]) -> float:
    """Share of classifier predictions whose label equals the truth (0 for no frames)."""
    return float(np.mean([p["label"] == p["truth"] for p in predictions])) if predictions else 0.0


def detection_map(classes: Sequence[str], key: str = "mAP") -> Callable[[Sequence[dict]], float]:
    """A scorer: COCO `key` ("mAP" = AP@[.5:.95], "mAP50") over detector predictions with their truth."""
    from .coco_eval import coco_metrics

    def score(predictions: Sequence[dict]) -> float:
        truth = [p["truth"] for p in predictions]
        return coco_metrics(truth, predictions, classes)[key] if predictions else 0.0

    return score
