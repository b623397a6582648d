"""Thrift compact protocol, just enough to read and rewrite Parquet page headers and footers.

Decoding keeps every field, known to us or not, with its wire type, so `encode(decode(x)) == x`:
a footer can be rewritten with a few offsets changed and nothing else lost.

A struct is a list of `Field`s in wire order. Values: int (i8, i16, i32, i64), bool, float
(double), bytes (binary), `ThriftList` (list and set), `ThriftMap`, or a nested struct (list).
"""
from __future__ import annotations

import struct as _struct
from dataclasses import dataclass
from typing import Any

STOP, TRUE, FALSE, I8, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)


class ThriftError(ValueError):
    pass


@dataclass
class Field:
    id: int
    type: int  # wire type; TRUE or FALSE for a bool field
    value: Any


@dataclass
class ThriftList:
    element_type: int
    items: list


@dataclass
class ThriftMap:
    key_type: int
    value_type: int
    items: list  # (key, value) pairs


def decode_struct(data: bytes | memoryview, position: int = 0, depth: int = 0) -> tuple[list[Field], int]:
    """The struct starting at `position`, and the position just after it."""
    if depth > 32:
        raise ThriftError("structs nested too deeply")
    fields: list[Field] = []
    last = 0
    while True:
        header = _byte(data, position)
        position += 1
        if header == STOP:
            return fields, position
        kind = header & 0x0F
        delta = header >> 4
        if delta:
            field_id = last + delta
        else:
            raw, position = _varint(data, position)
            field_id = _unzigzag(raw)
        if kind in (TRUE, FALSE):
            value: Any = kind == TRUE
        else:
            value, position = _decode_value(data, position, kind, depth)
        fields.append(Field(field_id, kind, value))
        last = field_id


def _decode_value(data, position: int, kind: int, depth: int) -> tuple[Any, int]:
    if kind == I8:
        return _struct.unpack_from("<b", data, position)[0], position + 1
    if kind in (I16, I32, I64):
        raw, position = _varint(data, position)
        return _unzigzag(raw), position
    if kind == DOUBLE:
        return _struct.unpack_from("<d", data, position)[0], position + 8
    if kind == BINARY:
        size, position = _varint(data, position)
        end = position + size
        if end > len(data):
            raise ThriftError("binary field runs past the end of the data")
        return bytes(data[position:end]), end
    if kind in (LIST, SET):
        header = _byte(data, position)
        position += 1
        size, element = header >> 4, header & 0x0F
        if size == 15:
            size, position = _varint(data, position)
        if size > len(data) - position + 1:
            raise ThriftError("list longer than the data")
        items = []
        for _ in range(size):
            if element in (TRUE, FALSE):  # bools in a list: one byte each, kept as sent
                items.append(_byte(data, position))
                position += 1
            else:
                item, position = _decode_value(data, position, element, depth)
                items.append(item)
        return ThriftList(element, items), position
    if kind == MAP:
        size, position = _varint(data, position)
        if size == 0:
            return ThriftMap(0, 0, []), position
        types = _byte(data, position)
        position += 1
        key_type, value_type = types >> 4, types & 0x0F
        pairs = []
        for _ in range(size):
            key, position = _decode_value(data, position, key_type, depth)
            value, position = _decode_value(data, position, value_type, depth)
            pairs.append((key, value))
        return ThriftMap(key_type, value_type, pairs), position
    if kind == STRUCT:
        return decode_struct(data, position, depth + 1)
    raise ThriftError(f"unknown compact type {kind}")


def encode_struct(fields: list[Field]) -> bytes:
    out = bytearray()
    _encode_struct(fields, out)
    return bytes(out)


def _encode_struct(fields: list[Field], out: bytearray) -> None:
    last = 0
    for field in fields:
        kind = field.type
        if kind in (TRUE, FALSE):
            kind = TRUE if field.value else FALSE
        delta = field.id - last
        if 0 < delta <= 15:
            out.append((delta << 4) | kind)
        else:
            out.append(kind)
            _put_varint(out, _zigzag(field.id))
        if kind not in (TRUE, FALSE):
            _encode_value(field.value, kind, out)
        last = field.id
    out.append(STOP)


def _encode_value(value: Any, kind: int, out: bytearray) -> None:
    if kind == I8:
        out += _struct.pack("<b", value)
    elif kind in (I16, I32, I64):
        _put_varint(out, _zigzag(value))
    elif kind == DOUBLE:
        out += _struct.pack("<d", value)
    elif kind == BINARY:
        _put_varint(out, len(value))
        out += value
    elif kind in (LIST, SET):
        size = len(value.items)
        if size < 15:
            out.append((size << 4) | value.element_type)
        else:
            out.append(0xF0 | value.element_type)
            _put_varint(out, size)
        for item in value.items:
            if value.element_type in (TRUE, FALSE):
                out.append(item)
            else:
                _encode_value(item, value.element_type, out)
    elif kind == MAP:
        _put_varint(out, len(value.items))
        if value.items:
            out.append((value.key_type << 4) | value.value_type)
            for key, item in value.items:
                _encode_value(key, value.key_type, out)
                _encode_value(item, value.value_type, out)
    elif kind == STRUCT:
        _encode_struct(value, out)
    else:
        raise ThriftError(f"unknown compact type {kind}")


def get(fields: list[Field], field_id: int, default: Any = None) -> Any:
    for field in fields:
        if field.id == field_id:
            return field.value
    return default


def put(fields: list[Field], field_id: int, kind: int, value: Any) -> None:
    """Set a field, adding it in field-id order if absent."""
    for field in fields:
        if field.id == field_id:
            field.value = value
            return
    fields.append(Field(field_id, kind, value))
    fields.sort(key=lambda f: f.id)


def drop(fields: list[Field], field_id: int) -> None:
    fields[:] = [f for f in fields if f.id != field_id]


def _byte(data, position: int) -> int:
    if position >= len(data):
        raise ThriftError("truncated thrift data")
    return data[position]


def _varint(data, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = _byte(data, position)
        position += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, position
        shift += 7
        if shift > 70:
            raise ThriftError("varint too long")


def _put_varint(out: bytearray, value: int) -> None:
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def _unzigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)
