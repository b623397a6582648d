"""Find what a source folder holds: the FPUS23 archive, the public layout, or plane folders alone."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import schema
from ..errors import UserError
from ..report import Report
from .reader import Frame, frame_index, make_image_id, read_stream

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FLAT_PLANE_NAME = re.compile(r"^(?P<stream>stream_.+?)_(?P<frame>frame_\d+\.(?:png|jpe?g))$", re.IGNORECASE)
UNGROUPED_BLOCK = 50  # consecutive frames of an unknown stream kept together when splitting


class SourceError(UserError):
    """Nothing usable was found at the source path."""


@dataclass
class StreamSource:
    name: str
    xml_files: list[Path] = field(default_factory=list)
    image_dirs: list[Path] = field(default_factory=list)


@dataclass
class Source:
    root: Path
    layout: str  # "archive" | "public" | "planes" | "xml"
    streams: dict[str, StreamSource] = field(default_factory=dict)
    plane_folders: dict[str, Path] = field(default_factory=dict)  # plane class -> folder

    def describe(self) -> str:
        xmls = sum(len(s.xml_files) for s in self.streams.values())
        planes = ", ".join(schema.PLANE_FOLDER_OF[c] for c in sorted(self.plane_folders)) or "none"
        return f"{self.root} ({self.layout} layout): {len(self.streams)} streams, {xmls} XML files, plane folders: {planes}"


def _subdirs(path: Path) -> list[Path]:
    try:
        return sorted(p for p in path.iterdir() if p.is_dir())
    except OSError:
        return []


def discover(root: Path | str) -> Source:
    root = Path(root)
    if not root.exists():
        raise SourceError(f"{root}: no such file or folder")
    if root.is_file():
        if root.suffix.lower() != ".xml":
            raise SourceError(f"{root}: expected a folder or a CVAT XML file")
        stream = root.parent.name if root.name == "annotations.xml" else root.stem
        archive_images = [root.parents[3] / "four_poses" / stream] if len(root.parents) > 3 else []  # annos/annotation/<stream>/
        return Source(root.parent, "xml", {stream: StreamSource(stream, [root], [root.parent, root.parent / "images", *archive_images])})

    # An archive unpacked into one wrapping folder (e.g. Dataset/).
    base = root
    for _ in range(2):
        if _has_layout(base):
            break
        children = _subdirs(base)
        if len(children) == 1:
            base = children[0]
    source = Source(base, "public")
    archive_xml = sorted(base.glob("annos/annotation/*/annotations.xml")) + sorted(
        base.glob("boxes/annotation/*/annotations.xml")
    )
    if archive_xml:
        source.layout = "archive"
        for xml in archive_xml:
            stream = xml.parent.name
            entry = source.streams.setdefault(stream, StreamSource(stream))
            entry.xml_files.append(xml)
        for entry in source.streams.values():
            entry.image_dirs = [base / "four_poses" / entry.name]
    else:
        for xml in sorted(base.glob("*/annotations.xml")):
            stream = xml.parent.name
            source.streams[stream] = StreamSource(
                stream,
                [xml],
                [xml.parent, xml.parent / "images", base / "four_poses" / stream, base.parent / "four_poses" / stream],
            )
    for folder, plane in schema.PLANE_FOLDERS.items():
        if (base / folder).is_dir():
            source.plane_folders[plane] = base / folder
    if not source.streams and source.plane_folders:
        source.layout = "planes"
    if not source.streams and not source.plane_folders:
        raise SourceError(
            f"{root}: no CVAT exports found (looked for annos/annotation/<stream>/annotations.xml, "
            f"boxes/annotation/<stream>/annotations.xml, <stream>/annotations.xml) and no plane folders "
            f"({', '.join(schema.PLANE_FOLDERS)})"
        )
    return source


def _has_layout(path: Path) -> bool:
    return (
        (path / "annos").is_dir()
        or (path / "boxes").is_dir()
        or (path / "four_poses").is_dir()
        or any((path / f).is_dir() for f in schema.PLANE_FOLDERS)
        or any(path.glob("*/annotations.xml"))
    )


class _ImageLocator:
    """Finds a frame's image among a stream's candidate folders, listing each folder once."""

    def __init__(self, directories: list[Path]):
        self.directories = [d for d in directories if d.is_dir()]
        self.listings: list[set[str]] = []
        for directory in self.directories:
            with os.scandir(directory) as entries:
                self.listings.append({e.name for e in entries})

    def find(self, name: str) -> Path | None:
        if "/" in name:
            for directory in self.directories:
                if (directory / name).is_file():
                    return directory / name
            return None
        for directory, names in zip(self.directories, self.listings):
            if name in names:
                return directory / name
        return None


def _parse(job: tuple[str, list[Path]]) -> tuple[list[Frame], Report]:
    found = Report()
    return read_stream(job[0], job[1], found), found


def read_source(source: Source, report: Report, check_unannotated: bool = True, mapper: Callable = map) -> list[Frame]:
    """All frames of a source, sorted by (stream, frame number, name), with image paths resolved.

    Missing images are reported and their frames dropped here; image contents are checked later by
    whoever reads the bytes (build or validate). Plane folders are listed first: their images may
    label frames of any stream. `mapper` parses the streams (a process pool's `map`: parsing is
    Python-bound); the report is the same whoever parses.
    """
    plane_frames: dict[str, list[Frame]] = {}
    for frame in _read_plane_folders(source, report):
        plane_frames.setdefault(frame.stream, []).append(frame)
    xml_streams = sorted(source.streams)
    parsed_streams = dict(zip(xml_streams, mapper(_parse, [(s, source.streams[s].xml_files) for s in xml_streams])))
    out: list[Frame] = []
    for stream in sorted(set(source.streams) | set(plane_frames)):
        frames = []
        if stream in source.streams:
            parsed, found = parsed_streams.pop(stream)
            report.merge(found)
            if stream in report.omitted:
                continue  # an unreadable export: the stream contributes nothing, plane-folder images included
            frames = _located(source, stream, parsed, report, check_unannotated)
        frames.extend(plane_frames.pop(stream, []))
        merged = _merge_plane_rows(frames, report)
        merged.sort(key=lambda f: (f.index, f.name))
        for frame in merged:
            if not frame.configs:
                report.add("unlabelled_frame", frame.image_path or "", frame.image_id, "no usable tag or box")
        out.extend(merged)
    return out


def _located(source: Source, stream: str, stream_frames: list[Frame], report: Report, check_unannotated: bool) -> list[Frame]:
    """A stream's parsed frames whose image is found, with its path; the others reported."""
    entry = source.streams[stream]
    referenced = set()
    locator = _ImageLocator(entry.image_dirs)
    frames = []
    for frame in stream_frames:
        report.totals["annotated_frames"] += 1
        frame.image_path = locator.find(frame.name)
        referenced.add(frame.name)
        if frame.image_path is None:
            where = ", ".join(str(d) for d in entry.image_dirs[:2])
            report.add("missing_image", entry.xml_files[0], frame.image_id, f"{frame.name} not found in {where}")
            report.exclude(frame.configs, "missing_image")
            continue
        frames.append(frame)
    if check_unannotated:
        for directory, names in zip(locator.directories, locator.listings):
            for name in sorted(names - referenced):
                if name.lower().endswith(IMAGE_SUFFIXES):
                    report.add("unannotated_image", directory / name, make_image_id(stream, name), "no <image> entry in the stream's exports")
    return frames


def _read_plane_folders(source: Source, report: Report) -> list[Frame]:
    frames = []
    for plane, folder in sorted(source.plane_folders.items()):
        for dirpath, dirnames, filenames in os.walk(folder):
            dirnames.sort()
            for filename in sorted(filenames):
                if not filename.lower().endswith(IMAGE_SUFFIXES):
                    continue
                path = Path(dirpath) / filename
                relative = path.relative_to(folder)
                group = None
                if len(relative.parts) >= 2:  # <PLANE>/<stream>/<frame>
                    stream, name = relative.parts[-2], filename
                elif (match := FLAT_PLANE_NAME.match(filename)) is not None:  # <PLANE>/<stream>_<frame>
                    stream, name = match["stream"], match["frame"]
                else:  # unknown stream: keep runs of consecutive frames together when splitting
                    stream, name = folder.name, filename
                    group = f"{folder.name}#{frame_index(name) // UNGROUPED_BLOCK}"
                report.totals["plane_folder_images"] += 1
                frames.append(Frame(stream, name, frame_index(name), image_path=path, labels={"plane": plane}, group=group))
    return frames


def _merge_plane_rows(frames: list[Frame], report: Report) -> list[Frame]:
    """A frame may appear both in an export and in a plane folder: one record, labels merged."""
    by_id: dict[str, Frame] = {}
    conflicted: set[str] = set()
    out = []
    for frame in frames:
        existing = by_id.get(frame.image_id)
        if existing is None:
            by_id[frame.image_id] = frame
            out.append(frame)
            continue
        new_plane, old_plane = frame.labels.get("plane"), existing.labels.get("plane")
        if frame.image_id in conflicted or new_plane is None:
            continue
        if old_plane is None:
            existing.labels["plane"] = new_plane
        elif old_plane != new_plane:
            report.add("conflicting_tag", frame.image_path or "", frame.image_id, f"plane: {old_plane} vs {new_plane} (tag vs plane folder)")
            report.exclude(["plane"], "conflicting_tag")
            del existing.labels["plane"]
            conflicted.add(frame.image_id)
        else:
            report.add("duplicate_tag", frame.image_path or "", frame.image_id, f"plane={new_plane} given by a tag and a plane folder")
    return out
