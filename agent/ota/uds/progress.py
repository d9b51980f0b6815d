"""Helpers for ``FlashSession(progress=...)``: a terminal bar and a throttle for records.

The session calls ``progress(done, total)`` after every block (hundreds of times per
image); a bar redraws and a record goes out only when the whole percent changes.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TextIO


class ProgressBar:
    def __init__(self, label: str, stream: TextIO | None = None, width: int = 30):
        self.label = label
        self.stream = stream or sys.stderr
        self.width = width
        self._last = -1

    def __call__(self, done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        if percent == self._last:
            return
        self._last = percent
        filled = self.width * percent // 100
        bar = "#" * filled + "." * (self.width - filled)
        end = "\n" if done >= total else ""
        self.stream.write(f"\r{self.label} [{bar}] {percent:3d}% "
                          f"{done // 1024}/{total // 1024} KiB{end}")
        self.stream.flush()


class ProgressEvery:
    """Call ``sink(done, total, percent)`` each time ``step_percent`` more is done."""

    def __init__(self, sink: Callable[[int, int, int], None], step_percent: int = 10):
        self.sink = sink
        self.step = max(1, step_percent)
        self._next = 0

    def __call__(self, done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        if percent >= self._next or done >= total:
            self.sink(done, total, percent)
            self._next = (percent // self.step + 1) * self.step
