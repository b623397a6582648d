"""Splits: stream-grouped train/validation/test (honest) and the paper's random per-frame protocol.

Stream-grouped rule (one assignment for all configs, so no stream is seen in training by one task
and tested by another): each recording stream goes whole into one split. Among seeded random
assignments near the 80/10/10 frame targets, we keep the one that first misses the
fewest (config, split, class) cells that the data could fill — a class can be in all three splits
only if at least three streams hold it — and then deviates least from the targets. Each trial fills
the small splits in a random stream order, preferring streams that bring a class the split lacks, up
to 2.5x the split's target.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable, Mapping, Sequence

import numpy as np

from .. import schema
from ..cvat import Frame
from ..seeding import stable_seed

SEARCH_TRIALS = 400
MAX_OVERSHOOT = 2.5  # a small split may grow to 2.5x its target to hold every class


def stream_split(frames: Sequence[Frame], seed: int = 0, ratios: Mapping[str, float] = schema.STREAM_RATIOS) -> dict[str, str]:
    """Split group (stream) -> split name."""
    sizes: Counter = Counter()
    cells: dict[str, set[tuple[str, str]]] = defaultdict(set)
    tasks = tuple(schema.CLASSIFICATION_TASKS)
    for frame in frames:  # the (config, class) cells of each group, from the frames that have a row
        if not frame.configs:
            continue
        labels, boxes = frame.labels, frame.boxes
        group = frame.split_group
        sizes[group] += 1
        held_here = cells[group]
        held_here.update([(config, labels[config]) for config in tasks if config in labels])
        if boxes:
            held_here.update([("bounds", box.category) for box in boxes])
    groups = sorted(sizes)
    if not groups:
        return {}
    holders: Counter = Counter(cell for g in groups for cell in cells[g])
    possible_cells = {cell for cell, count in holders.items() if count >= len(ratios)}
    splits = list(ratios)
    total = sum(sizes.values())
    # Groups are indices and cells bits, so each of the few hundred trials is cheap.
    bit = {cell: 1 << k for k, cell in enumerate(sorted(holders))}
    size = [sizes[g] for g in groups]
    held = [sum(bit[c] for c in cells[g]) for g in groups]
    useful = [sum(bit[c] for c in cells[g] & possible_cells) for g in groups]  # what a stream can bring a split that lacks it
    wanted = [(bit[cell], min(count, len(splits))) for cell, count in holders.items()]
    rng = np.random.default_rng(stable_seed("stream-split", seed))
    best: tuple | None = None
    best_assignment: list[str] = []
    trials = SEARCH_TRIALS if len(groups) > 1 else 1
    largest = max(splits, key=lambda s: ratios[s])
    small = [s for s in sorted(splits, key=lambda s: ratios[s]) if s != largest]  # filled first; train takes the rest
    for _ in range(trials):
        remaining = rng.permutation(len(groups)).tolist()  # groups not yet assigned, in this trial's order
        assignment = [largest] * len(groups)
        filled = dict.fromkeys(splits, 0)
        present = dict.fromkeys(splits, 0)  # split -> bits of the cells it holds
        for split in small:
            target, cap = ratios[split] * total, ratios[split] * total * MAX_OVERSHOOT
            covered = 0
            while len(remaining) > 1:  # the largest split (train) always keeps a stream
                # An empty split takes any stream; then only what fits under the cap.
                base = filled[split]
                free = [g for g in remaining if base + size[g] <= cap] if base else remaining
                if not free:
                    break
                # Prefer streams that bring classes this split lacks (the first of the best); then plain filling up to the target.
                lacking = ~covered
                gains = [(useful[g] & lacking).bit_count() for g in free]
                gain = max(gains)
                if gain == 0:
                    if base >= target * 0.9:
                        break
                    pick = free[0]
                else:
                    pick = free[gains.index(gain)]
                remaining.remove(pick)
                assignment[pick] = split
                filled[split] += size[pick]
                covered |= held[pick]
            present[split] = covered
        for g in remaining:
            filled[largest] += size[g]
            present[largest] |= held[g]
        missing = sum(max(0, want - sum(1 for s in splits if present[s] & cell)) for cell, want in wanted)
        deviation = sum((filled[s] / total - ratios[s]) ** 2 for s in splits)
        score = (missing, round(deviation, 9))
        if best is None or score < best:
            best, best_assignment = score, assignment
    return dict(zip(groups, best_assignment))


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
