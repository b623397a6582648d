"""Boxes as CVAT tracks: linking, keyframes, the written XML, the prelabel CLI; and the annotator-edit count."""
from __future__ import annotations

from pathlib import Path

import pytest
from lxml import etree
from PIL import Image

from cvat_plugin.edits import count_edits
from cvat_plugin.tracks import KEYFRAME_IOU, MAX_GAP, as_tracks, interpolate, iou, link_tracks
from fpus23_dataset.cvat import Box, Frame, TrackedBox, read_stream, write_cvat_xml
from fpus23_dataset.report import Report


def _moving(frames: int, category: str = "head", turn: int | None = None) -> list[list[Box]]:
    """One box a frame, moving 3 px right and 1 px down a frame; after `turn`, 3 px left instead."""
    out = []
    for f in range(frames):
        dx = 3 * f if turn is None or f <= turn else 3 * turn - 3 * (f - turn)
        out.append([Box(category, 100.0 + dx, 80.0 + f, 90.0, 70.0)])
    return out


def _check_interpolation(track: list[TrackedBox], detections: list[list[Box]], frame_count: int) -> dict[int, Box]:
    shown = interpolate(track, frame_count)
    for frame, boxes in enumerate(detections):
        for box in boxes:
            assert iou(shown[frame], box) >= KEYFRAME_IOU - 1e-9, frame
    return shown


def test_a_steadily_moving_box_is_one_track_with_two_keyframes_and_an_outside_end():
    detections = _moving(40) + [[] for _ in range(5)]
    tracks, shapes = as_tracks(detections)
    assert len(tracks) == 1 and not any(shapes)
    (track,) = tracks
    assert [(k.frame, k.outside) for k in track] == [(0, False), (39, False), (40, True)]
    shown = _check_interpolation(track, detections, 45)
    assert sorted(shown) == list(range(40))  # hidden from the outside keyframe on
    assert shown[20] == pytest.approx(detections[20][0])


def test_a_turn_gets_a_keyframe_and_interpolation_stays_within_tolerance():
    detections = _moving(60, turn=30)
    (track,), _ = as_tracks(detections)
    frames = [k.frame for k in track]
    assert frames[0] == 0 and frames[-1] == 59 and 3 <= len(frames) <= 6  # the last frame ends the recording: no outside
    assert any(25 <= f <= 35 for f in frames)
    _check_interpolation(track, detections, 60)


def test_a_jittery_detector_still_gives_far_fewer_keyframes_than_frames():
    import random

    rng = random.Random(0)
    detections = [[Box(b.category, b.x + rng.uniform(-1, 1), b.y + rng.uniform(-1, 1), b.w, b.h) for b in boxes] for boxes in _moving(80)]
    (track,), _ = as_tracks(detections)
    assert len(track) < 80 / 4
    _check_interpolation(track, detections, 80)


def test_a_short_gap_is_bridged_and_a_long_one_splits_the_track():
    short = _moving(30)
    for f in range(10, 10 + MAX_GAP):
        short[f] = []
    (track,), _ = as_tracks(short)
    assert sorted(interpolate(track, 30)) == list(range(30))  # CVAT shows the box across the gap
    long = _moving(30)
    for f in range(10, 11 + MAX_GAP):
        long[f] = []
    first, second = as_tracks(long)[0]
    assert (first[-1].frame, first[-1].outside) == (10, True) and second[0].frame == 11 + MAX_GAP


def test_labels_and_distant_boxes_are_never_linked_and_one_frame_runs_stay_shapes():
    frames = [[Box("head", 10, 10, 50, 50), Box("arms", 10, 10, 50, 50)] for _ in range(5)]
    frames[2].append(Box("head", 300, 200, 40, 40))  # far from the head track: a one-frame run
    tracks, shapes = as_tracks(frames)
    assert sorted(t[0].box.category for t in tracks) == ["arms", "head"]
    assert shapes[2] == [Box("head", 300, 200, 40, 40)] and sum(map(len, shapes)) == 1
    assert len(link_tracks(frames)) == 3


def test_written_tracks_are_cvat_tracks_and_interpolate_back_to_the_detections(tmp_path):
    detections = _moving(30, turn=15) + [[] for _ in range(3)]
    tracks, shapes = as_tracks(detections)
    frames = [Frame("rec", f"frame_{k:06d}.png", k, 672, 389, labels={"orientation": "hdvb"}, boxes=shapes[k]) for k in range(33)]
    out = tmp_path / "annotations.xml"
    write_cvat_xml(out, "rec", frames, source="auto", tracks=tracks)
    root = etree.parse(str(out)).getroot()
    assert [i.get("id") for i in root.iterfind("image")] == [str(k) for k in range(33)]
    (node,) = root.iterfind("track")
    assert (node.get("id"), node.get("label"), node.get("source")) == ("0", "head", "auto")
    boxes = list(node)
    # what CVAT's importer (cvat/apps/dataset_manager/formats/cvat.py, load_anno) reads of a track's box
    assert all(list(b.attrib) == ["frame", "keyframe", "outside", "occluded", "xtl", "ytl", "xbr", "ybr", "z_order"] for b in boxes)
    assert boxes[-1].get("outside") == "1" and boxes[-1].get("frame") == "30"
    read = [TrackedBox(int(b.get("frame")), Box("head", float(b.get("xtl")), float(b.get("ytl")),
                                                  float(b.get("xbr")) - float(b.get("xtl")), float(b.get("ybr")) - float(b.get("ytl"))),
                       b.get("keyframe") == "1", b.get("outside") == "1") for b in boxes]
    _check_interpolation(read, detections, 33)
    # the project's reader reads images and tags of such a file, and does not read tracks
    report = Report()
    reread = read_stream("rec", [out], report)
    assert report.counts == {} and [f.labels for f in reread] == [{"orientation": "hdvb"}] * 33
    assert not any(f.boxes for f in reread)


class _FakeDetector:
    """A `Function.run` that sees a head moving 4 px a frame and, on frame 5 only, a stray arm."""

    def __init__(self) -> None:
        self.frame = 0

    def __call__(self, images: list, threshold: float | None) -> list[list[dict]]:
        out = []
        for _ in images:
            x = 20.0 + 4 * self.frame
            items = [{"type": "rectangle", "label": "head", "points": [x, 30.0, x + 60, 90.0], "confidence": 0.9}]
            if self.frame == 5:
                items.append({"type": "rectangle", "label": "arm", "points": [5.0, 5.0, 25.0, 25.0], "confidence": 0.4})
            out.append(items)
            self.frame += 1
        return out


@pytest.fixture
def recording(tmp_path) -> Path:
    folder = tmp_path / "stream_hdvb_aroundhead_h"
    folder.mkdir()
    for k in range(12):
        Image.new("L", (200, 120)).save(folder / f"frame_{k:06d}.png")
    return folder


@pytest.mark.parametrize("shapes", [False, True])
def test_prelabel_cli_writes_tracks_by_default_and_shapes_on_request(recording, tmp_path, monkeypatch, shapes):
    from cvat_plugin import functions
    from cvat_plugin.cli import main as cvat_main

    fake = functions.Function(functions.PRELABEL, "fake", ["bounds"], _FakeDetector())
    monkeypatch.setattr(functions, "load_functions", lambda models, device="cpu": {functions.PRELABEL: fake})
    out = tmp_path / "out.xml"
    assert cvat_main(["prelabel", str(recording), "--out", str(out), "--models", str(tmp_path), "--quiet"]
                     + (["--shapes"] if shapes else [])) == 0
    root = etree.parse(str(out)).getroot()
    image_boxes = [(i.get("id"), b.get("label")) for i in root.iterfind("image") for b in i.iterfind("box")]
    if shapes:
        assert root.find("track") is None and len(image_boxes) == 13
        return
    (track,) = root.iterfind("track")
    assert track.get("label") == "head" and [b.get("frame") for b in track] == ["0", "11"]  # steady motion: two keyframes
    assert image_boxes == [("5", "arm")]  # the one-frame arm stays a shape


def test_the_annotator_count_tells_shapes_from_tracks():
    truth = _moving(40)
    # a detector 20 px off on every frame: every shape is moved. The track (keyframes 0 and 39) is moved at
    # frame 0; interpolating from there towards the detection at 39 drifts past IoU 0.7 at frame 31,
    # which is moved; then 38 and 39: the annotator fixes a track where it first goes wrong
    off = [[Box(b.category, b.x + 20, b.y, b.w, b.h) for b in boxes] for boxes in truth]
    tracks, leftover = as_tracks(off)
    assert count_edits(truth, shapes=off, draw_tracks=False).as_dict()["moved"] == 40
    track_edits = count_edits(truth, tracks, leftover)
    assert track_edits.total == track_edits.moved == 4
    # nothing pre-labelled: one shape per true box, or one track, keyframed each time it drifts off (the
    # drawn track stands still after its last keyframe, the box moves ~3 px a frame)
    assert count_edits(truth, draw_tracks=False).total == 40
    scratch = count_edits(truth)
    assert scratch.created == 1 and 3 < scratch.moved < 40 / 3 and scratch.total == scratch.created + scratch.moved
    # a spurious track is deleted whole; a track the truth leaves at frame 20 is hidden there, and again at
    # its next keyframe (39), from where CVAT shows it again
    spurious = as_tracks([[Box("arms", 400, 300, 30, 30)] for _ in range(10)])[0]
    assert count_edits([[] for _ in range(10)], spurious).as_dict()["deleted"] == 1
    leaving = truth[:20] + [[] for _ in range(20)]
    assert count_edits(leaving, tracks, leftover).as_dict() == {"edits": 3, "created": 0, "moved": 1, "deleted": 0,
                                                                "hidden": 2, "passes": 2}
