"""What stream-aware pre-labelling buys, on renders of real annotation streams the models never saw:
per-frame against smoothed tag accuracy, and the annotator edits needed to reach the ground-truth
boxes with the boxes pre-labelled as per-frame shapes or as CVAT tracks (cvat_plugin.edits says what
an edit is).

    .venv/bin/python benchmarks/bench_prelabel.py --models bundles/ [--frames 120] [--streams S ...] [--work /tmp/fpus23-prelabel]

The renders follow the streams' real annotation geometry and tags (`fpus23 synth --annotations`);
the first `--frames` frames of each stream are pre-labelled (model outputs are cached in
<work>/predictions, per stream, models folder and frame count). A missing tag counts as wrong.
Besides the models' boxes, a simulated detector (the ground truth with seeded noise, dropouts and
spurious boxes; no model) shows what tracks buy when detections are close to right.
Results: benchmarks/results/prelabel.json and prelabel.md.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("FPUS23_SHARED", REPO.parent / "shared")) / "fpus23-annotations"
RESULTS = REPO / "benchmarks" / "results"
HELD_OUT = ["stream_hdvb_aroundabd_h", "stream_hdvf_aroundarms_h", "stream_huvb_aroundhead_v", "stream_huvf_aroundlegs_v"]
# The simulated detector: corner noise (pixels, s.d.), share of boxes missed, spurious boxes per frame.
NOISE_PX, MISS_RATE, SPURIOUS_RATE = 3.0, 0.1, 0.05


def predictions(stream: str, files: list[Path], models: Path, cache: Path) -> tuple[list[tuple[dict, dict]], float]:
    """Each frame's boxes and tags as the pre-labeller gives them, (frame record, {task: (class,
    confidence)}), and the seconds inference took; cached, since inference is most of the run."""
    from cvat_plugin.functions import PRELABEL, load_functions
    from cvat_plugin.prelabel import predict_recording

    path = cache / f"{stream}.json"
    key = {"models": str(models.resolve()), "frames": [f.name for f in files]}
    if not (path.is_file() and (cached := json.loads(path.read_text())).get("key") == key):
        started = time.perf_counter()
        predicted = predict_recording(files, load_functions(models)[PRELABEL], None)
        rows = [{"name": f.name, "boxes": [[b.category, b.x, b.y, b.w, b.h] for b in f.boxes], "tags": {k: list(v) for k, v in t.items()}}
                for f, t in predicted]
        cached = {"key": key, "seconds": round(time.perf_counter() - started, 1), "rows": rows}
        cache.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(cached))
    return [(row, {k: tuple(v) for k, v in row["tags"].items()}) for row in cached["rows"]], cached["seconds"]


def simulated_detector(truth: list[list], seed: int) -> list[list]:
    """The ground truth as a good detector might see it: every corner jittered, some boxes missed,
    some spurious boxes (a copy of a real box of the frame shifted by half its size)."""
    from fpus23_dataset.cvat import Box

    rng = random.Random(seed)
    out = []
    for boxes in truth:
        seen = [Box(b.category, b.x + rng.gauss(0, NOISE_PX), b.y + rng.gauss(0, NOISE_PX), max(b.w + rng.gauss(0, NOISE_PX), 1.0),
                    max(b.h + rng.gauss(0, NOISE_PX), 1.0)) for b in boxes if rng.random() >= MISS_RATE]
        if boxes and rng.random() < SPURIOUS_RATE:
            b = rng.choice(boxes)
            seen.append(Box(b.category, b.x + b.w / 2, b.y + b.h / 2, b.w, b.h))
        out.append(seen)
    return out


def edit_row(stream: str, detector: str, truth: list[list], detected: list[list], accept_iou: float) -> dict:
    """Edits to reach `truth` from `detected` as shapes and as tracks, and from nothing."""
    from cvat_plugin.edits import count_edits
    from cvat_plugin.tracks import as_tracks

    tracks, leftover = as_tracks(detected)
    row = {"stream": stream, "detector": detector, "frames": len(truth), "truth_boxes": sum(map(len, truth)),
           "detections": sum(map(len, detected)), "track_count": len(tracks), "keyframes": sum(1 for t in tracks for k in t if not k.outside),
           "left_as_shapes": sum(map(len, leftover)), "edits": {}}
    for name, edits in (("shapes", count_edits(truth, shapes=detected, draw_tracks=False, accept_iou=accept_iou)),
                        ("tracks", count_edits(truth, tracks, leftover, accept_iou=accept_iou)),
                        ("scratch_shapes", count_edits(truth, draw_tracks=False, accept_iou=accept_iou)),
                        ("scratch_tracks", count_edits(truth, accept_iou=accept_iou))):
        row["edits"][name] = edits.as_dict()
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=Path, required=True, help="bundles folder (e.g. from fpus23-baselines quickstart)")
    parser.add_argument("--streams", nargs="+", default=HELD_OUT)
    parser.add_argument("--frames", type=int, default=120, help="first frames of each stream to pre-label (0: all)")
    parser.add_argument("--accept-iou", type=float, default=None, help="IoU at which the annotator leaves a box (default: cvat_plugin.edits.ACCEPT_IOU)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/fpus23-prelabel"))
    args = parser.parse_args()
    if not args.models.is_dir():
        parser.error(f"{args.models}: no such models folder")
    if missing := [s for s in args.streams if not (SHARED / s).is_dir()]:
        parser.error(f"no such stream in {SHARED}: {', '.join(missing)}")

    from cvat_plugin.edits import ACCEPT_IOU
    from cvat_plugin.prelabel import SMOOTHING, smooth_tags
    from cvat_plugin.tracks import KEYFRAME_IOU, LINK_IOU, MAX_GAP, MIN_LENGTH
    from fpus23_dataset.cvat import Box, discover, read_stream
    from fpus23_dataset.report import Report
    from fpus23_dataset.synth import render_annotations

    accept_iou = ACCEPT_IOU if args.accept_iou is None else args.accept_iou
    started = time.perf_counter()
    rendered = args.work / "render"
    if not rendered.is_dir():
        render_annotations(SHARED, rendered, streams=args.streams)
    source = discover(rendered)
    tag_rows, edit_rows, inference = [], [], 0.0
    for number, stream in enumerate(args.streams):
        by_name = {f.name: f for f in read_stream(stream, source.streams[stream].xml_files, Report())}
        files = sorted((rendered / "four_poses" / stream).glob("*.png"))[: args.frames or None]
        predicted, seconds = predictions(stream, files, args.models, args.work / "predictions")
        inference += seconds
        per_frame = [{key: value for key, (value, _) in tags.items()} for _, tags in predicted]
        smoothed = smooth_tags([tags for _, tags in predicted])
        for task in ("orientation", "anatomy"):
            known = [k for k, (row, _) in enumerate(predicted) if task in by_name[row["name"]].labels]
            if not known:
                continue
            right = lambda labels: sum(labels[k].get(task) == by_name[predicted[k][0]["name"]].labels[task] for k in known) / len(known)  # noqa: E731
            tag_rows.append({"stream": stream, "task": task, "frames": len(known), "window": SMOOTHING[task],
                             "per_frame_accuracy": round(right(per_frame), 4), "smoothed_accuracy": round(right(smoothed), 4)})
            print(tag_rows[-1], flush=True)
        truth = [by_name[row["name"]].boxes for row, _ in predicted]
        detected = [[Box(c, x, y, w, h) for c, x, y, w, h in row["boxes"]] for row, _ in predicted]
        for detector, boxes in (("models", detected), ("simulated", simulated_detector(truth, seed=number))):
            edit_rows.append(edit_row(stream, detector, truth, boxes, accept_iou))
            print(edit_rows[-1], flush=True)

    totals = []
    for detector in ("models", "simulated"):
        rows = [r for r in edit_rows if r["detector"] == detector]
        total = {"stream": "all", "detector": detector}
        for key in ("frames", "truth_boxes", "detections", "track_count", "keyframes", "left_as_shapes"):
            total[key] = sum(r[key] for r in rows)
        total["edits"] = {mode: {k: sum(r["edits"][mode][k] for r in rows) for k in ("edits", "created", "moved", "deleted", "hidden")}
                          for mode in ("shapes", "tracks", "scratch_shapes", "scratch_tracks")}
        totals.append(total)
    settings = {"inference_seconds": round(inference), "frames_per_stream": args.frames or "all", "accept_iou": accept_iou, "link_iou": LINK_IOU, "max_gap": MAX_GAP,
                "min_length": MIN_LENGTH, "keyframe_iou": KEYFRAME_IOU,
                "simulated_detector": {"noise_px": NOISE_PX, "miss_rate": MISS_RATE, "spurious_rate": SPURIOUS_RATE}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "prelabel.json").write_text(json.dumps({"models": str(args.models), "settings": settings, "tags": tag_rows,
                                                        "edits": edit_rows + totals}, indent=2) + "\n")
    lines = ["# Offline pre-labelling on renders of real annotation streams the models never saw", "",
             f"Models: `{args.models}` (quickstart bundles: demo quality). First {args.frames or 'all'} frames of each stream. "
             f"Model inference {inference:.0f} s on 2 shared cores (cached in `<work>/predictions` and reused by reruns); "
             f"this run {time.perf_counter() - started:.0f} s.", "",
             "## Tags: per frame against smoothed", "", "A missing tag counts as wrong.", "",
             "| stream | task | frames | vote window | per-frame accuracy | smoothed accuracy |", "|---|---|---|---|---|---|"]
    for r in tag_rows:
        window = "whole recording" if r["window"] is None else f"±{r['window']} frames"
        lines.append(f"| {r['stream']} | {r['task']} | {r['frames']} | {window} | {r['per_frame_accuracy']:.3f} | {r['smoothed_accuracy']:.3f} |")
    lines += ["", "## Boxes: annotator edits to reach the ground truth, shapes against tracks", "",
              f"An edit: drawing, moving/resizing, deleting or hiding (outside) one box, in a simulated CVAT annotator "
              f"(`cvat_plugin/edits.py`): a box overlapping the truth by IoU ≥ {accept_iou} is left as is; a track corrected "
              "on one frame gets a keyframe there and CVAT's interpolation carries the correction to its next keyframe; "
              "the annotator re-walks the recording until a pass needs no edit. *Scratch*: no pre-label (shapes: one "
              "edit per true box; tracks: drawing tracks and keyframing them). Tracks: linked at IoU ≥ "
              f"{LINK_IOU}, gaps up to {MAX_GAP} frames bridged, runs under {MIN_LENGTH} frames left as shapes, keyframes "
              f"where interpolation strays under IoU {KEYFRAME_IOU} from a detection (`cvat_plugin/tracks.py`).", "",
              f"*models*: the bundles' boxes. *simulated*: no model, the ground truth with {NOISE_PX:g} px corner noise, "
              f"{MISS_RATE:.0%} of boxes missed and a spurious box on {SPURIOUS_RATE:.0%} of frames (seeded): what tracks "
              "buy with a detector that is close to right.", "",
              "| stream | detector | frames | true boxes | detections | tracks (keyframes) | edits, shapes | edits, tracks "
              "| scratch, shapes | scratch, tracks |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in edit_rows + totals:
        e = {mode: counts["edits"] for mode, counts in r["edits"].items()}
        lines.append(f"| {r['stream']} | {r['detector']} | {r['frames']} | {r['truth_boxes']} | {r['detections']} | "
                     f"{r['track_count']} ({r['keyframes']}) | {e['shapes']} | {e['tracks']} | {e['scratch_shapes']} | {e['scratch_tracks']} |")
    (RESULTS / "prelabel.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
