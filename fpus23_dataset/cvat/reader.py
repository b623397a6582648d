"""Read "CVAT for images 1.1" exports into Frame records, safely and in bounded memory.

Several exports of one stream (the archive keeps tags in `annos/` and boxes in `boxes/`) are merged:
identical repeats count once, conflicting tags drop the frame from that tag's config, and every
problem is reported with file, frame and reason.
"""
from __future__ import annotations

import math
import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Mapping

from lxml import etree

from .. import schema
from ..report import Report

PROLOG_SCAN_BYTES = 1 << 16


class UntrustedXMLError(ValueError):
    """The XML declares a DTD or entities, or is not well-formed; it is refused whole."""

    def __init__(self, path: Path | str, reason: str, code: str = "untrusted_xml"):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        self.code = code


@dataclass(frozen=True)
class Box:
    """A COCO-style box in pixels: top-left corner, width, height."""

    category: str
    x: float
    y: float
    w: float
    h: float

    @property
    def area(self) -> float:
        return self.w * self.h

    def key(self) -> tuple:
        return (self.category, round(self.x, 2), round(self.y, 2), round(self.w, 2), round(self.h, 2))


@dataclass
class Frame:
    """One frame, identified by (stream, name), with its resolved labels and boxes."""

    stream: str
    name: str  # image name as in the export, e.g. "frame_000360.png"
    index: int  # frame number
    width: int | None = None
    height: int | None = None
    image_path: Path | None = None
    labels: dict[str, str] = field(default_factory=dict)  # tag task key -> class
    boxes: list[Box] = field(default_factory=list)
    group: str | None = None  # split group when it is not the stream (ungrouped plane folders)
    image_id: str = field(init=False, repr=False)  # `<stream>/<name without extension>`

    def __post_init__(self) -> None:
        self.image_id = make_image_id(self.stream, self.name)

    @property
    def split_group(self) -> str:
        return self.group or self.stream

    @property
    def configs(self) -> list[str]:
        """The configs the frame has a row in."""
        return schema.configs_of(self.labels, bool(self.boxes))


def make_image_id(stream: str, name: str) -> str:
    """`<stream>/<frame name without extension>`: the identity of a frame everywhere."""
    return f"{stream}/{os.path.splitext(name)[0]}"


def frame_index(name: str, fallback: int = 0) -> int:
    digits = re.findall(r"\d+", os.path.splitext(os.path.basename(name))[0])
    return int(digits[-1]) if digits else fallback


def check_prolog(path: Path) -> None:
    """Refuse DTDs and entity declarations before the parser sees them (XXE, billion laughs): past
    comments and processing instructions, the first markup must be the root element."""
    with open(path, "rb") as fh:
        prolog = _COMMENTS_AND_PIS.sub(b"", fh.read(PROLOG_SCAN_BYTES).removeprefix(b"\xef\xbb\xbf")).lstrip()
    if prolog.startswith(b"<!"):
        raise UntrustedXMLError(path, "DTD or entity declaration found (<!DOCTYPE/<!ENTITY); CVAT exports never have one "
                                      "and entity expansion is refused")


_COMMENTS_AND_PIS = re.compile(rb"<!--.*?-->|<\?.*?\?>", re.S)


def parser_options() -> dict:
    return dict(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False,
                remove_comments=True, remove_pis=True)


def iter_images(path: Path) -> Iterator[etree._Element]:
    """Yield each `<image>` element of an export; memory stays bounded by one element."""
    check_prolog(path)
    # End events of <image> only: a start event per element as well cost a tenth of the parse.
    context = etree.iterparse(str(path), events=("end",), tag="image", **parser_options())
    try:
        for _, element in context:
            yield element
            element.clear(keep_tail=False)
            parent = element.getparent()
            if parent is not None:
                while element.getprevious() is not None:
                    del parent[0]
    except etree.XMLSyntaxError as error:
        message = str(error)
        if "entity" in message.lower():
            raise UntrustedXMLError(path, f"entity reference refused: {message}") from None
        raise UntrustedXMLError(path, f"not well-formed XML: {message}", code="malformed_xml") from None
    if context.root is None or context.root.tag != "annotations":
        raise UntrustedXMLError(path, "no <annotations> root: not a CVAT for images 1.1 export", code="not_cvat_xml")


def read_labels_meta(path: Path) -> list[dict]:
    """The `<labels>` of an export's task/job meta: [{"name", "attributes": {name: [values]}}]."""
    check_prolog(path)
    labels: list[dict] = []
    context = etree.iterparse(str(path), events=("end",), tag=("label", "image"), **parser_options())
    for _, element in context:
        if element.tag == "image":
            break
        name = element.findtext("name")
        if name is None:
            continue
        attributes = {}
        for attribute in element.iterfind("attributes/attribute"):
            values = (attribute.findtext("values") or "").split("\n")
            attributes[attribute.findtext("name") or ""] = [v.strip() for v in values if v.strip()]
        labels.append({"name": name, "type": element.findtext("type") or "any", "attributes": attributes})
        element.clear()
    return labels


@dataclass
class _RawFrame:
    name: str
    index: int
    width: int | None
    height: int | None
    tags: dict[str, list[tuple[str, str]]] = field(default_factory=lambda: defaultdict(list))  # task -> [(value, file)]
    boxes: list[tuple[Box, str]] = field(default_factory=list)
    image_id: str = ""


def _safe_name(name: str) -> bool:
    """A relative POSIX path that stays inside its folder (no request can name another file)."""
    if not name or name.startswith("/") or "\\" in name or "\x00" in name:
        return False
    return ".." not in name.split("/")


def read_stream(stream: str, xml_files: Iterable[Path], report: Report) -> list[Frame]:
    """Read and merge all exports of one stream into Frame records, sorted by frame number.

    Strict: if any export of the stream cannot be read whole (not well-formed, truncated, refused as
    hostile, not a CVAT export, unreadable), the stream contributes nothing and is recorded as
    omitted. Half an export would silently drop the frames after the cut, and tags without their
    boxes export would put frames in some configs and not in others.
    """
    raw: dict[str, _RawFrame] = {}
    found = Report()
    failures: list[tuple[str, str, str]] = []  # (code, file, reason)
    for path in xml_files:
        try:
            _read_one(stream, Path(path), raw, found)
        except UntrustedXMLError as error:
            failures.append((error.code, error.path, error.reason))
        except OSError as error:
            failures.append(("malformed_xml", str(path), f"cannot read: {error.strerror or error}"))
    if failures:
        for code, file, reason in failures:
            report.add(code, file, None, reason)
        report.omit(stream, f"{failures[0][1]}: {failures[0][2]}")
        return []
    report.merge(found)
    return [_resolve(stream, frame, report) for frame in sorted(raw.values(), key=lambda r: (r.index, r.name))]


def _read_one(stream: str, path: Path, raw: dict[str, _RawFrame], report: Report) -> None:
    report.totals["xml_files"] += 1
    file = str(path)
    seen_here: set[str] = set()
    tag_tasks = schema.TAG_TASK_BY_CVAT_LABEL
    box_categories = schema.BOX_CVAT_LABELS
    for element in iter_images(path):
        get = element.get
        name = get("name", "")
        if not _safe_name(name):
            report.add("unsafe_image_name", path, f"{stream}/{name}", f"image name {name!r} refused")
            continue
        frame = raw.get(name)
        if frame is None:
            frame = raw[name] = _RawFrame(name, frame_index(name, _int_or_none(get("id")) or 0),
                                          _int_or_none(get("width")), _int_or_none(get("height")), image_id=make_image_id(stream, name))
        elif frame.width is None:
            frame.width, frame.height = _int_or_none(get("width")), _int_or_none(get("height"))
        if name in seen_here:
            report.add("duplicate_image", path, frame.image_id, f"<image name={name!r}> appears twice in this file")
        seen_here.add(name)
        for child in element:
            kind = child.tag
            if kind == "tag":
                label = child.get("label")
                task = tag_tasks.get(label or "")
                if task is None:
                    report.add("unknown_label", path, frame.image_id, f"tag label {label!r} is not in the FPUS23 schema")
                    continue
                value = None
                for attribute in child:
                    if attribute.tag == "attribute" and attribute.get("name") == task.cvat_attribute:
                        value = (attribute.text or "").strip()
                if value is None:
                    report.add("missing_attribute", path, frame.image_id, f"tag {label!r} has no {task.cvat_attribute!r} attribute")
                    continue
                ours = task.cvat_values.get(value)
                if ours is None:
                    report.add("unknown_value", path, frame.image_id, f"tag {label!r}: {task.cvat_attribute}={value!r} is not in the schema")
                    continue
                frame.tags[task.key].append((ours, file))
            elif kind == "box":
                box = _box(child, box_categories, path, frame.image_id, report)
                if box is not None:
                    frame.boxes.append((box, file))
            elif kind in _OTHER_SHAPES:
                report.add("unknown_label", path, frame.image_id, f"<{kind} label={child.get('label')!r}> is not a box")


_OTHER_SHAPES = frozenset(("polygon", "polyline", "points", "mask", "skeleton", "ellipse", "cuboid"))


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _box(box: etree._Element, categories: Mapping[str, str], path: Path, image_id: str, report: Report) -> Box | None:
    label = box.get("label")
    category = categories.get(label or "")
    if category is None:
        report.add("unknown_label", path, image_id, f"box label {label!r} is not in the FPUS23 schema")
        return None
    get = box.get
    try:
        xtl, ytl, xbr, ybr = float(get("xtl")), float(get("ytl")), float(get("xbr")), float(get("ybr"))
    except (TypeError, ValueError):  # missing (None) or not a number
        xtl = ytl = xbr = ybr = math.nan
    if not (math.isfinite(xtl) and math.isfinite(ytl) and math.isfinite(xbr) and math.isfinite(ybr)):
        report.add("degenerate_box", path, image_id, f"box {label!r} has a missing or non-numeric coordinate")
        return None
    if xbr <= xtl or ybr <= ytl:
        report.add("degenerate_box", path, image_id, f"box {label!r} [{xtl}, {ytl}, {xbr}, {ybr}] has no area")
        return None
    return Box(category, xtl, ytl, xbr - xtl, ybr - ytl)


def clip_boxes(boxes: list[Box], width: int, height: int, file: str, image_id: str, report: Report) -> list[Box]:
    """Clip boxes partly outside the image, drop those wholly outside; report both."""
    kept = []
    for box in boxes:
        x0, y0, x1, y1 = box.x, box.y, box.x + box.w, box.y + box.h
        cx0, cy0, cx1, cy1 = max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)
        if cx1 <= cx0 or cy1 <= cy0:
            report.add("box_outside", file, image_id, f"box {box.category} [{x0:g}, {y0:g}, {x1:g}, {y1:g}] outside {width}x{height}")
            continue
        if (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
            report.add("box_clipped", file, image_id, f"box {box.category} [{x0:g}, {y0:g}, {x1:g}, {y1:g}] clipped to {width}x{height}")
            box = Box(box.category, cx0, cy0, cx1 - cx0, cy1 - cy0)
        kept.append(box)
    return kept


def _resolve(stream: str, raw: _RawFrame, report: Report) -> Frame:
    frame = Frame(stream=stream, name=raw.name, index=raw.index, width=raw.width, height=raw.height)
    image_id = frame.image_id
    for task_key, values in sorted(raw.tags.items()):
        if len(values) == 1:
            frame.labels[task_key] = values[0][0]
            continue
        distinct = sorted({value for value, _ in values})
        files = sorted({file for _, file in values})
        if len(distinct) > 1:
            report.add("conflicting_tag", files[0], image_id, f"{task_key}: {' vs '.join(distinct)} ({', '.join(files)})")
            if task_key in schema.CLASSIFICATION_TASKS:
                report.exclude([task_key], "conflicting_tag")
            continue
        report.add("duplicate_tag", files[0], image_id, f"{task_key}={distinct[0]} given {len(values)} times")
        frame.labels[task_key] = distinct[0]
    if len(raw.boxes) == 1:
        frame.boxes.append(raw.boxes[0][0])
        return frame
    seen: set[tuple] = set()
    for box, file in raw.boxes:
        key = box.key()
        if key in seen:
            report.add("duplicate_box", file, image_id, f"box {box.category} repeated")
            continue
        seen.add(key)
        frame.boxes.append(box)
    return frame
