"""Progress of long work: items done / total, items per second and the time left.

On a terminal a bar is redrawn in place; otherwise (a log file, a pipe, a captured subprocess) every update is
one line, e.g. ``images 3/14 (21%)  0.42 images/s  ETA 0:00:26  2007_000129.jpg``. Used by the evaluation hook
(:class:`fsa_seg.plugin.hooks.ImageProgressHook`: tools/test.py, --variants, sweeps, reproduce), the demo (crops)
and the text-embedding build (queries).
"""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional, TextIO


def format_duration(seconds: float) -> str:
    """``H:MM:SS``."""
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """``total`` items of work named ``label`` (plural, e.g. ``'images'``).

    ``update(n)`` after ``n`` more items are done; ``close()`` at the end (on a terminal it ends the bar's line).
    ``tty``: draw a bar (default: whether ``stream`` is a terminal). On a terminal the bar is redrawn at most every
    ``min_interval_s`` seconds (and always for the last item); the line per update is never skipped.
    """

    BAR_WIDTH = 24

    def __init__(self, total: int, label: str = "images", stream: Optional[TextIO] = None,
                 tty: Optional[bool] = None, min_interval_s: float = 0.2) -> None:
        self.total = max(0, int(total))
        self.label = label
        self.stream = stream if stream is not None else sys.stdout
        self.tty = bool(tty) if tty is not None else bool(getattr(self.stream, "isatty", lambda: False)())
        self.min_interval_s = min_interval_s
        self.done = 0
        self.start = time.perf_counter()
        self._drawn_at = 0.0
        self._open_line = False

    def rate(self) -> Optional[float]:
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if self.done and elapsed > 0 else None

    def text(self, note: str = "") -> str:
        """The status: ``label done/total (pct%)  rate label/s  ETA H:MM:SS  note``."""
        pct = f" ({100 * self.done // self.total}%)" if self.total else ""
        rate = self.rate()
        speed = f"{rate:.2f} {self.label}/s" if rate else f"-- {self.label}/s"
        left = self.total - self.done
        eta = format_duration(left / rate) if rate else "--:--:--"
        return f"{self.label} {self.done}/{self.total}{pct}  {speed}  ETA {eta}" + (f"  {note}" if note else "")

    def update(self, n: int = 1, note: str = "") -> None:
        self.done += int(n)
        self._show(note)

    def _show(self, note: str = "") -> None:
        if not self.tty:
            self.stream.write(self.text(note) + "\n")
            self.stream.flush()
            return
        now = time.perf_counter()
        if self.done < self.total and now - self._drawn_at < self.min_interval_s:
            return
        self._drawn_at = now
        filled = self.BAR_WIDTH * self.done // self.total if self.total else self.BAR_WIDTH
        bar = "#" * filled + "." * (self.BAR_WIDTH - filled)
        self.stream.write(f"\r[{bar}] {self.text(note)}\033[K")
        self.stream.flush()
        self._open_line = True

    def start_line(self, note: str = "") -> None:
        """Show the state before the first item (0 done)."""
        self._show(note)

    def close(self) -> None:
        if self._open_line:
            self.stream.write("\n")
            self.stream.flush()
            self._open_line = False


def progress_callback(label: str, stream: Optional[TextIO] = None, tty: Optional[bool] = None
                      ) -> Callable[[int, int], None]:
    """A ``callback(done, total)`` (as :func:`fsa_seg.sliding_window.slide_inference` calls it) that shows a
    :class:`Progress`; a new one starts whenever ``done`` goes back to 0 or ``total`` changes."""
    state = {"progress": None}

    def callback(done: int, total: int) -> None:
        progress = state["progress"]
        if progress is None or total != progress.total or done < progress.done:
            if progress is not None:
                progress.close()
            progress = state["progress"] = Progress(total, label, stream=stream, tty=tty)
            if done == 0:
                progress.start_line()
                return
        progress.update(done - progress.done)
        if done >= total:
            progress.close()

    return callback
