"""Check a source without building: exports, image files, boxes; everything counted and reported."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .cvat import Frame, clip_boxes
from .images import CorruptImage, read_checked, read_header
from .report import Report
from .sources import Source, configs_of, discover, read_source

READ_THREADS = 4


def relative(path: object, root: Path) -> str:
    text = str(path)
    prefix = str(root).rstrip(os.sep) + os.sep
    if text.startswith(prefix) and os.sep == "/":  # the common case, without pathlib's parsing
        return text[len(prefix) :]
    try:
        return Path(text).relative_to(root).as_posix() if text else text
    except ValueError:
        return text


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


@dataclass
class CheckedFrame:
    frame: Frame
    configs: list[str]
    image_size: int
    width: int
    height: int


def check_images(
    rows_in: Sequence[Frame], source: Source, report: Report, progress: bool, deep: bool = False
) -> list[CheckedFrame]:
    """Read image headers (size, truncation); clip boxes to the real size; drop unreadable frames."""

    def header(frame: Frame):
        try:
            if deep:
                data, info = read_checked(frame.image_path, verify=True)
                return info, len(data)
            return read_header(frame.image_path)
        except (CorruptImage, OSError) as error:
            return error

    from .progress import tqdm  # not at the top: a build imports this module before it forks its parsers, and tqdm takes 50 ms

    out: list[CheckedFrame] = []
    with ThreadPoolExecutor(READ_THREADS) as pool:
        results = pool.map(header, rows_in)
        for frame, result in tqdm(zip(rows_in, results), total=len(rows_in), desc="check", unit="frame", disable=not progress, mininterval=0.5):
            file = relative(frame.image_path, source.root)
            if isinstance(result, Exception):
                message = str(result) if isinstance(result, CorruptImage) else f"cannot read: {getattr(result, 'strerror', result)}"
                report.add("corrupt_image", file, frame.image_id, message)
                report.exclude(configs_of(frame), "corrupt_image")
                continue
            info, size = result
            fit_to_image(frame, info.width, info.height, file, report)
            configs = configs_of(frame)
            if configs:
                out.append(CheckedFrame(frame, configs, size, info.width, info.height))
    return out


def validate(source_path: Path | str, *, deep: bool = False, progress: bool = True) -> tuple[Source, Report, list[CheckedFrame]]:
    """Read everything a build would read and report; `deep` also verifies every PNG chunk CRC."""
    source = discover(source_path)
    report = Report()
    frames = read_source(source, report)
    checked = check_images(frames, source, report, progress, deep=deep)
    report.totals["usable_frames"] = len(checked)
    for config in ("plane", "orientation", "anatomy", "bounds"):
        report.totals[f"rows_{config}"] = sum(config in c.configs for c in checked)
    return source, report, checked
