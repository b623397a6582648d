"""Offline pre-labelling: a recording folder -> a "CVAT for images 1.1" XML to import with "Upload annotations"."""
from __future__ import annotations

from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from fpus23_dataset import schema
from fpus23_dataset.cvat import Box, Frame, frame_index, write_cvat_xml

from .functions import PRELABEL, Function

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
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


def prelabel_recording(
    recording: Path | str, out: Path | str, functions: dict[str, Function], *, threshold: float | None = None,
    batch_size: int = 8, progress: bool = True,
) -> int:
    """Pre-label every PNG/JPEG of a folder (sorted by name); returns the number of frames written."""
    recording = Path(recording)
    files = sorted(p for p in recording.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FileNotFoundError(f"{recording}: no PNG or JPEG frames")
    function = functions[PRELABEL]
    # FPUS23 recordings are named stream_<orientation>_<protocol>_<probe>: where the name says h or v,
    # every frame gets that Probe tag; elsewhere a probe bundle's prediction, if there is one.
    probe = recording.name.rsplit("_", 1)[-1] if "_" in recording.name else None
    probe = probe if probe in schema.PROBE.classes else None
    frames = []
    with tqdm(total=len(files), desc="pre-label", unit="frame", disable=not progress) as bar:
        for start in range(0, len(files), batch_size):
            chunk = files[start : start + batch_size]
            images = []
            for path in chunk:
                with Image.open(path) as image:
                    image.load()
                    images.append(image)
            for path, image, items in zip(chunk, images, function.run(images, threshold)):
                frame = Frame(recording.name, path.name, frame_index(path.name, len(frames)), image.width, image.height)
                frames.append(cvat_items_to_frame(frame, items))
                if probe is not None:  # the recording's name is what the sonographer set: it wins over a model
                    frames[-1].labels["probe"] = probe
            bar.update(len(chunk))
    write_cvat_xml(Path(out), recording.name, frames, source="auto")
    return len(frames)
