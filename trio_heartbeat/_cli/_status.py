"""A one-line snapshot of a running server process, for operators and soak tests."""

from __future__ import annotations

import gc
import os
import sys

import trio

__all__ = ["process_status"]


def _count_tasks(task: trio.lowlevel.Task) -> int:
    return 1 + sum(
        _count_tasks(child)
        for nursery in task.child_nurseries
        for child in nursery.child_tasks
    )


def process_status() -> str:
    """``tasks=N fds=N rss_kib=N gc_frozen=N``: Trio tasks alive, open
    descriptors, resident memory, and objects kept out of garbage collections
    (``gc.freeze``). Descriptors and memory come from /proc and are left out
    elsewhere.

    Call it from inside ``trio.run``.
    """
    root = trio.lowlevel.current_root_task()
    assert root is not None, "process_status() runs inside trio.run"
    parts = [f"tasks={_count_tasks(root)}"]
    if sys.platform.startswith("linux"):
        parts.append(f"fds={len(os.listdir('/proc/self/fd')) - 1}")  # minus listdir's
        with open("/proc/self/statm") as statm:
            pages = int(statm.read().split()[1])
        parts.append(f"rss_kib={pages * os.sysconf('SC_PAGE_SIZE') // 1024}")
    parts.append(f"gc_frozen={gc.get_freeze_count()}")
    return " ".join(parts)
