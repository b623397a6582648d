"""What a pre-label costs an annotator: the edits a simulated CVAT annotator makes to reach the
ground-truth boxes, with the boxes pre-labelled as per-frame shapes or as tracks.

The annotator (our model of one, used by benchmarks/bench_prelabel.py) walks the frames in order and,
label by label, compares the boxes CVAT shows on the frame with the ground truth:

- a shown box that overlaps a ground-truth box by at least `ACCEPT_IOU` is accepted (no edit);
- a shown box paired with a ground-truth box it overlaps less is moved/resized onto it: one edit.
  On a shape that fixes this frame; on a track it makes this frame a keyframe, so the correction
  carries through CVAT's interpolation up to the track's next keyframe (and changes the frames
  since its previous keyframe);
- a ground-truth box left unpaired is drawn: one edit. With shapes it is a shape on this frame; with
  tracks it is a new track, which CVAT shows from here to the end of the recording;
- a shown box left unpaired is removed: one edit. A shape, or a track that has never been accepted
  or corrected on an earlier frame, is deleted whole; a track that has is switched "outside" here
  (hidden up to its next keyframe, as CVAT does).

Because a keyframe added on a later frame changes earlier interpolated frames, the annotator then
re-walks the recording until a whole pass needs no edit; every edit counts. Pairs are formed
greedily, best IoU first, accepted pairs before moved ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from fpus23_dataset.cvat import Box, TrackedBox

from .tracks import box_at, iou

ACCEPT_IOU = 0.7  # an annotator leaves a box that overlaps the truth this much; the usual strict detection match
MAX_PASSES = 50


@dataclass
class _Shown:
    """One annotation object as CVAT holds it: keyframes sorted by frame (a shape is a one-frame track)."""

    keys: list[TrackedBox]
    accepted: bool = False

    def set_key(self, key: TrackedBox) -> None:
        self.keys = sorted([k for k in self.keys if k.frame != key.frame] + [key], key=lambda k: k.frame)


@dataclass
class Edits:
    """Edits by kind; `passes`: walks over the recording until one needed none."""

    created: int = 0
    moved: int = 0
    deleted: int = 0
    hidden: int = 0
    passes: int = 0

    @property
    def total(self) -> int:
        return self.created + self.moved + self.deleted + self.hidden

    def as_dict(self) -> dict[str, int]:
        return {"edits": self.total, "created": self.created, "moved": self.moved, "deleted": self.deleted,
                "hidden": self.hidden, "passes": self.passes}


def _one_frame(frame: int, box: Box) -> list[TrackedBox]:
    return [TrackedBox(frame, box), TrackedBox(frame + 1, box, outside=True)]


def _pairs(shown: list[tuple[int, Box]], truth: list[Box], minimum: float) -> list[tuple[int, int]]:
    """Greedy pairs (index in `shown`, index in `truth`), best IoU first, IoU at least `minimum`."""
    ranked = sorted(((iou(b, t), i, j) for i, (_, b) in enumerate(shown) for j, t in enumerate(truth)), key=lambda r: -r[0])
    pairs: list[tuple[int, int]] = []
    used_i: set[int] = set()
    used_j: set[int] = set()
    for overlap, i, j in ranked:
        if overlap >= minimum and i not in used_i and j not in used_j:
            pairs.append((i, j))
            used_i.add(i)
            used_j.add(j)
    return pairs


def count_edits(truth: Sequence[Sequence[Box]], tracks: Sequence[Sequence[TrackedBox]] = (),
                shapes: Sequence[Sequence[Box]] = (), *, draw_tracks: bool = True,
                accept_iou: float = ACCEPT_IOU) -> Edits:
    """Edits to turn the pre-label (`tracks`, and `shapes` per frame) into `truth` (boxes per frame).

    `draw_tracks`: whether the annotator draws a missing box as a track (interpolation mode) or as a
    shape on the one frame. With no pre-label at all this gives the cost of annotating from scratch.
    """
    frame_count = len(truth)
    objects = [_Shown(sorted(t, key=lambda k: k.frame)) for t in tracks]
    objects += [_Shown(_one_frame(f, box)) for f, boxes in enumerate(shapes) for box in boxes]
    edits = Edits()
    for _ in range(MAX_PASSES):
        edits.passes += 1
        before = edits.total
        for frame in range(frame_count):
            categories = {b.category for b in truth[frame]}
            shown_all = [(k, b) for k, o in enumerate(objects) if (b := box_at(o.keys, frame)) is not None]
            categories |= {b.category for _, b in shown_all}
            for category in sorted(categories):
                shown = [(k, b) for k, b in shown_all if b.category == category]
                wanted = [b for b in truth[frame] if b.category == category]
                good = _pairs(shown, wanted, accept_iou)
                rest_shown = [s for i, s in enumerate(shown) if i not in {i for i, _ in good}]
                rest_wanted = [t for j, t in enumerate(wanted) if j not in {j for _, j in good}]
                for i, _ in good:
                    objects[shown[i][0]].accepted = True
                moved = _pairs(rest_shown, rest_wanted, 0.0)
                for i, j in moved:
                    target = objects[rest_shown[i][0]]
                    target.set_key(TrackedBox(frame, rest_wanted[j]))
                    target.accepted = True
                    edits.moved += 1
                for j, box in enumerate(rest_wanted):
                    if j not in {j for _, j in moved}:
                        objects.append(_Shown([TrackedBox(frame, box)] if draw_tracks else _one_frame(frame, box), accepted=True))
                        edits.created += 1
                for i, (k, box) in enumerate(rest_shown):
                    if i in {i for i, _ in moved}:
                        continue
                    if objects[k].accepted:
                        objects[k].set_key(TrackedBox(frame, box, outside=True))
                        edits.hidden += 1
                    else:
                        objects[k].keys = []
                        edits.deleted += 1
        if edits.total == before:
            return edits
    raise RuntimeError(f"annotator simulation did not settle in {MAX_PASSES} passes")
