"""A row group of the stored table, gathered column by column and turned into Arrow arrays from buffers.

The rows of a row group are appended value by value into one Python list per column and become
Arrow arrays through `Array.from_buffers`, never `pa.array`: no dict per row, and no pandas (the first
`pa.array` call of a process imports pandas to check whether its input is a pandas object: a third
of a second of the build's busiest thread).
"""
from __future__ import annotations

from typing import Callable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from . import schema
from .cvat import Frame

_PROBES = {name: k for k, name in enumerate(schema.PROBE.classes)}
_BOX_CATEGORIES = {name: k for k, name in enumerate(schema.BOX_CATEGORIES)}
_INTEGERS = {pa.int32(): np.int32, pa.int64(): np.int64}
_CLASS_INDEX = {config: {name: k for k, name in enumerate(schema.class_names(config))} for config in schema.CLASSIFICATION_TASKS}


class RowGroupRows:
    """The rows of one row group: one per (frame, config), in the order added."""

    def __init__(self) -> None:
        self.positions: list[int] = []  # the frame's image in its read batch
        self.config: list[str] = []
        self.path: list[str] = []
        self.image_id: list[str] = []
        self.stream: list[str] = []
        self.frame: list[int] = []
        self.probe: list[int | None] = []
        self.width: list[int] = []
        self.height: list[int] = []
        self.paper_split: list[str] = []
        self.label: list[int | None] = []
        self.box_counts: list[int | None] = []  # None: not a bounds row
        self.box_id: list[int] = []
        self.box_values: list[float] = []  # x, y, w, h, area of each box
        self.box_category: list[int] = []

    def __len__(self) -> int:
        return len(self.config)

    def add_frame(self, position: int, frame: Frame, rows: Sequence[tuple[str, str]], next_object_id: Callable[[], int]) -> None:
        """The rows of one frame, (config, paper split) each, in order; what they share is looked up once."""
        n = len(rows)
        probe = frame.labels.get("probe")
        self.positions += [position] * n
        self.path += [f"{frame.stream}/{frame.name}"] * n
        self.image_id += [frame.image_id] * n
        self.stream += [frame.stream] * n
        self.frame += [frame.index] * n
        self.probe += [None if probe is None else _PROBES[probe]] * n
        self.width += [frame.width] * n
        self.height += [frame.height] * n
        for config, paper_split in rows:
            self.config.append(config)
            self.paper_split.append(paper_split)
            if config == "bounds":
                self.label.append(None)
                self.box_counts.append(len(frame.boxes))
                for box in frame.boxes:
                    self.box_id.append(next_object_id())
                    self.box_values += (round(box.x, 2), round(box.y, 2), round(box.w, 2), round(box.h, 2), round(box.area, 2))
                    self.box_category.append(_BOX_CATEGORIES[box.category])
            else:
                self.label.append(_CLASS_INDEX[config][frame.labels[config]])
                self.box_counts.append(None)

    def table(self, schema_: pa.Schema, stand_ins: Callable[[Sequence[int]], pa.Array],
              same_image: Mapping[int, int] | None = None) -> tuple[pa.Table, list[int], list[int]]:
        """The rows as a table of `schema_` (the stored schema), with the images it stores and each row's index into them.

        An image no row uses (its frame unreadable or left without a config) is not stored; nor is
        an image identical to an earlier one (`same_image`: position -> position of the first copy),
        whose rows point to that copy instead. The image column holds `stand_ins(indices)`, a few
        bytes per row standing for its image, which `ImageParquetWriter` replaces by the images
        themselves as it writes them.
        """
        positions = self.positions if same_image is None else [same_image.get(p, p) for p in self.positions]
        used = sorted(set(positions))
        renumber = {position: k for k, position in enumerate(used)}
        indices = [renumber[p] for p in positions]
        image_type = schema_.field("image").type
        image = pa.StructArray.from_arrays([stand_ins(indices), strings(self.path)], fields=list(image_type))
        objects_type = schema_.field("objects").type
        columns = {
            "config": strings(self.config),
            "image": image,
            "image_id": strings(self.image_id),
            "stream": strings(self.stream),
            "frame": numbers(self.frame, schema_.field("frame").type),
            "probe": numbers(self.probe, schema_.field("probe").type),
            "width": numbers(self.width, schema_.field("width").type),
            "height": numbers(self.height, schema_.field("height").type),
            "paper_split": strings(self.paper_split),
            "label": numbers(self.label, schema_.field("label").type),
            "objects": self._objects(objects_type),
        }
        if list(columns) != schema_.names:
            raise ValueError(f"row group columns {list(columns)} do not match the stored schema {schema_.names}")
        return pa.Table.from_arrays(list(columns.values()), schema=schema_), used, indices

    def _objects(self, list_type: pa.DataType) -> pa.Array:
        box_type = list_type.value_type
        values = np.array(self.box_values, np.float64).reshape(-1, 5)
        fields = {field.name: field for field in box_type}
        children = {
            "id": numbers(self.box_id, fields["id"].type),
            "bbox": pa.FixedSizeListArray.from_arrays(_from_numpy(np.ascontiguousarray(values[:, :4]).ravel(), pa.float64()), 4),
            "category": numbers(self.box_category, fields["category"].type),
            "area": _from_numpy(np.ascontiguousarray(values[:, 4]), pa.float64()),
        }
        boxes = pa.StructArray.from_arrays([children[field.name] for field in box_type], fields=list(box_type))
        counts = [0 if n is None else n for n in self.box_counts]
        offsets = np.zeros(len(counts) + 1, np.int32)
        np.cumsum(counts, out=offsets[1:])
        valid = [n is not None for n in self.box_counts]
        return pa.Array.from_buffers(list_type, len(counts), [_validity(valid), pa.py_buffer(offsets)], children=[boxes])


def strings(values: Sequence[str]) -> pa.Array:
    """A non-null string array."""
    encoded = [value.encode("utf-8") for value in values]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(value) for value in encoded], out=offsets[1:])
    if offsets[-1] >= 1 << 31:
        raise ValueError("a row group's strings exceed 2 GiB")
    return pa.Array.from_buffers(pa.string(), len(encoded), [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(b"".join(encoded))])


def numbers(values: Sequence[int | None], type_: pa.DataType) -> pa.Array:
    """An integer array; None becomes null."""
    if any(value is None for value in values):
        valid = [value is not None for value in values]
        data = np.array([0 if value is None else value for value in values], _INTEGERS[type_])
        return pa.Array.from_buffers(type_, len(values), [_validity(valid), pa.py_buffer(data)])
    return _from_numpy(np.array(values, _INTEGERS[type_]), type_)


def _from_numpy(data: np.ndarray, type_: pa.DataType) -> pa.Array:
    return pa.Array.from_buffers(type_, len(data), [None, pa.py_buffer(data)])


def _validity(valid: Sequence[bool]) -> pa.Buffer | None:
    if all(valid):
        return None
    return pa.py_buffer(np.packbits(np.array(valid, np.bool_), bitorder="little"))
