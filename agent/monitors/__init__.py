"""Monitors: one state machine per concern, fed by canonical signal changes."""

from __future__ import annotations

from agent.monitors.accident import AccidentMonitor
from agent.monitors.base import Monitor, MonitorContext
from agent.monitors.cda import CdaSessionMonitor
from agent.monitors.disengagement import EyesOffMonitor, HandsOffMonitor
from agent.monitors.freshness import FreshnessMonitor
from agent.monitors.instructions import InstructionsMonitor
from agent.monitors.lockout import LockoutMonitor
from agent.monitors.mrm import MrmMonitor
from agent.monitors.safety import AebAvailabilityMonitor, AebMonitor, ElkMonitor, FcwMonitor
from agent.monitors.stats import PeriodStatsMonitor

ALL: list[type[Monitor]] = [
    FreshnessMonitor,
    CdaSessionMonitor,
    HandsOffMonitor,
    EyesOffMonitor,
    MrmMonitor,
    LockoutMonitor,
    AebMonitor,
    ElkMonitor,
    FcwMonitor,
    AebAvailabilityMonitor,
    InstructionsMonitor,
    AccidentMonitor,
    PeriodStatsMonitor,
]

__all__ = ["ALL", "Monitor", "MonitorContext"]
