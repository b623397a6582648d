"""When this process may fork worker processes (the XML parsers, the image reader)."""
from __future__ import annotations

import multiprocessing
import threading


def fork_is_safe() -> bool:
    """Fork exists here, and this process runs no other thread that could hold a lock a child needs.

    tqdm's monitor thread is let be: a tqdm bar shown by any library (datasets, huggingface_hub)
    starts one that then lives on; it only sleeps and takes tqdm's own lock, which the children,
    reading files and parsing XML, never use.
    """
    if "fork" not in multiprocessing.get_all_start_methods() or threading.current_thread() is not threading.main_thread():
        return False
    return all(thread is threading.main_thread() or _is_tqdm_monitor(thread) for thread in threading.enumerate())


def _is_tqdm_monitor(thread: threading.Thread) -> bool:
    return type(thread).__name__ == "TMonitor" and type(thread).__module__.startswith("tqdm")
