"""Monitors: one state machine per concern, fed by canonical signal changes."""

from __future__ import annotations

from agent.monitors.base import Monitor, MonitorContext
from agent.monitors.freshness import FreshnessMonitor

ALL: list[type[Monitor]] = [
    FreshnessMonitor,
]

__all__ = ["ALL", "Monitor", "MonitorContext"]
