"""Offline pre-labelling: a recording folder -> a "CVAT for images 1.1" XML to import with "Upload annotations"."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from fpus23_dataset import schema
from fpus23_dataset.cvat import IMAGE_SUFFIXES, Box, Frame, frame_index, write_cvat_xml

from .functions import PRELABEL, Function
from .tracks import as_tracks

TAG_TASK_BY_LABEL = {t.cvat_label: t for t in schema.TAG_TASKS}


def cvat_items_to_frame(frame: Frame, items: list[dict]) -> Frame:
    """CVAT detector items -> the frame's labels and boxes (the inverse of functions.to_cvat)."""
    for item in items:
        if item["type"] == "tag":
            task = TAG_TASK_BY_LABEL[item["label"]]
            value = next(a["value"] for a in item["attributes"] if a["name"] == task.cvat_attribute)
            frame.labels[task.key] = task.cvat_values[value]
        else:
            x0, y0, x1, y1 = item["points"]
            frame.boxes.append(Box(schema.BOX_CVAT_LABELS[item["label"]], x0, y0, x1 - x0, y1 - y0))
    return frame


# How far a tag's vote reaches, in frames either side; None: the whole recording. A recording is one
# sweep of near-identical frames: the fetus's orientation and the probe do not change within it, and
# the anatomy in view changes in runs. Plane tags mark the few frames where a plane is crossed, so
# they are left per frame. Our choice, measured in benchmarks/bench_prelabel.py.
SMOOTHING: dict[str, int | None] = {"orientation": None, "probe": None, "anatomy": 7}


def predict_recording(files: list[Path], function: Function, threshold: float | None, batch_size: int = 8,
                      progress: bool = True) -> list[tuple[Frame, dict[str, tuple[str, float]]]]:
    """Each frame with its boxes and tags, and each tag's (class, confidence) for `smooth_tags`."""
    out: list[tuple[Frame, dict[str, tuple[str, float]]]] = []
    with tqdm(total=len(files), desc="pre-label", unit="frame", disable=not progress) as bar:
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            images = []
            for path in chunk:
                with Image.open(path) as image:
                    image.load()
                    images.append(image)
            for path, image, items in zip(chunk, images, function.run(images, threshold)):
                frame = cvat_items_to_frame(Frame(path.parent.name, path.name, frame_index(path.name, len(out)),
                                                  image.width, image.height), items)
                confidence = {TAG_TASK_BY_LABEL[i["label"]].key: float(i["confidence"]) for i in items if i["type"] == "tag"}
                out.append((frame, {key: (value, confidence[key]) for key, value in frame.labels.items()}))
            bar.update(len(chunk))
    return out


def smooth_tags(tags: list[dict[str, tuple[str, float]]], windows: dict[str, int | None] = SMOOTHING) -> list[dict[str, str]]:
    """Each frame's tags after a confidence-weighted vote over its neighbours (`windows`); tags not in
    `windows` stay as predicted. A frame with no prediction of a smoothed tag gets the vote's."""
    smoothed = [{key: value for key, (value, _) in frame.items() if key not in windows} for frame in tags]
    for key, half in windows.items():
        votes = [Counter({frame[key][0]: frame[key][1]}) if key in frame else Counter() for frame in tags]
        whole = sum(votes, Counter())
        for k in range(len(tags)):
            counted = whole if half is None else sum(votes[max(0, k - half) : k + half + 1], Counter())
            if counted:
                smoothed[k][key] = counted.most_common(1)[0][0]
    return smoothed


def prelabel_recording(
    recording: Path | str, out: Path | str, functions: dict[str, Function], *, threshold: float | None = None,
    batch_size: int = 8, progress: bool = True, smooth: bool = True, tracks: bool = True,
) -> int:
    """Pre-label every image of a folder (sorted by name, as CVAT orders a task's images), tags smoothed
    over the recording unless `smooth` is off, boxes linked into CVAT tracks (`cvat_plugin.tracks`)
    unless `tracks` is off; returns the number of frames written."""
    recording = Path(recording)
    files = sorted(p for p in recording.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{recording}: no PNG or JPEG frames")
    predicted = predict_recording(files, functions[PRELABEL], threshold, batch_size, progress)
    frames = [frame for frame, _ in predicted]
    if smooth:
        for frame, labels in zip(frames, smooth_tags([tags for _, tags in predicted])):
            frame.labels = labels
    # FPUS23 recordings are named stream_<orientation>_<protocol>_<probe>: where the name says h or v,
    # every frame gets that Probe tag, over any model's (the name is what the sonographer set).
    probe = recording.name.rsplit("_", 1)[-1] if "_" in recording.name else None
    for frame in frames if probe in schema.PROBE.classes else []:
        frame.labels["probe"] = probe
    linked: list = []
    if tracks:
        linked, shapes = as_tracks([frame.boxes for frame in frames])
        for frame, boxes in zip(frames, shapes):
            frame.boxes = boxes
    write_cvat_xml(Path(out), recording.name, frames, source="auto", tracks=linked)
    return len(frames)
