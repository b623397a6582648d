"""Score model bundles on rendered recordings they never saw, the way the CVAT plugin would use them.

The quickstart trains on procedural recordings; this module measures it on renders of *real*
annotation streams (`fpus23 synth --annotations ...`): real geometry, real tag sequences. Every frame
goes through `load_bundle(...).predict` on its PNG, as a pre-labelling request would, and boxes are
kept at the bundle's calibrated per-class thresholds (the plugin's default request).
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from PIL import Image

from fpus23_dataset import schema
from fpus23_dataset.cvat import discover, read_stream
from fpus23_dataset.report import Report

from .bundle import load_bundle
from .coco_eval import coco_metrics

TAG_TASKS = ("orientation", "anatomy", "probe", "plane")


def _frames(render: Path, streams: Sequence[str] | None, every: int) -> list[tuple[Path, object]]:
    source = discover(render)
    chosen = sorted(source.streams) if streams is None else list(streams)
    frames = []
    for stream in chosen:
        for frame in read_stream(stream, source.streams[stream].xml_files, Report())[::every]:
            frames.append((render / "four_poses" / stream / frame.name, frame))
    return frames


def score_bundle(bundle: Path | str, render: Path | str, streams: Sequence[str] | None = None, every: int = 1) -> dict:
    """Accuracy (classifiers) or COCO metrics plus "boxes present" (detector) of one bundle on a render.

    `every` keeps one frame in `every` of each stream (consecutive frames are near-duplicates).
    Frames without the bundle's tag are skipped for classifiers; the detector sees every kept frame.
    """
    predictor = load_bundle(bundle)
    frames = _frames(Path(render), streams, every)
    task = predictor.task
    if task != "bounds":
        frames = [(path, frame) for path, frame in frames if frame.labels.get(task) is not None]
    predictions = []
    for start in range(0, len(frames), 32):
        images = [Image.open(path) for path, _ in frames[start : start + 32]]
        predictions.extend(predictor.predict(images))
    result: dict = {"bundle": str(bundle), "task": task, "arch": predictor.arch, "frames": len(frames)}
    if task != "bounds":
        right = [p["label"] == f.labels[task] for (_, f), p in zip(frames, predictions)]
        per_stream: dict[str, list[bool]] = {}
        for (_, f), ok in zip(frames, right):
            per_stream.setdefault(f.stream, []).append(ok)
        result.update(accuracy=sum(right) / max(len(right), 1), chance=1 / len(predictor.classes),
                      per_stream={s: round(sum(v) / len(v), 4) for s, v in per_stream.items()})
        return result
    classes = list(predictor.classes)
    thresholds = predictor.thresholds
    truth, kept = [], []
    for (_, f), p in zip(frames, predictions):
        truth.append({"boxes": [[b.x, b.y, b.w, b.h] for b in f.boxes], "labels": [classes.index(b.category) for b in f.boxes],
                      "width": f.width or schema.FRAME_WIDTH, "height": f.height or schema.FRAME_HEIGHT})
        keep = [k for k, (label, score) in enumerate(zip(p["labels"], p["scores"])) if score >= thresholds.get(label, 0.5)]
        kept.append({"boxes": [p["boxes"][k] for k in keep], "labels": [classes.index(p["labels"][k]) for k in keep],
                     "scores": [p["scores"][k] for k in keep]})
    all_scores = [{"boxes": p["boxes"], "labels": [classes.index(x) for x in p["labels"]], "scores": p["scores"]}
                  for p in predictions]
    boxed = [k for k, t in enumerate(truth) if t["boxes"]]
    result.update(coco_metrics(truth, all_scores, classes))
    result["boxes_present_at_default_threshold"] = sum(bool(kept[k]["boxes"]) for k in boxed) / max(len(boxed), 1)
    result["mAP50_at_default_threshold"] = coco_metrics(truth, kept, classes)["mAP50"]
    result["thresholds"] = thresholds
    return result


def score_bundles(bundles: Path | str, render: Path | str, streams: Sequence[str] | None = None, every: int = 1) -> dict:
    """`score_bundle` for every task folder in `bundles` (the quickstart's layout: `bundles/<task>`)."""
    bundles = Path(bundles)
    return {task: score_bundle(bundles / task, render, streams, every)
            for task in schema.TASKS if (bundles / task / "bundle.json").is_file()}
