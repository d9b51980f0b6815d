"""Signal freshness: ``signal.stale`` when a mapped signal times out, ``signal.restored``
when it comes back. A stale signal is unknown to every monitor, never its last value."""

from __future__ import annotations

from typing import Any

from agent.monitors.base import Monitor
from agent.timefmt import iso_ms


class FreshnessMonitor(Monitor):
    name = "freshness"

    def on_freshness(self, name: str, stale: bool, t: float, last_seen: float | None) -> None:
        data: dict[str, Any] = {"signal": name}
        if last_seen is not None:
            data["last_seen"] = iso_ms(self.ctx.utc(last_seen))
        if stale:
            self.emit("signal.stale", data, t)
        else:
            if last_seen is not None:
                data["gap_s"] = round(t - last_seen, 3)
            self.emit("signal.restored", data, t)

