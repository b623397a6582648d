"""Check a source without building: exports, image files, boxes; everything counted and reported."""
from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

from PIL import Image
from tqdm.auto import tqdm

from .. import schema
from ..cvat import Frame, Source, clip_boxes, discover, read_source
from ..report import Report
from .images import CorruptImage, ImageInfo, read_checked

CHUNK = 64  # images per task: a task must outweigh its hand-over to a worker process


def default_workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def relative(path: object, root: Path) -> str:
    try:
        return Path(str(path)).relative_to(root).as_posix() if str(path) else ""
    except ValueError:
        return str(path)


def fit_to_image(frame: Frame, width: int, height: int, file: str, report: Report) -> None:
    """The image's own size wins over the export's (mismatch reported); boxes are clipped to it,
    and a frame left with no box inside the image is counted out of bounds."""
    if frame.width is not None and (frame.width, frame.height) != (width, height):
        report.add("size_mismatch", file, frame.image_id, f"XML says {frame.width}x{frame.height}, image is {width}x{height}")
    frame.width, frame.height = width, height
    if frame.boxes:
        frame.boxes = clip_boxes(frame.boxes, width, height, file, frame.image_id, report)
        if not frame.boxes:
            report.exclude(["bounds"], "no_box_inside_image")


class CheckedFrame(NamedTuple):
    frame: Frame
    info: ImageInfo


def _header(path: str) -> ImageInfo:
    with Image.open(path) as image:
        return ImageInfo(image.format or "?", image.width, image.height, image.mode, os.stat(path).st_size)


def _check_chunk(job: tuple[list[str], bool]) -> list[ImageInfo | str]:
    """Each image's info, or why it cannot be used: read whole and verified (deep), or its header only."""
    paths, deep = job
    out: list[ImageInfo | str] = []
    for path in paths:
        try:
            out.append(read_checked(path)[1] if deep else _header(path))
        except CorruptImage as error:
            out.append(str(error))
        except OSError as error:  # Pillow's "cannot identify image file" is an OSError too
            out.append(f"cannot read: {getattr(error, 'strerror', None) or error}")
    return out


def _checked(frames: Sequence[Frame], deep: bool, workers: int) -> Iterator[ImageInfo | str]:
    jobs = [([str(f.image_path) for f in frames[k : k + CHUNK]], deep) for k in range(0, len(frames), CHUNK)]
    workers = min(workers, len(jobs))
    with ProcessPoolExecutor(workers) if workers > 1 else nullcontext() as pool:
        for results in (pool.map if pool is not None else map)(_check_chunk, jobs):
            yield from results


def check_images(frames: Sequence[Frame], source: Source, report: Report, *, progress: bool = True, deep: bool = True,
                 workers: int | None = None) -> list[CheckedFrame]:
    """Read every frame's image (`deep`: whole and verified; else its header) in `workers` processes;
    clip boxes to its real size; report and drop the frames whose image cannot be used."""
    out: list[CheckedFrame] = []
    frames = [frame for frame in frames if frame.configs]
    results = _checked(frames, deep, workers or default_workers())
    for frame, result in tqdm(zip(frames, results), total=len(frames), desc="check images", unit="frame",
                              disable=not progress, mininterval=0.5):
        file = relative(frame.image_path, source.root)
        if isinstance(result, str):
            report.add("corrupt_image", file, frame.image_id, result)
            report.exclude(frame.configs, "corrupt_image")
            continue
        fit_to_image(frame, result.width, result.height, file, report)
        if frame.configs:
            out.append(CheckedFrame(frame, result))
    return out


def validate(source_path: Path | str, *, deep: bool = False, progress: bool = True) -> tuple[Source, Report, list[CheckedFrame]]:
    """Read everything a build would read and report; `deep` also reads and verifies every image whole."""
    source = discover(source_path)
    report = Report()
    frames = read_source(source, report)
    checked = check_images(frames, source, report, progress=progress, deep=deep)
    report.totals["usable_frames"] = len(checked)
    for config in schema.CONFIGS:
        report.totals[f"rows_{config}"] = sum(config in c.frame.configs for c in checked)
    return source, report, checked
