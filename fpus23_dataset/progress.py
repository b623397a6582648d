"""The progress bar of every long job in fpus23."""
from __future__ import annotations

from tqdm.auto import tqdm as _tqdm


class tqdm(_tqdm):  # noqa: N801 - a drop-in for tqdm.auto.tqdm
    """tqdm without its monitor thread, which every bar would start, shown or not, and which then lives
    on: the builder forks worker processes, which is safe only while the process runs no other thread."""

    monitor_interval = 0
