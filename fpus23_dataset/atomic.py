"""Outputs that appear whole or not at all: written beside the target, then renamed into place.

A reader never sees half a file or half a build, and a failure leaves an earlier output intact.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .errors import UserError


class OutputExistsError(UserError, FileExistsError):
    """The target exists and is not something we may replace."""


def check_replaceable(out: Path | str, marker: str | None = None) -> None:
    """Raise OutputExistsError unless `replacing_dir(out, marker)` may replace `out` (see there)."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise OutputExistsError(f"{out}: exists and is not a folder; choose another output path")
        if any(out.iterdir()) and (marker is None or not (out / marker).is_file()):
            what = "already exists" if marker is None else f"exists and is not an earlier output (no {marker})"
            raise OutputExistsError(f"{out}: {what}; choose a new folder or remove it")


@contextmanager
def replacing_dir(out: Path | str, marker: str | None = None) -> Iterator[Path]:
    """Yield an empty sibling folder of `out` that replaces `out` only if the block completes.

    `out` may be absent, an empty folder, or (given `marker`) a folder holding the file `marker`: an
    earlier output of the same kind.
    """
    out = Path(out).absolute()
    check_replaceable(out, marker)
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o777 & ~umask)  # mkdtemp makes it private; an output folder is not
    try:
        yield temporary
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(temporary, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


@contextmanager
def replacing_file(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `path`; renamed to `path` only if the block completes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.part-{os.getpid()}")
    try:
        yield temporary
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
