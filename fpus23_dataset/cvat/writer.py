"""Write "CVAT for images 1.1" exports in the FPUS23 label schema (renderer, pre-labelling)."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, NamedTuple, Sequence

from lxml import etree

from .. import schema
from ..atomic import replacing_file
from .reader import Box, Frame, check_prolog, parser_options


class TrackedBox(NamedTuple):
    """One keyframe of a CVAT track (interpolation mode): CVAT interpolates a track's box between its
    keyframes, and an `outside` keyframe hides it until the next. `frame`: the frame's position."""
    frame: int
    box: Box
    keyframe: bool = True
    outside: bool = False


def _corners(box: Box, **first: str) -> dict[str, str]:
    return {**first, "occluded": "0", "xtl": f"{box.x:.2f}", "ytl": f"{box.y:.2f}", "xbr": f"{box.x + box.w:.2f}",
            "ybr": f"{box.y + box.h:.2f}", "z_order": "0"}


def _labels_element(labels_meta: list[dict]) -> etree._Element:
    labels = etree.Element("labels")
    for meta in labels_meta:
        label = etree.SubElement(labels, "label")
        etree.SubElement(label, "name").text = meta["name"]
        etree.SubElement(label, "type").text = meta["type"]
        attributes = etree.SubElement(label, "attributes")
        for attr in meta["attributes"]:
            node = etree.SubElement(attributes, "attribute")
            etree.SubElement(node, "name").text = attr["name"]
            etree.SubElement(node, "mutable").text = "False"
            etree.SubElement(node, "input_type").text = "select"
            etree.SubElement(node, "default_value").text = attr["default"]
            etree.SubElement(node, "values").text = "\n".join(attr["values"])
    return labels


def write_cvat_xml(path: Path, task_name: str, frames: Iterable[Frame], *, tags: bool = True, boxes: bool = True,
                   source: str = "manual", tracks: Iterable[Sequence[TrackedBox]] = ()) -> None:
    """Write frames as a "CVAT for images 1.1" export in the FPUS23 label schema.

    `tags`/`boxes` choose what goes in (the archive keeps them in separate exports); `tracks` become
    `<track>` elements, which CVAT's importer reads and `read_stream` does not. Written to a
    temporary file and renamed, so a reader never sees half a file.
    """
    frames = list(frames)
    root = etree.Element("annotations")
    etree.SubElement(root, "version").text = "1.1"
    meta = etree.SubElement(root, "meta")
    task = etree.SubElement(meta, "task")
    etree.SubElement(task, "name").text = task_name
    etree.SubElement(task, "size").text = str(len(frames))
    etree.SubElement(task, "mode").text = "annotation"
    etree.SubElement(task, "start_frame").text = "0"
    etree.SubElement(task, "stop_frame").text = str(max(len(frames) - 1, 0))
    task.append(_labels_element(schema.cvat_labels_meta()))
    for position, frame in enumerate(frames):
        image = etree.SubElement(
            root, "image", id=str(position), name=frame.name,
            width=str(frame.width or schema.FRAME_WIDTH), height=str(frame.height or schema.FRAME_HEIGHT),
        )
        for box in frame.boxes if boxes else ():
            etree.SubElement(image, "box", _corners(box, label=schema.BOX_CVAT_LABEL_OF[box.category], source=source))
        if tags:
            for task_def in schema.TAG_TASKS:
                value = frame.labels.get(task_def.key)
                if value is None or value not in task_def.cvat_value_of:
                    continue
                tag = etree.SubElement(image, "tag", label=task_def.cvat_label, source=source)
                etree.SubElement(tag, "attribute", name=task_def.cvat_attribute).text = task_def.cvat_value_of[value]
    for number, track in enumerate(tracks):  # as CVAT's "CVAT for video" export writes them
        node = etree.SubElement(root, "track", id=str(number), label=schema.BOX_CVAT_LABEL_OF[track[0].box.category], source=source)
        for shape in track:
            etree.SubElement(node, "box", _corners(shape.box, frame=str(shape.frame), keyframe=str(int(shape.keyframe)),
                                                   outside=str(int(shape.outside))))
    with replacing_file(path) as temporary:
        etree.ElementTree(root).write(str(temporary), encoding="utf-8", xml_declaration=True, pretty_print=True)


def split_export(source_xml: Path, tags_out: Path, boxes_out: Path) -> None:
    """Copy one export into the archive's two (tags only / boxes only), keeping everything else as is.

    Duplicated or odd tags are kept: this is a copy, not a clean-up.
    """
    check_prolog(source_xml)
    tree = etree.parse(str(source_xml), etree.XMLParser(**parser_options()))
    for out, drop in ((tags_out, "box"), (boxes_out, "tag")):
        copy = etree.fromstring(etree.tostring(tree.getroot()))
        for image in copy.iterfind("image"):
            for child in list(image):
                if child.tag == drop:
                    image.remove(child)
        with replacing_file(out) as temporary:
            etree.ElementTree(copy).write(str(temporary), encoding="utf-8", xml_declaration=True)
