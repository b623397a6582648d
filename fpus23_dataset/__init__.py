"""fpus23_dataset: CVAT exports of the FPUS23 phantom dataset -> a versioned Hugging Face dataset."""
from __future__ import annotations

__version__ = "0.1.0"

from .load import load  # noqa: E402

__all__ = ["load", "__version__"]
