"""Outputs that appear whole or not at all: build beside the target, then rename."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def sibling_temp_dir(out: Path) -> Path:
    """An empty folder next to `out` (same filesystem, so a rename is atomic), with the usual permissions."""
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o777 & ~umask)  # mkdtemp makes it private; an output folder is not
    return temporary
