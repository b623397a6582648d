"""Check image files the way a dataset reader will open them (Pillow), keeping the bytes as recorded."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass

import xxhash
from PIL import Image

MAX_IMAGE_BYTES = 16 << 20  # FPUS23 frames are ~0.1 MB: a file far larger is not a frame, and is not read


class CorruptImage(ValueError):
    pass


@dataclass(frozen=True)
class ImageInfo:
    format: str  # Pillow's format name, e.g. "PNG"
    width: int
    height: int
    mode: str
    size: int  # file size in bytes
    digest: str = ""  # "xxh3-128:<hex>" of the file's bytes, when read (a content identity, not a security check)


def inspect_image(data: bytes, verify: bool = True) -> ImageInfo:
    """Size and mode of an encoded image; `verify` also checks its integrity (every PNG chunk CRC;
    other formats are decoded), which catches truncated and bit-flipped files."""
    if not data:
        raise CorruptImage("empty file")
    try:
        with Image.open(io.BytesIO(data)) as image:
            info = ImageInfo(image.format or "?", image.width, image.height, image.mode, len(data))
            if verify and image.format == "PNG":
                image.verify()
            elif verify:
                image.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise CorruptImage(f"cannot be decoded: {error}") from None
    if info.width == 0 or info.height == 0:
        raise CorruptImage("image has zero width or height")
    return info


def read_checked(path: os.PathLike | str, verify: bool = True) -> tuple[bytes, ImageInfo]:
    """The file's bytes and what they hold, with their XXH3-128 digest (a tenth of SHA-256's cost, and
    collisions need intent); refuses a file over MAX_IMAGE_BYTES unread."""
    size = os.stat(path).st_size
    if size > MAX_IMAGE_BYTES:
        raise CorruptImage(f"file is {size:,} bytes, over {MAX_IMAGE_BYTES >> 20} MB: far larger than any ultrasound frame")
    with open(path, "rb") as fh:
        data = fh.read()
    info = inspect_image(data, verify)
    return data, ImageInfo(info.format, info.width, info.height, info.mode, info.size, "xxh3-128:" + xxhash.xxh3_128_hexdigest(data))

