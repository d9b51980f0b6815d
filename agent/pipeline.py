"""The one pipeline: frames -> decoder -> vehicle state -> monitors -> records.

Live (``agent.service``) and offline (``icv-agent analyze``) build the same ``Pipeline``;
only the source of frames and the clock differ. Data time ``t`` is trace time offline and
``time.monotonic()`` live; ``TimeBase`` turns it into UTC for records and calendars.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from agent.config import AgentConfig
from agent.ingest.decoder import FrameDecoder, MessageState, Silence
from agent.monitors.base import Monitor, MonitorContext
from agent.vehicle.history import SignalHistory
from agent.vehicle.state import VehicleState

log = logging.getLogger(__name__)

TICK_S = 0.05


class TimeBase:
    """Data time -> UTC epoch seconds. Offline the trace carries epoch time; live the
    monotonic clock is offset by the wall clock *now*, so a wall-clock jump moves
    timestamps but never stretches a duration."""

    def __init__(self, source: str):
        self.source = source   # "trace" or "system"

    def utc(self, t: float) -> float:
        if self.source == "trace":
            return t
        return t + (time.time() - time.monotonic())


class Sink(Protocol):
    def record(self, type_: str, data: dict[str, Any], t: float) -> None: ...
    def persist(self, key: str, value: Any) -> None: ...
    def load(self, key: str, default: Any = None) -> Any: ...
    def flush(self) -> None: ...


class Pipeline:
    def __init__(self, cfg: AgentConfig, sink: Sink, timebase: TimeBase,
                 monitor_classes: Iterable[type[Monitor]], *,
                 extras: dict[str, Any] | None = None,
                 on_change: Callable[[str, Any, float], None] | None = None):
        self.cfg = cfg
        self.sink = sink
        self.timebase = timebase
        self.decoders = [FrameDecoder(setup) for setup in cfg.buses]
        ranks: dict[str, int] = {}
        cycles: dict[str, float | None] = {}    # the slowest DBC cycle time of each signal
        for setup in cfg.buses:
            for plan in setup.plans.values():
                for b in plan.bindings:
                    ranks[b.canonical] = max(ranks.get(b.canonical, 0), b.rank + 1)
                    old = cycles.get(b.canonical, 0.0)
                    cycles[b.canonical] = (None if old is None or plan.cycle_s is None
                                           else max(old, plan.cycle_s))
        self.history = SignalHistory(cfg.history.seconds, cfg.history.max_samples_per_signal)
        self.state = VehicleState(ranks, self.history, on_freshness=self._on_freshness)
        self.ctx = MonitorContext(
            state=self.state, limits=cfg.limits, vehicle=cfg.vehicle, emit=sink.record,
            persist=sink.persist, load=sink.load, utc=timebase.utc, extras=extras or {})
        self.ctx.extras.setdefault("signal_cycle_s", cycles)     # EDR time zero (crash.py)
        self.monitors: list[Monitor] = []
        self.off: dict[str, list[str]] = {}
        for cls in monitor_classes:
            missing = [s for s in cls.inputs if not self.state.mapped(s)]
            if missing:
                self.off[cls.name] = missing
                continue
            self._add(cls)
        self._watchers: dict[str, list[Callable[[str, Any, float], None]]] = {}
        for m in self.monitors:
            for name in m.watches:
                self._watchers.setdefault(name, []).append(m.on_signal)
        if on_change is not None:
            for name in ranks:
                self._watchers.setdefault(name, []).append(on_change)
        self._fresh = [m for m in self.monitors
                       if type(m).on_freshness is not Monitor.on_freshness]
        self._frame_end = [m.on_frame_end for m in self.monitors
                           if type(m).on_frame_end is not Monitor.on_frame_end]
        self._ticking = [(m, m.tick_s) for m in self.monitors if m.tick_s]
        self._next_tick: list[float] = []
        self.started_at: float | None = None
        self.now: float | None = None
        self._next_housekeeping = 0.0

    def _add(self, cls: type[Monitor]) -> Monitor:
        """One monitor of ``cls``, after those it uses (one of each per pipeline: a crash is
        computed once, however many monitors read it)."""
        m = self.ctx.monitors.get(cls)
        if m is None:
            for dep in cls.uses:
                self._add(dep)
            m = self.ctx.monitors[cls] = cls(self.ctx)
            self.monitors.append(m)
        return m

    # -- lifecycle ---------------------------------------------------------------------
    def start(self, t: float) -> None:
        self.started_at = self.now = t
        for name, missing in self.off.items():
            log.warning("monitor %s is off: unmapped inputs %s", name, ", ".join(missing))
            self.sink.record("agent.monitor_off", {"monitor": name, "missing": missing}, t)
        for m in self.monitors:
            m.start(t)
        self._next_tick = [t + period for _, period in self._ticking]
        self._next_housekeeping = t + TICK_S
        self.sink.flush()

    def stop(self, t: float | None = None) -> None:
        t = self.now if t is None else t
        if t is None:
            return
        for m in self.monitors:
            m.stop(t)
        self.sink.flush()

    # -- data --------------------------------------------------------------------------
    def feed(self, bus_index: int, msg: Any, t: float) -> None:
        if self.started_at is None:
            self.start(t)
        if t >= self._next_housekeeping:
            self.advance(t)
        if msg.__class__ is Silence:
            ms = self.decoders[bus_index].silent(msg.key, t)
            if ms is not None:
                self._expire(ms, t)
                self.sink.flush()
            return
        updates = self.decoders[bus_index].decode(msg, t)
        if updates:
            self.now = t
            apply = self.state.apply
            watchers = self._watchers
            changed = False
            for binding, value in updates:
                slot = apply(binding, value, t)
                if slot is not None and slot.name in watchers:
                    changed = True
                    for fn in watchers[slot.name]:
                        fn(slot.name, slot.value, t)
            if changed:
                for fn in self._frame_end:
                    fn(t)
            self.sink.flush()

    def advance(self, t: float) -> None:
        """Move data time to ``t``: freshness, history pruning and monitor ticks. Called by
        ``feed`` at most every TICK_S of data time, and by the live loop when idle."""
        if self.started_at is None:
            self.start(t)
        self.now = t
        self._next_housekeeping = t + TICK_S
        for dec in self.decoders:
            for ms in dec.expired(t):
                self._expire(ms, t)
        for i, (m, period) in enumerate(self._ticking):
            if t >= self._next_tick[i]:
                self._next_tick[i] = t + period
                m.on_tick(t)
        self.history.prune(t)
        self.sink.flush()

    def _expire(self, ms: MessageState, t: float) -> None:
        for b in ms.plan.bindings:
            slot = self.state.expire(b, t, ms.seen)
            if slot is not None:
                for fn in self._watchers.get(slot.name, ()):
                    fn(slot.name, None, t)

    def _on_freshness(self, name: str, stale: bool, t: float, last_seen: float | None) -> None:
        for m in self._fresh:
            m.on_freshness(name, stale, t, last_seen)
