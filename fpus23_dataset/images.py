"""Check image files without decoding them: structure, size and mode from the headers."""
from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, replace

try:  # the same CRC-32 as zlib's, three times as fast here (SIMD); a build checks every byte of every PNG
    from zlib_ng.zlib_ng import crc32
except ImportError:  # pragma: no cover - zlib-ng is a dependency; zlib gives the same values
    from zlib import crc32

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_MODES = {0: "L", 2: "RGB", 3: "P", 4: "LA", 6: "RGBA"}


class CorruptImage(ValueError):
    pass


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "png" | "jpeg"
    width: int
    height: int
    mode: str
    # With verify: a content digest. For a PNG, of its chunk CRCs once each is checked (they cover
    # every byte but the signature and lengths, which the digest adds), so no second hash pass.
    digest: str = ""


PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


def inspect_image(data: bytes | memoryview, verify: bool = True) -> ImageInfo:
    """Validate an encoded PNG or JPEG and read its size; `verify` checks every PNG chunk CRC.

    Accepts a memoryview so that the builder checks bytes where they were read, without a copy.
    """
    if data[:8] == PNG_SIGNATURE:
        if not verify:
            if data[-12:] != PNG_END:
                raise CorruptImage("truncated PNG (no IEND chunk)")
            return _parse_ihdr(data)
        return _inspect_png(data)
    if data[:3] == b"\xff\xd8\xff":
        info = _inspect_jpeg(bytes(data))
        return replace(info, digest="sha256:" + hashlib.sha256(data).hexdigest()) if verify else info
    raise CorruptImage("not a PNG or JPEG file (bad signature)" if len(data) else "empty file")


def _inspect_png(data: bytes | memoryview) -> ImageInfo:
    view = memoryview(data)
    position, size = 8, len(data)
    info = None
    saw_idat = False
    digest = hashlib.sha256()
    while True:
        if position + 12 > size:
            raise CorruptImage("truncated PNG (no IEND chunk)")
        length, kind = struct.unpack_from(">I4s", data, position)
        end = position + 12 + length
        if end > size:
            raise CorruptImage(f"truncated PNG (chunk {kind!r} runs past the end of the file)")
        crc = struct.unpack_from(">I", data, end - 4)[0]
        if crc32(view[position + 4 : end - 4]) != crc:
            raise CorruptImage(f"PNG chunk {kind.decode('latin-1')!r} fails its CRC check")
        digest.update(data[position : position + 8])  # length and type, which the CRC leaves out
        digest.update(data[end - 4 : end])
        if info is None:
            info = _parse_ihdr(data)
        elif kind == b"IDAT":
            saw_idat = True
        elif kind == b"IEND":
            if not saw_idat:
                raise CorruptImage("PNG has no image data (IDAT)")
            digest.update(view[end:])  # bytes after IEND, if any: readers ignore them, the digest does not
            return ImageInfo(info.format, info.width, info.height, info.mode, "png-crc:" + digest.hexdigest())
        position = end


def _parse_ihdr(data: bytes | memoryview) -> ImageInfo:
    """The IHDR chunk, which must directly follow the signature."""
    if len(data) < 33:
        raise CorruptImage("truncated PNG (no IHDR chunk)")
    length, kind = struct.unpack_from(">I4s", data, 8)
    if kind != b"IHDR" or length != 13:
        raise CorruptImage("PNG does not start with an IHDR chunk")
    width, height, depth, color = struct.unpack_from(">IIBB", data, 16)
    if width == 0 or height == 0:
        raise CorruptImage("PNG has zero width or height")
    return ImageInfo("png", width, height, PNG_MODES.get(color, f"color{color}") + ("" if depth == 8 else f";{depth}"))


def _inspect_jpeg(data: bytes) -> ImageInfo:
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise CorruptImage("truncated JPEG (no end-of-image marker)")
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise CorruptImage("JPEG segment marker expected")
        marker = data[position + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        (length,) = struct.unpack_from(">H", data, position + 2)
        if marker in (0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF):
            if position + 9 > len(data):
                break
            height, width = struct.unpack_from(">HH", data, position + 5)
            components = data[position + 9]
            return ImageInfo("jpeg", width, height, {1: "L", 3: "RGB", 4: "CMYK"}.get(components, "?"))
        position += 2 + length
    raise CorruptImage("JPEG has no frame header (SOF)")


def read_checked(path, verify: bool = True) -> tuple[bytes, ImageInfo]:
    with open(path, "rb") as fh:
        data = fh.read()
    return data, inspect_image(data, verify)


def read_header(path) -> tuple[ImageInfo, int]:
    """Size and mode from the first bytes of a file, and that its end is intact; returns (info, file size)."""
    with open(path, "rb") as fh:
        head = fh.read(64)
        size = fh.seek(0, 2)
        if head.startswith(PNG_SIGNATURE):
            if size < 57:
                raise CorruptImage("truncated PNG")
            fh.seek(size - 12)
            tail = fh.read(12)
            if tail != PNG_END:
                raise CorruptImage("truncated PNG (no IEND chunk)")
            return _parse_ihdr(head), size
        fh.seek(0)
        return inspect_image(fh.read(), verify=False), size
