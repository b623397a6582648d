"""Splits: stream-grouped train/validation/test (honest) and the paper's random per-frame protocol.

Stream-grouped rule (one assignment for all configs, so no stream is seen in training by one task
and tested by another): each recording stream goes whole into one split. Among seeded random
assignments that fill the 80/10/10 frame targets greedily, we keep the one that first misses the
fewest (config, split, class) cells that the data could fill — a class can be in all three splits
only if at least three streams hold it — and then deviates least from the targets.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Mapping, Sequence

import numpy as np

from . import schema
from .cvat import Frame
from .phantom import stable_seed
from .sources import configs_of

SEARCH_TRIALS = 3000


def _frame_classes(frame: Frame) -> list[tuple[str, str]]:
    out = [(config, frame.labels[config]) for config in schema.CLASSIFICATION_TASKS if config in frame.labels]
    out.extend(("bounds", box.category) for box in frame.boxes)
    return out


def stream_split(frames: Sequence[Frame], seed: int = 0, ratios: Mapping[str, float] = schema.STREAM_RATIOS) -> dict[str, str]:
    """Split group (stream) -> split name."""
    sizes: Counter = Counter()
    cells: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for frame in frames:
        if not configs_of(frame):
            continue
        sizes[frame.split_group] += 1
        cells[frame.split_group].update(_frame_classes(frame))
    groups = sorted(sizes)
    if not groups:
        return {}
    holders: Counter = Counter(cell for g in groups for cell in cells[g])
    splits = list(ratios)
    total = sum(sizes.values())
    rng = np.random.default_rng(stable_seed("stream-split", seed))
    best: tuple | None = None
    best_assignment: dict[str, str] = {}
    trials = SEARCH_TRIALS if len(groups) > 1 else 1
    for _ in range(trials):
        order = [groups[i] for i in rng.permutation(len(groups))]
        assignment: dict[str, str] = {}
        filled = Counter()
        # Smaller splits first so they are not starved; train takes the remainder.
        for split in sorted(splits, key=lambda s: ratios[s]):
            if split == max(splits, key=lambda s: ratios[s]):
                continue
            target = ratios[split] * total
            for g in order:
                if g in assignment:
                    continue
                if filled[split] == 0 or filled[split] + sizes[g] <= target * 1.15:
                    assignment[g] = split
                    filled[split] += sizes[g]
                if filled[split] >= target * 0.85:
                    break
        largest = max(splits, key=lambda s: ratios[s])
        for g in order:
            assignment.setdefault(g, largest)
            if assignment[g] == largest:
                filled[largest] += sizes[g]
        missing = 0
        present = defaultdict(set)
        for g, split in assignment.items():
            present[split].update(cells[g])
        for cell, count in holders.items():
            possible = min(count, len(splits))
            have = sum(cell in present[s] for s in splits)
            missing += max(0, possible - have)
        deviation = sum((filled[s] / total - ratios[s]) ** 2 for s in splits)
        score = (missing, round(deviation, 9))
        if best is None or score < best:
            best, best_assignment = score, assignment
    return best_assignment


def paper_split(image_ids: Iterable[str], config: str, seed: int = 0) -> dict[str, str]:
    """The paper's protocol: a seeded random permutation of a config's frames cut at exact ratios."""
    ids = sorted(image_ids)
    ratios = schema.PAPER_RATIOS[config]
    rng = np.random.default_rng(stable_seed("paper-split", config, seed))
    order = rng.permutation(len(ids))
    out: dict[str, str] = {}
    start = 0
    names = list(ratios)
    for k, split in enumerate(names):
        end = len(ids) if k == len(names) - 1 else start + round(ratios[split] * len(ids))
        for position in order[start:end]:
            out[ids[position]] = split
        start = end
    return out
