"""Find what a source folder holds: the FPUS23 archive, the public layout, or plane folders alone."""
from __future__ import annotations

import multiprocessing
import os
import pickle
import re
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generator, Iterator

from . import schema
from .cvat import Frame, frame_index, make_image_id, read_stream
from .forking import fork_is_safe
from .report import Report

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FLAT_PLANE_NAME = re.compile(r"^(?P<stream>stream_.+?)_(?P<frame>frame_\d+\.(?:png|jpe?g))$", re.IGNORECASE)
UNGROUPED_BLOCK = 50  # consecutive frames of an unknown stream kept together when splitting


class SourceError(ValueError):
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
        return Source(root.parent, "xml", {stream: StreamSource(stream, [root], [root.parent, root.parent / "images"])})

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


def read_source(source: Source, report: Report, check_unannotated: bool = True) -> list[Frame]:
    """All frames of a source, sorted by (stream, frame number, name), with image paths resolved.

    Missing images are reported and their frames dropped here; image contents are checked later by
    whoever reads the bytes (build) or by validate.
    """
    with iter_source(source, report, check_unannotated) as groups:
        return [frame for group in groups for frame in group]


def iter_source(source: Source, report: Report, check_unannotated: bool = True) -> "SourceGroups":
    """The frames of each split group (a stream, or a block of an unknown stream's plane images), one
    group at a time, in `read_source` order.

    The exports start being parsed when this is called, in worker processes where that pays, so the
    caller can do other work (a build imports its Parquet writer) before it takes the first group.
    Plane folders are listed first: their images may label frames of any stream.
    """
    plane_frames: dict[str, list[Frame]] = {}
    for frame in _read_plane_folders(source, report):
        plane_frames.setdefault(frame.stream, []).append(frame)
    xml_streams = sorted(source.streams)
    parsed = _read_streams([(s, source.streams[s].xml_files) for s in xml_streams], report)
    return SourceGroups(_groups(source, report, plane_frames, xml_streams, parsed, check_unannotated), parsed)


class SourceGroups:
    """An iterator over a source's split groups; `close` (also on exit of a `with`) stops the parsing."""

    def __init__(self, groups: Iterator[list[Frame]], parsed) -> None:
        self.groups, self.parsed = groups, parsed

    def __iter__(self) -> "SourceGroups":
        return self

    def __next__(self) -> list[Frame]:
        return next(self.groups)

    def close(self) -> None:
        self.parsed.close()

    def __enter__(self) -> "SourceGroups":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _groups(source: Source, report: Report, plane_frames: dict[str, list[Frame]], xml_streams: list[str], parsed,
            check_unannotated: bool) -> Iterator[list[Frame]]:
    for stream in sorted(set(xml_streams) | set(plane_frames)):
        frames = _located(source, stream, next(parsed), report, check_unannotated) if stream in source.streams else []
        frames.extend(plane_frames.pop(stream, []))
        merged = _merge_plane_rows(frames, report)
        merged.sort(key=lambda f: (f.index, f.name))
        groups: dict[str, list[Frame]] = {}
        for frame in merged:
            if not configs_of(frame):
                report.add("unlabelled_frame", frame.image_path or "", frame.image_id, "no usable tag or box")
            groups.setdefault(frame.split_group, []).append(frame)
        yield from groups.values()


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
            report.exclude(configs_of(frame), "missing_image")
            continue
        frames.append(frame)
    if check_unannotated:
        for directory, names in zip(locator.directories, locator.listings):
            for name in sorted(names - referenced):
                if name.lower().endswith(IMAGE_SUFFIXES):
                    report.add("unannotated_image", directory / name, make_image_id(stream, name), "no <image> entry in the stream's exports")
    return frames


PARALLEL_XML_BYTES = 2 << 20  # below this, starting processes costs more than it saves (the 34 shared streams: 8 MB)
RESULT_PIPE_BYTES = 1 << 20  # room for a dozen parsed streams: a worker goes on while this process is busy


def _read_one_stream(job: tuple[str, list[Path]]) -> tuple[list[Frame], Report]:
    found = Report()
    return read_stream(job[0], job[1], found), found


def _read_streams(jobs: list[tuple[str, list[Path]]], report: Report) -> Generator[list[Frame], None, None] | _ParallelStreams:
    """Each stream's frames, in order, its problems added to `report` as it comes; parsed in worker
    processes when it pays.

    Parsing is Python-bound (the GIL rules out threads). Workers are forked here and now, not when
    the first stream is asked for, so only from a process that runs no other thread (a fork copies
    locks held by other threads), and only on Linux-like systems where fork is available.
    """
    workers = min(len(jobs), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    sizes = [sum(_file_size(file) for file in files) for _, files in jobs]
    if workers < 2 or sum(sizes) < PARALLEL_XML_BYTES or not fork_is_safe():
        return (read_stream(stream, files, report) for stream, files in jobs)
    return _ParallelStreams(jobs, sizes, report, workers)


def _file_size(path: Path) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return 0  # reported when it is read


class _ParallelStreams:
    """Streams parsed by forked workers, each given its share up front, taken in order; `close` stops them.

    Each worker parses its streams in order and sends each down its own pipe. Unlike a pool, which
    hands out one task at a time through threads of this process, no worker waits for this process:
    a build, importing and planning meanwhile, held the GIL those threads needed, and its two
    workers idled a third of the time.
    """

    def __init__(self, jobs: list[tuple[str, list[Path]]], sizes: list[int], report: Report, workers: int):
        self.report = report
        self.streams = [stream for stream, _ in jobs]
        self.owners = _share_out(sizes, workers)
        self.taken = 0
        self.processes: list = []
        self.connections: list = []
        context = multiprocessing.get_context("fork")
        try:
            for worker in range(workers):
                receiving, sending = context.Pipe(duplex=False)
                self.connections.append(receiving)
                _enlarge_pipe(sending.fileno())
                share = [job for job, owner in zip(jobs, self.owners) if owner == worker]
                process = context.Process(target=_parse_share, args=(share, sending), name=f"fpus23-xml-{worker}", daemon=True)
                process.start()
                self.processes.append(process)
                sending.close()
        except BaseException:
            self.close()
            raise

    def __iter__(self) -> "_ParallelStreams":
        return self

    def __next__(self) -> list[Frame]:
        if self.taken == len(self.streams):
            raise StopIteration
        stream, worker = self.streams[self.taken], self.owners[self.taken]
        try:
            result = pickle.loads(self.connections[worker].recv_bytes())
        except EOFError:
            process = self.processes[worker]
            process.join(timeout=5)
            raise RuntimeError(f"the XML parser process {process.pid} ended (exit code {process.exitcode}) "
                               f"before sending stream {stream}") from None
        if isinstance(result, _WorkerFailure):
            raise RuntimeError(f"parsing stream {stream} failed in an XML parser process:\n{result.traceback}")
        self.taken += 1
        frames, found = result
        self.report.merge(found)
        return frames

    def close(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
            process.join()
        for connection in self.connections:
            connection.close()
        self.processes, self.connections = [], []


def _share_out(sizes: list[int], workers: int) -> list[int]:
    """The worker of each job, in order: the one with the fewest bytes so far, so that all progress
    through the jobs at about the same pace and results come in about the order they are taken."""
    load = [0] * workers
    owners = []
    for size in sizes:
        worker = min(range(workers), key=load.__getitem__)
        owners.append(worker)
        load[worker] += max(1, size)
    return owners


@dataclass
class _WorkerFailure:
    traceback: str


def _parse_share(jobs: list[tuple[str, list[Path]]], connection) -> None:
    """A worker's life: parse its streams in order, each result sent as soon as it is ready."""
    try:
        for job in jobs:
            connection.send_bytes(pickle.dumps(_read_one_stream(job), protocol=pickle.HIGHEST_PROTOCOL))
    except BaseException:
        connection.send_bytes(pickle.dumps(_WorkerFailure(traceback.format_exc())))
    finally:
        connection.close()


def _enlarge_pipe(fd: int) -> None:
    """Grow a pipe's buffer where Linux allows it (up to /proc/sys/fs/pipe-max-size); else leave it."""
    import fcntl  # only where fork is, so not on Windows

    if hasattr(fcntl, "F_SETPIPE_SZ"):
        try:
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, RESULT_PIPE_BYTES)
        except OSError:
            pass


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


def configs_of(frame: Frame) -> list[str]:
    """The configs a frame has a row in."""
    configs = [c for c in ("plane", "orientation", "anatomy") if c in frame.labels]
    if frame.boxes:
        configs.append("bounds")
    return configs
