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

from . import schema
from .cvat import Frame
from .seeding import stable_seed
from .sources import configs_of

SEARCH_TRIALS = 400
MAX_OVERSHOOT = 2.5  # a small split may grow to 2.5x its target to hold every class


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
    possible_cells = {cell for cell, count in holders.items() if count >= len(ratios)}
    splits = list(ratios)
    total = sum(sizes.values())
    # Cells as bits: the search below runs a few hundred trials, and set arithmetic was most of it.
    bit = {cell: 1 << k for k, cell in enumerate(sorted(holders))}
    held = {g: sum(bit[c] for c in cells[g]) for g in groups}
    useful = {g: sum(bit[c] for c in cells[g] & possible_cells) for g in groups}  # what a stream can bring a split that lacks it
    wanted = [(bit[cell], min(count, len(splits))) for cell, count in holders.items()]
    rng = np.random.default_rng(stable_seed("stream-split", seed))
    best: tuple | None = None
    best_assignment: dict[str, str] = {}
    trials = SEARCH_TRIALS if len(groups) > 1 else 1
    largest = max(splits, key=lambda s: ratios[s])
    for _ in range(trials):
        order = [groups[i] for i in rng.permutation(len(groups))]
        assignment: dict[str, str] = {}
        filled: Counter = Counter()
        present: Counter = Counter()  # split -> bits of the cells it holds
        for split in sorted(splits, key=lambda s: ratios[s]):  # smaller splits first; train takes the rest
            if split == largest:
                continue
            target, cap = ratios[split] * total, ratios[split] * total * MAX_OVERSHOOT
            covered = 0
            while True:
                # An empty split takes any stream; then only what fits under the cap.
                base = filled[split]
                free = [g for g in order if g not in assignment and (not base or base + sizes[g] <= cap)]
                if not free:
                    break
                # Prefer streams that bring classes this split lacks (the first of the best); then plain filling up to the target.
                gain, pick = -1, free[0]
                lacking = ~covered
                for g in free:
                    brings = (useful[g] & lacking).bit_count()
                    if brings > gain:
                        gain, pick = brings, g
                if gain == 0:
                    if filled[split] >= target * 0.9:
                        break
                    pick = free[0]
                assignment[pick] = split
                filled[split] += sizes[pick]
                covered |= held[pick]
            present[split] = covered
        for g in order:
            if g not in assignment:
                assignment[g] = largest
                filled[largest] += sizes[g]
                present[largest] |= held[g]
        missing = sum(max(0, want - sum(1 for s in splits if present[s] & cell)) for cell, want in wanted)
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
