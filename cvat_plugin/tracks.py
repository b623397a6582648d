"""Per-frame detections of a recording -> CVAT tracks (interpolation mode).

A recording is one sweep of near-identical consecutive frames, so a fetal part's box moves a little
from frame to frame. Written as a CVAT track, the box lives on keyframes and CVAT interpolates it
linearly in between: an annotator who corrects a track at one frame corrects every frame up to the
next keyframe, where with per-frame shapes each frame is its own edit. Measured in
benchmarks/bench_prelabel.py.

Linking (our choice, documented in `link_tracks`): greedy IoU matching from one frame to the next,
per label; a track bridges up to `MAX_GAP` frames without a detection (CVAT interpolates through
them) and ends after a longer gap; runs shorter than `MIN_LENGTH` detected frames stay per-frame
shapes. Keyframes (`keyframes`): only where linear interpolation between the neighbouring keyframes
strays from a detection (IoU under `KEYFRAME_IOU`); an `outside` keyframe ends a track, as in
CVAT's own exports.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Sequence

from fpus23_dataset.cvat import Box, TrackedBox

LINK_IOU = 0.3  # a detection continues a track when it overlaps the track's latest box at least this much
MAX_GAP = 2  # frames without a detection a track bridges: detector flicker, not the part leaving the view
# (same streams and detector as KEYFRAME_IOU: no bridging 1,273 edits, 2 frames 394, 5 frames 383)
MIN_LENGTH = 2  # detected frames a track needs; a one-frame detection gains nothing from interpolation
# A detection is left to interpolation when the interpolated box overlaps it this much. 1 - IoU is a
# metric, so a detection within IoU 0.9 of the truth stays within 0.7 (an annotator's acceptance,
# cvat_plugin.edits) after simplification. Chosen on the 26 streams with boxes outside the benchmark's
# held-out four, with its simulated detector: 0.9 kept 3,430 keyframes for 5,798 boxes, 0.8 1,564,
# 0.7 927, for 395, 394 and 391 annotator edits.
KEYFRAME_IOU = 0.8


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when either has no area)."""
    w = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    h = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    inter = max(w, 0.0) * max(h, 0.0)
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def lerp(a: Box, b: Box, t: float) -> Box:
    """The box a fraction `t` of the way from `a` to `b`, corner by corner, as CVAT interpolates."""
    x0, y0 = a.x + (b.x - a.x) * t, a.y + (b.y - a.y) * t
    x1, y1 = a.x + a.w + (b.x + b.w - a.x - a.w) * t, a.y + a.h + (b.y + b.h - a.y - a.h) * t
    return Box(a.category, x0, y0, x1 - x0, y1 - y0)


@dataclass
class Track:
    """One linked object: its label and its detection on each frame it was detected in."""

    category: str
    boxes: dict[int, Box] = field(default_factory=dict)  # frame position -> detection

    @property
    def last(self) -> int:
        return max(self.boxes)


def link_tracks(frames: Sequence[Sequence[Box]], link_iou: float = LINK_IOU, max_gap: int = MAX_GAP) -> list[Track]:
    """Link each frame's detections to the tracks still open, label by label, best IoU first.

    A track stays open while it has gone at most `max_gap` frames without a detection; a detection
    that matches no open track (IoU under `link_iou` with each one's latest box) opens a new one.
    Greedy, not globally optimal: consecutive frames differ little, and the FPUS23 labels rarely
    have more than two boxes a frame.
    """
    tracks: list[Track] = []
    active: list[Track] = []
    for position, boxes in enumerate(frames):
        active = [t for t in active if position - t.last - 1 <= max_gap]
        for category in sorted({b.category for b in boxes}):
            detections = [b for b in boxes if b.category == category]
            candidates = [t for t in active if t.category == category]
            pairs = sorted(((iou(t.boxes[t.last], d), i, j) for i, t in enumerate(candidates) for j, d in enumerate(detections)),
                           reverse=True)
            taken_tracks: set[int] = set()
            taken: set[int] = set()
            for overlap, i, j in pairs:
                if overlap < link_iou:
                    break
                if i not in taken_tracks and j not in taken:
                    candidates[i].boxes[position] = detections[j]
                    taken_tracks.add(i)
                    taken.add(j)
            for j, detection in enumerate(detections):
                if j not in taken:
                    track = Track(category, {position: detection})
                    tracks.append(track)
                    active.append(track)
    return tracks


def keyframes(track: Track, frame_count: int, keyframe_iou: float = KEYFRAME_IOU) -> list[TrackedBox]:
    """The track as CVAT keyframes: the first and last detection, and a detection wherever linear
    interpolation from the previous keyframe to a later one would stray from a detection in between
    (IoU under `keyframe_iou`); then an `outside` keyframe on the frame after the last, unless the
    recording ends there (CVAT would otherwise show the box to the end of the task)."""
    frames = sorted(track.boxes)
    kept = [frames[0]]
    start = 0
    while start < len(frames) - 1:
        end = start + 1
        for candidate in range(start + 2, len(frames)):
            a, b = frames[start], frames[candidate]
            if any(iou(lerp(track.boxes[a], track.boxes[b], (frames[k] - a) / (b - a)), track.boxes[frames[k]]) < keyframe_iou
                   for k in range(start + 1, candidate)):
                break
            end = candidate
        kept.append(frames[end])
        start = end
    out = [TrackedBox(frame, track.boxes[frame]) for frame in kept]
    if frames[-1] + 1 < frame_count:
        out.append(TrackedBox(frames[-1] + 1, track.boxes[frames[-1]], outside=True))
    return out


def interpolate(shapes: Sequence[TrackedBox], frame_count: int) -> dict[int, Box]:
    """The box a CVAT track shows on each frame it shows one (cvat/apps/dataset_manager/annotation.py,
    TrackManager.get_interpolated_shapes): from a keyframe that is not outside, corners move linearly
    towards the next keyframe (outside or not) and stay put after the last one; after an outside
    keyframe nothing shows until the next keyframe. Only keyframes count, as in CVAT's importer."""
    keys = sorted((s for s in shapes if s.keyframe), key=lambda s: s.frame)
    return {frame: box for frame in range(frame_count) if (box := box_at(keys, frame)) is not None}


def box_at(shapes: Sequence[TrackedBox], frame: int) -> Box | None:
    """The box a track shows on one frame, or None (see `interpolate`); `shapes`: keyframes sorted by frame."""
    index = bisect_right([s.frame for s in shapes], frame) - 1
    if index < 0 or shapes[index].outside:
        return None
    key = shapes[index]
    if index + 1 == len(shapes):
        return key.box
    following = shapes[index + 1]
    return lerp(key.box, following.box, (frame - key.frame) / (following.frame - key.frame))


def as_tracks(frames: Sequence[Sequence[Box]], link_iou: float = LINK_IOU, max_gap: int = MAX_GAP,
              min_length: int = MIN_LENGTH, keyframe_iou: float = KEYFRAME_IOU) -> tuple[list[list[TrackedBox]], list[list[Box]]]:
    """Each frame's detections -> (tracks as CVAT keyframes, the boxes left as per-frame shapes)."""
    tracks: list[list[TrackedBox]] = []
    shapes: list[list[Box]] = [[] for _ in frames]
    for track in link_tracks(frames, link_iou, max_gap):
        if len(track.boxes) < min_length:
            for frame, box in track.boxes.items():
                shapes[frame].append(box)
        else:
            tracks.append(keyframes(track, len(frames), keyframe_iou))
    tracks.sort(key=lambda t: t[0].frame)
    return tracks, shapes
