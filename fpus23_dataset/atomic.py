"""Outputs that appear whole or not at all: build beside the target, then rename."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


def sibling_temp_dir(out: Path) -> Path:
    """An empty folder next to `out` (same filesystem, so a rename is atomic), with the usual permissions."""
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o777 & ~umask)  # mkdtemp makes it private; an output folder is not
    return temporary


@contextmanager
def replacing_dir(out: Path, marker: str) -> Iterator[Path]:
    """Write into a sibling temporary folder that replaces `out` only if the block completes.

    `out` must be absent or hold `marker` (a file name): a folder of the same kind, never anything else.
    On an exception the temporary folder is removed and `out` is left as it was.
    """
    out = Path(out)
    if out.exists() and not (out / marker).is_file():
        raise FileExistsError(f"{out}: exists and has no {marker}; refusing to replace it")
    temporary = sibling_temp_dir(out)
    try:
        yield temporary
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    temporary.rename(out)
