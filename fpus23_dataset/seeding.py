"""Seeds derived from names, stable across processes and Python versions."""
from __future__ import annotations

import hashlib


def stable_seed(*parts: object) -> list[int]:
    """A seed sequence from strings and ints, stable across processes and Python versions."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=16).digest()
    return [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
