"""Time-based ring buffer of canonical signal changes (>= 30 s for accident records)."""

from __future__ import annotations

from collections import deque
from typing import Any


class SignalHistory:
    """Changes of every canonical signal over the last ``seconds``.

    Values hold until changed, so only changes are stored, plus the one change just before
    the window so the value at the window's start is known. ``max_samples`` bounds the
    memory of a signal that toggles faster than any real one should.
    """

    def __init__(self, seconds: float, max_samples: int):
        self.seconds = seconds
        self.max_samples = max_samples
        self._series: dict[str, deque[tuple[float, Any]]] = {}

    def add(self, name: str, t: float, value: Any) -> None:
        series = self._series.get(name)
        if series is None:
            series = self._series[name] = deque(maxlen=self.max_samples)
        series.append((t, value))

    def prune(self, now: float) -> None:
        horizon = now - self.seconds
        for series in self._series.values():
            while len(series) > 1 and series[1][0] <= horizon:
                series.popleft()

    def window(self, name: str, start: float, end: float) -> list[tuple[float, Any]]:
        """Samples in [start, end], led by the value in force at ``start`` (if known)."""
        series = self._series.get(name, ())
        out: list[tuple[float, Any]] = []
        before = None
        for t, v in series:
            if t < start:
                before = (t, v)
            elif t <= end:
                out.append((t, v))
        if before is not None:
            out.insert(0, before)
        return out

