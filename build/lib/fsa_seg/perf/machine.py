"""How busy the machine is, so timings on a shared machine can be judged (and taken when it is quiet).

``/proc/stat`` gives the CPU time all processes used; subtracting this process's own CPU time over the
same interval leaves what *other* processes used, in cores (``0.0`` = the machine was ours alone,
``1.0`` = another process kept one core busy throughout).
"""
from __future__ import annotations

import os
import time
from typing import Optional, Tuple

_HZ = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def busy_seconds() -> Optional[float]:
    """CPU seconds all CPUs spent busy since boot (None without /proc/stat)."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    values = [int(x) for x in fields[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)        # idle + iowait
    total = sum(values[:8])                                         # guest time is already in user
    return (total - idle) / _HZ


class OtherLoad:
    """Average number of cores used by other processes between ``start()`` and ``stop()``."""

    def start(self) -> "OtherLoad":
        self._busy, self._own, self._wall = busy_seconds(), time.process_time(), time.perf_counter()
        return self

    def stop(self) -> Optional[float]:
        busy, own, wall = busy_seconds(), time.process_time(), time.perf_counter()
        if busy is None or self._busy is None or wall <= self._wall:
            return None
        return max(0.0, ((busy - self._busy) - (own - self._own)) / (wall - self._wall))


def format_cores(cores: Optional[float]) -> str:
    """An :class:`OtherLoad` figure for a report (``-``: not measurable here)."""
    return "-" if cores is None else f"{cores:.2f}"


def wait_quiet(max_wait_s: float, max_cores: float = 0.15, window_s: float = 1.0,
               windows: int = 3) -> Tuple[bool, float]:
    """Wait (up to ``max_wait_s``) until other processes use < ``max_cores`` for ``windows`` windows in a row.

    Returns ``(quiet, waited_seconds)``.
    """
    start = time.perf_counter()
    calm = 0
    while True:
        probe = OtherLoad().start()
        time.sleep(window_s)
        used = probe.stop()
        if used is None:
            return False, time.perf_counter() - start
        calm = calm + 1 if used < max_cores else 0
        if calm >= windows:
            return True, time.perf_counter() - start
        if time.perf_counter() - start >= max_wait_s:
            return False, time.perf_counter() - start
