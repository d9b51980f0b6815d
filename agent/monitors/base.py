"""What every monitor is: a small state machine fed by canonical signal changes and a tick.

Monitors know nothing of buses, DBCs, journals or MQTT. They see a ``MonitorContext``:
the vehicle state, the limits, the vehicle config, a clock in data time (trace time
offline, monotonic time live) and ``emit()``. The same code runs live and offline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from agent.config import VehicleConfig
    from agent.monitors.settings import LimitsConfig
    from agent.vehicle.state import VehicleState


@dataclass
class MonitorContext:
    state: VehicleState
    limits: LimitsConfig
    vehicle: VehicleConfig
    emit: Callable[[str, dict[str, Any], float], None]
    """emit(type, data, t): one record of ``type`` for an event that happened at ``t``."""
    persist: Callable[[str, Any], None]
    """persist(key, value): durable small state, committed with the next records."""
    load: Callable[[str, Any], Any]
    """load(key, default): state persisted by an earlier run."""
    utc: Callable[[float], float]
    """utc(t): epoch seconds (UTC) of data time ``t``, for calendar logic and timestamps."""
    extras: dict[str, Any]
    """Shared facts other parts provide (e.g. ``software_versions`` from the ECU inventory)."""
    monitors: dict[type[Monitor], Monitor] = field(default_factory=dict)
    """The pipeline's monitors by class, one each: how a monitor finds one it ``uses``."""


class Monitor:
    """Base class. Subclasses set ``name``, ``inputs`` (needed: the monitor stays off if any
    is unmapped), ``watches`` (changes delivered to ``on_signal``) and ``uses`` (monitors
    whose results this one reads: the pipeline runs one of each, before this one)."""

    name: ClassVar[str] = "monitor"
    inputs: ClassVar[tuple[str, ...]] = ()
    watches: ClassVar[tuple[str, ...]] = ()
    tick_s: ClassVar[float | None] = None     # on_tick period in data time; None = never
    uses: ClassVar[tuple[type[Monitor], ...]] = ()

    def __init__(self, ctx: MonitorContext):
        self.ctx = ctx
        self.state = ctx.state
        self.limits = ctx.limits

    def start(self, t: float) -> None:
        """Called once with the first data time, after restoring persisted state."""

    def on_signal(self, name: str, value: Any, t: float) -> None:
        """A watched signal changed to ``value`` (None = unknown/stale) at ``t``."""

    def on_freshness(self, name: str, stale: bool, t: float, last_seen: float | None) -> None:
        """A mapped signal went stale or came back (only monitors that override it)."""

    def on_tick(self, t: float) -> None:
        """Periodic call in data time (every ``tick_s``)."""

    def on_frame_end(self, t: float) -> None:
        """All changes carried by one frame were delivered (only monitors that override it):
        the place to act on several signals of the same instant at once, without delay."""

    def stop(self, t: float) -> None:
        """End of input (trace end or service stop): persist what must survive."""

    def emit(self, type_: str, data: dict[str, Any], t: float) -> None:
        self.ctx.emit(type_, data, t)

    def value(self, name: str, default: Any = None) -> Any:
        return self.state.value(name, default)

    def used(self, cls: type[M]) -> M:
        """The pipeline's one ``cls`` monitor (listed in ``uses``)."""
        m = self.ctx.monitors.get(cls)
        if not isinstance(m, cls):
            raise RuntimeError(f"{type(self).__name__} uses {cls.__name__}, which the "
                               f"pipeline did not start first")
        return m


M = TypeVar("M", bound=Monitor)


class CountedMonitor(Monitor):
    """A monitor whose findings the period statistics count: the statistics ``use`` it and
    register with ``on_count``, so a count and its record come from one decision."""

    def __init__(self, ctx: MonitorContext):
        super().__init__(ctx)
        self._counters: list[Callable[[str, float], None]] = []

    def on_count(self, fn: Callable[[str, float], None]) -> None:
        self._counters.append(fn)

    def count(self, key: str, t: float) -> None:
        for fn in self._counters:
            fn(key, t)


def finite(value: float, digits: int = 3) -> float | None:
    """Round for records; NaN/inf (a sensor glitch) become None rather than a bad record."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)
