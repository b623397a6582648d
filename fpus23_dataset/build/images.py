"""Check image files the way a dataset reader will open them (Pillow), keeping the bytes as recorded."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass

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


def too_large(size: int) -> str | None:
    """Why a file of `size` bytes is not read, if it is not."""
    if size > MAX_IMAGE_BYTES:
        return f"file is {size:,} bytes, over {MAX_IMAGE_BYTES >> 20} MB: far larger than any ultrasound frame"
    return None


def read_checked(path: os.PathLike | str, verify: bool = True) -> tuple[bytes, ImageInfo]:
    """The file's bytes and what they hold; refuses a file over MAX_IMAGE_BYTES unread."""
    if reason := too_large(os.stat(path).st_size):
        raise CorruptImage(reason)
    with open(path, "rb") as fh:
        data = fh.read()
    return data, inspect_image(data, verify)

