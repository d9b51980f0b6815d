"""Crash detection, once per pipeline: which signal changes are crashes, which belong to
the same crash, and whether the CDA was in use. The accident records (``accident.py``) and
the period statistics (``stats.py``) both read these crashes, so the event report can never
count a crash differently from the accident reports.

Triggers: airbag, irreversible restraint and VRU protection deployment, the crash output of
the restraint controller (rising edges from a known ``False``: a flag already latched when
the agent starts is an old crash, not a new one), and delta-V >= ``limits.delta_v_kmh``
within ``limits.delta_v_window_s`` from the longitudinal acceleration. Only the triggers the
mapping carries are watched.

One crash: a trigger while a crash's post-window is open joins it and moves the window's
end to that trigger + ``accident_after_s``, but never past the first trigger + (history
length - 1 s), so the whole window can still be read from the history buffer when it
closes. A delta-V crossing is dated where it happened (between two looks at a held
acceleration), and is looked for before a window is closed: a crossing inside the window
joins the crash even when it is found a tick later.

Listeners (``CrashListener``) hear of a crash when its triggers are announced (the triggers
of one frame together, at the frame's end) and when its post-window closes.

EDR marks (GB 39732-2020, ``Edr``): whether an event data recorder would have triggered on
this crash (Δv >= ``limits.edr_trigger_delta_v_kmh`` within ``limits.edr_window_s``,
longitudinal or lateral, or an irreversible restraint deployed) and **locked** it (airbag or
belt pretensioner deployed, or longitudinal Δv >= ``limits.edr_lock_delta_v_kmh`` within
the window), with time zero: the first instant at which the longitudinal Δv over the
``limits.edr_time_zero_window_s`` before it reaches ``limits.edr_time_zero_delta_v_kmh``
("the first point where 0.8 km/h of cumulative Δv is reached within 20 ms"). Δv is
the signed integral of the acceleration (the EDR's velocity change), not the |a| of the
delta-V accident trigger. Time zero needs the acceleration at least every 20 ms (the
message's cycle time, ``extras["signal_cycle_s"]``); else it is null and ``time_zero_basis``
says why. Computed on the crash when it is announced (``final`` false: what is known so
far) and again when its window closes, from ``EDR_LOOKBACK_S`` before the first trigger.
``not_evaluated`` names the inputs the marks could not use (a deployment flag the mapping
lacks, an acceleration unmapped or unknown around the crash): a false is only as good as
what was evaluated; with neither deployments nor a known longitudinal Δv the marks are
null.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.monitors.base import Monitor
from agent.monitors.settings import LimitsConfig
from agent.vehicle.state import VehicleState

log = logging.getLogger(__name__)

STATE = "Vehicle.ADAS.CDA.State"
FUNCTION = "Vehicle.ADAS.CDA.Function"
ACCEL = "Vehicle.Acceleration.Longitudinal"
ACCEL_LAT = "Vehicle.Acceleration.Lateral"
IN_USE = frozenset({"ACTIVE", "OVERRIDE", "MRM"})

# Flag triggers, most severe first (the order names the trigger of a same-instant group).
FLAG_TRIGGERS = {
    "Vehicle.Safety.Airbag.IsDeployed": "airbag",
    "Vehicle.Safety.Restraint.IsDeployed": "restraint",
    "Vehicle.Safety.VRUProtection.IsDeployed": "vru_protection",
    "Vehicle.Safety.CrashDetected": "crash_signal",
}
DELTA_V = "delta_v"
TRIGGER_ORDER = (*FLAG_TRIGGERS.values(), DELTA_V)
IRREVERSIBLE = frozenset({"airbag", "restraint"})   # GB 39732: a deployment locks the event
EDR_LOOKBACK_S = 1.0
"""The EDR marks look at the acceleration from this long before the first trigger: a
delta-V trigger is dated at the end of its window, a deployment some ms after time zero."""


@dataclass
class Trigger:
    kind: str
    t: float


class DeltaV:
    """Speed change within a sliding window: the integral of |a| over the last ``window_s``.

    The vehicle state holds a value until it changes, so |a| is piecewise constant and the
    sliding integral piecewise linear: evaluating it at its breakpoints finds every crossing
    exactly, whether the value changes every frame or holds for a whole crash pulse.
    """

    def __init__(self, window_s: float, threshold_kmh: float):
        self.w = window_s
        self.thr = threshold_kmh / 3.6              # m/s
        self.big = self.thr / window_s              # |a| needed somewhere to reach thr
        self.starts: deque[float] = deque()
        self.values: deque[float] = deque()
        self.checked: float | None = None
        self.above = False
        self.peak = 0.0                              # m/s, highest integral seen while above
        self.last_big: float | None = None           # end of the last |a| >= big stretch

    def _integral(self, s: float) -> float:
        lo = s - self.w
        total = 0.0
        n = len(self.starts)
        for i in range(n):
            start = self.starts[i]
            end = self.starts[i + 1] if i + 1 < n else math.inf
            overlap = min(end, s) - max(start, lo)
            if overlap > 0:
                total += self.values[i] * overlap
        return total

    def advance(self, now: float) -> float | None:
        """Examine (checked, now]; return the time of an upward crossing, if one happened."""
        prev = self.checked
        self.checked = now
        if prev is None or not self.starts or now <= prev:
            return None
        current_big = self.values[-1] >= self.big
        if not current_big and (self.last_big is None or self.last_big < prev - self.w):
            self.above = False                       # cannot reach the threshold: skip
            return None
        points = {now}
        for i, start in enumerate(self.starts):
            ends = (start, start + self.w)
            if i + 1 < len(self.starts):
                nxt = self.starts[i + 1]
                ends += (nxt, nxt + self.w)
            points.update(p for p in ends if prev < p < now)
        crossing = None
        f_prev = self._integral(prev)
        s_prev = prev
        for s in sorted(points):
            f = self._integral(s)
            if not self.above and f >= self.thr:
                self.above = True
                frac = (self.thr - f_prev) / (f - f_prev) if f > f_prev else 1.0
                if crossing is None:
                    crossing = s_prev + frac * (s - s_prev)
            elif self.above and f < self.thr:
                self.above = False
            if self.above:
                self.peak = max(self.peak, f)
            f_prev, s_prev = f, s
        return crossing

    def add(self, value: float | None, t: float) -> float | None:
        """The acceleration changed to ``value`` (None = unknown, counts as 0) at ``t``."""
        crossing = self.advance(t) if self.checked is not None else None
        self.checked = t
        a = abs(value) if value is not None and math.isfinite(value) else 0.0
        if self.values and self.values[-1] >= self.big:
            self.last_big = t
        self.starts.append(t)
        self.values.append(a)
        horizon = t - self.w
        while len(self.starts) > 1 and self.starts[1] <= horizon:
            self.starts.popleft()
            self.values.popleft()
        return crossing



def peak_delta_v_kmh(samples: list[list[Any]], window_s: float, end: float) -> float | None:
    """Highest speed change within ``window_s`` over ``[[t, a], ...]`` (for the record)."""
    if not samples:
        return None
    dv = DeltaV(window_s, 0.0)
    for t, a in samples:
        dv.add(a, t)
    dv.advance(end)
    return dv.peak * 3.6


class SignedDeltaV:
    """Velocity change over sliding windows: the signed integral of a held acceleration.

    The value holds until it changes, so the running integral C is piecewise linear and
    F(s) = C(s) - C(s - w) is linear between the sample times and those times + w: its
    extremes and first crossings are found exactly at those points."""

    def __init__(self, samples: list[tuple[float, Any]]):
        self.ts: list[float] = []
        self.vals: list[float] = []
        self.cum: list[float] = [0.0]
        for t, a in samples:
            v = float(a) if isinstance(a, (int, float)) and not isinstance(a, bool) \
                and math.isfinite(a) else 0.0            # unknown counts as 0, as DeltaV
            if self.ts:
                self.cum.append(self.cum[-1] + self.vals[-1] * (t - self.ts[-1]))
            self.ts.append(float(t))
            self.vals.append(v)

    def integral(self, s: float) -> float:
        i = bisect.bisect_right(self.ts, s) - 1
        if i < 0:
            return 0.0
        return self.cum[i] + self.vals[i] * (s - self.ts[i])

    def window(self, s: float, w: float) -> float:
        return self.integral(s) - self.integral(s - w)

    def _points(self, w: float, start: float, end: float) -> list[float]:
        pts = {start, end}
        pts.update(p for t in self.ts for p in (t, t + w) if start < p < end)
        return sorted(pts)

    def peak(self, w: float, start: float, end: float) -> float:
        """Largest |Δv| (m/s) over windows of ``w`` ending in [start, end]."""
        if not self.ts or end < start:
            return 0.0
        return max(abs(self.window(s, w)) for s in self._points(w, start, end))

    def first_reach(self, threshold: float, w: float, start: float, end: float
                    ) -> float | None:
        """The first end s in [start, end] of a window of ``w`` with |Δv| >= threshold."""
        if not self.ts or end < start:
            return None
        prev_s: float | None = None
        prev_f = 0.0
        for s in self._points(w, start, end):
            f = self.window(s, w)
            if abs(f) >= threshold:
                if prev_s is None or abs(prev_f) >= threshold:
                    return s
                target = threshold if f > 0 else -threshold
                return prev_s + (target - prev_f) / (f - prev_f) * (s - prev_s)
            prev_s, prev_f = s, f
        return None


@dataclass
class Edr:
    """What an event data recorder (GB 39732) would have made of a crash; times are data
    time. None where the signals cannot tell (no acceleration and no deployment)."""

    triggered: bool | None
    locked: bool | None
    trigger_reasons: list[str]
    lock_reasons: list[str]
    delta_v_x_kmh: float | None
    delta_v_y_kmh: float | None
    time_zero: float | None
    time_zero_basis: str
    acceleration_cycle_s: float | None
    final: bool
    not_evaluated: list[str] = field(default_factory=list)   # unmapped / unknown inputs


def edr_marks(state: VehicleState, limits: LimitsConfig, crash: Crash, end: float,
              cycles: dict[str, Any], *, final: bool) -> Edr:
    """The EDR trigger, lock and time zero of ``crash`` from its history up to ``end``."""
    start = crash.first - EDR_LOOKBACK_S
    w = limits.edr_window_s
    deployed = [k for k in TRIGGER_ORDER if k in IRREVERSIBLE
                and any(x.kind == k for x in crash.triggers)]
    trig = limits.edr_trigger_delta_v_kmh / 3.6
    lock = limits.edr_lock_delta_v_kmh / 3.6
    triggers: list[str] = [f"{k}_deployed" for k in deployed]
    locks: list[str] = [f"{k}_deployed" for k in deployed]
    dv: dict[str, float | None] = {}
    for name, key in ((ACCEL, "x"), (ACCEL_LAT, "y")):
        samples = _held(state, name, start - w, end) if state.mapped(name) else []
        # mapped but never known around the crash (stale, not yet sent): cannot tell
        dv[key] = SignedDeltaV(samples).peak(w, start, end) if _known(samples) else None
    if dv["x"] is not None and dv["x"] >= trig or dv["y"] is not None and dv["y"] >= trig:
        triggers.append("delta_v")
    if dv["x"] is not None and dv["x"] >= lock:
        locks.append("delta_v_x")
    known = dv["x"] is not None or bool(deployed)
    cycle = cycles.get(ACCEL)
    cycle = float(cycle) if isinstance(cycle, (int, float)) and cycle > 0 else None
    time_zero, basis = _time_zero(state, limits, start, end, cycle)
    return Edr(
        triggered=bool(triggers) if known or triggers else None,
        locked=bool(locks) if dv["x"] is not None or locks else None,
        trigger_reasons=triggers, lock_reasons=locks,
        delta_v_x_kmh=None if dv["x"] is None else round(dv["x"] * 3.6, 2),
        delta_v_y_kmh=None if dv["y"] is None else round(dv["y"] * 3.6, 2),
        time_zero=time_zero, time_zero_basis=basis, acceleration_cycle_s=cycle, final=final,
        not_evaluated=[f"{k}_deployed" for n, k in FLAG_TRIGGERS.items()
                       if k in IRREVERSIBLE and not state.mapped(n)]
        + [f"delta_v_{key}" for key in ("x", "y") if dv[key] is None])


def _known(samples: list[tuple[float, Any]]) -> bool:
    return any(isinstance(v, (int, float)) and not isinstance(v, bool) for _, v in samples)


def _held(state: VehicleState, name: str, start: float, end: float) -> list[tuple[float, Any]]:
    """The history of ``name`` in [start, end], the value in force at ``start`` first."""
    samples = state.history.window(name, start, end)
    return [(max(t, start), v) for t, v in samples]


def _time_zero(state: VehicleState, limits: LimitsConfig, start: float, end: float,
               cycle: float | None) -> tuple[float | None, str]:
    w = limits.edr_time_zero_window_s
    if not state.mapped(ACCEL):
        return None, "longitudinal acceleration not mapped"
    if cycle is None:
        return None, "cycle time of the longitudinal acceleration unknown (no GenMsgCycleTime)"
    if cycle > w + 1e-9:
        return None, (f"longitudinal acceleration every {cycle * 1000:g} ms, coarser than "
                      f"the {w * 1000:g} ms of the time-zero rule")
    samples = _held(state, ACCEL, start - w, end)
    if not _known(samples):
        return None, "no longitudinal acceleration known around the crash"
    series = SignedDeltaV(samples)
    reached = series.first_reach(limits.edr_time_zero_delta_v_kmh / 3.6, w, start, end)
    if reached is None:
        return None, (f"longitudinal delta-V never reached {limits.edr_time_zero_delta_v_kmh:g} "
                      f"km/h within {w * 1000:g} ms")
    return reached, (f"first instant the longitudinal delta-V over the {w * 1000:g} ms "
                     f"before reached {limits.edr_time_zero_delta_v_kmh:g} km/h")


class CrashTriggers:
    """Turns signal changes into crash triggers: rising edges of the flags, delta-V
    crossings."""

    def __init__(self, state: VehicleState, limits: LimitsConfig):
        self.flags = {n: k for n, k in FLAG_TRIGGERS.items() if state.mapped(n)}
        self.delta_v = (DeltaV(limits.delta_v_window_s, limits.delta_v_kmh)
                        if state.mapped(ACCEL) else None)
        self.known_false: dict[str, bool] = dict.fromkeys(self.flags, False)
        self.seen: set[str] = set()

    @property
    def available(self) -> list[str]:
        kinds = list(self.flags.values()) + ([DELTA_V] if self.delta_v is not None else [])
        return [k for k in TRIGGER_ORDER if k in kinds]

    @property
    def unavailable(self) -> list[str]:
        return [k for k in TRIGGER_ORDER if k not in self.available]

    @property
    def watches(self) -> tuple[str, ...]:
        return (*FLAG_TRIGGERS, ACCEL)

    def on_signal(self, name: str, value: Any, t: float) -> Trigger | None:
        if name == ACCEL:
            if self.delta_v is None:
                return None
            at = self.delta_v.add(value, t)
            return None if at is None else Trigger(DELTA_V, at)
        kind = self.flags.get(name)
        if kind is None:
            return None
        if value is True:
            fired = self.known_false[name]
            self.known_false[name] = False
            if fired:
                return Trigger(kind, t)
            if name not in self.seen:
                log.warning("%s is already set when first seen: an earlier crash, "
                            "not a trigger", name)
        elif value is False:
            self.known_false[name] = True
        if value is not None:
            self.seen.add(name)
        return None   # None (stale) keeps what was last known

    def advance(self, t: float) -> Trigger | None:
        if self.delta_v is None:
            return None
        at = self.delta_v.advance(t)
        return None if at is None else Trigger(DELTA_V, at)


class InUse:
    """When the CDA was last in use (State ACTIVE/OVERRIDE/MRM), for the 5 s / 30 s flags.

    Leaving the set for an unknown (stale) state counts as the last moment known in use.
    """

    def __init__(self) -> None:
        self.since: float | None = None     # in use now, since
        self.last: float | None = None      # last left the in-use set
        self.function: str | None = None    # function while last in use

    def on_state(self, value: Any, t: float, function: Any) -> None:
        if value in IN_USE:
            if self.since is None:
                self.since = t
            self.function = function or self.function
        elif self.since is not None:
            self.since = None
            self.last = t

    def on_function(self, value: Any) -> None:
        if self.since is not None and value is not None:
            self.function = value

    def within(self, t: float, lookback: float) -> bool:
        return self.since is not None or (self.last is not None and self.last >= t - lookback)

    def seconds_since(self, t: float) -> float | None:
        if self.since is not None:
            return 0.0
        return None if self.last is None else t - self.last


class CrashGrouper:
    """Several triggers of one crash are one accident: a trigger before the open accident's
    post-window closed joins it."""

    def __init__(self, after_s: float, max_span_s: float):
        self.after_s = after_s
        self.max_span_s = max_span_s
        self.first: float | None = None
        self.close: float | None = None

    def offer(self, t: float) -> bool:
        """True if ``t`` starts a new accident, False if it joins the open one."""
        if self.first is not None and self.close is not None and t <= self.close:
            self.close = min(max(self.close, t + self.after_s), self.first + self.max_span_s)
            return False
        self.first = t
        self.close = t + self.after_s
        return True

    def due(self, t: float) -> bool:
        return self.close is not None and t >= self.close

    def end(self) -> None:
        self.first = self.close = None


@dataclass
class Crash:
    """One crash: its first trigger's time and its triggers, one per kind, in firing order."""

    first: float
    triggers: list[Trigger] = field(default_factory=list)
    announced: bool = False          # listeners have heard of it
    edr: Edr | None = None           # the EDR marks, as of the last announcement / the close


class CrashListener(Protocol):
    def on_crash_triggers(self, crash: Crash, fresh: list[Trigger], now: float) -> None:
        """``fresh`` triggers of ``crash`` (all of one instant or frame); ``crash.announced``
        is False the first time."""

    def on_crash_closed(self, crash: Crash, end: float, complete: bool, now: float) -> None:
        """The post-window closed at ``end`` (``complete``), or the input stopped first."""


class CrashMonitor(Monitor):
    """The one crash computation of a pipeline; monitors that need crashes list it in
    ``uses`` and ``listen``. Emits no records itself."""

    name = "crash"
    inputs = ()                                          # works with whatever is mapped
    watches = (*FLAG_TRIGGERS, ACCEL, STATE, FUNCTION)
    tick_s = 0.05

    def __init__(self, ctx: Any):
        super().__init__(ctx)
        self.triggers = CrashTriggers(ctx.state, ctx.limits)
        self.in_use = InUse()
        after = ctx.limits.accident_after_s
        self.grouper = CrashGrouper(after, max(after, ctx.state.history.seconds - 1.0))
        self.crash: Crash | None = None
        self.pending: list[Trigger] = []                 # fired, not yet announced
        self.listeners: list[CrashListener] = []
        self.ticks = 0                                   # on_tick calls so far

    def listen(self, listener: CrashListener) -> None:
        self.listeners.append(listener)

    @property
    def max_span_s(self) -> float:
        return self.grouper.max_span_s

    # -- lifecycle -----------------------------------------------------------------------
    def stop(self, t: float) -> None:
        self._fire(self.triggers.advance(t))
        self._announce(t)
        if self.crash is not None:
            due = self.grouper.due(t)
            self._close((self.grouper.close or t) if due else t, complete=due, now=t)

    # -- input ---------------------------------------------------------------------------
    def on_signal(self, name: str, value: Any, t: float) -> None:
        if name == STATE:
            self.in_use.on_state(value, t, self.value(FUNCTION))
        elif name == FUNCTION:
            self.in_use.on_function(value)
        self._step(t)
        self._fire(self.triggers.on_signal(name, value, t))

    def on_frame_end(self, t: float) -> None:
        """Triggers of one frame are complete: announce them now, not at the next tick."""
        if self.pending:
            self._announce(t)

    def on_tick(self, t: float) -> None:
        self.ticks += 1
        self._step(t)

    # -- core ----------------------------------------------------------------------------
    def _step(self, t: float) -> None:
        """Up to ``t``: a delta-V crossing first (it may lie inside the open window), then
        the triggers of earlier instants (same-frame triggers are grouped first), then the
        post-window if it is due."""
        self._fire(self.triggers.advance(t))
        if self.pending and t > self.pending[0].t:
            self._announce(t)
        if self.crash is not None and self.grouper.due(t) and not self.pending:
            self._close(self.grouper.close or t, complete=True, now=t)

    def _fire(self, trig: Trigger | None) -> None:
        if trig is None:
            return
        if self.grouper.offer(trig.t):
            if self.crash is not None:               # a late close: finish the old one first
                self._close(trig.t, complete=True, now=trig.t)
                self.grouper.offer(trig.t)
            self.crash = Crash(first=trig.t)
        crash = self.crash
        assert crash is not None
        if any(x.kind == trig.kind for x in crash.triggers):
            return                                   # e.g. a flag that toggled: listed once
        crash.triggers.append(trig)
        self.pending.append(trig)

    def _announce(self, now: float) -> None:
        crash = self.crash
        if not self.pending or crash is None:
            self.pending = []
            return
        fresh, self.pending = self.pending, []
        crash.edr = self._edr(crash, now, final=False)
        for listener in self.listeners:
            listener.on_crash_triggers(crash, fresh, now)
        crash.announced = True

    def _close(self, end: float, *, complete: bool, now: float) -> None:
        """Every crash that opened is announced before it closes."""
        if self.pending:
            self._announce(now)
        crash, self.crash = self.crash, None
        self.grouper.end()
        if crash is None:
            return
        crash.edr = self._edr(crash, end, final=True)
        for listener in self.listeners:
            listener.on_crash_closed(crash, end, complete, now)

    def _edr(self, crash: Crash, end: float, *, final: bool) -> Edr:
        cycles = self.ctx.extras.get("signal_cycle_s")
        return edr_marks(self.state, self.limits, crash, end,
                         cycles if isinstance(cycles, dict) else {}, final=final)
