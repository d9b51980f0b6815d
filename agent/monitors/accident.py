"""Accidents (Att.3 一): ``accident.trigger`` at once, ``accident.record`` when the post-window
closes.

Triggers: airbag, irreversible restraint and VRU protection deployment, the crash output of
the restraint controller (rising edges from a known ``False``: a flag already latched when
the agent starts is an old crash, not a new one), and delta-V >= ``limits.delta_v_kmh``
within ``limits.delta_v_window_s`` from the longitudinal acceleration. The monitor needs no
input: it uses the triggers the mapping carries and says once at start which it lacks.

One crash, one accident: a trigger while an accident's post-window is open joins it and
moves the window's end to that trigger + ``accident_after_s``, but never past the first
trigger + (history length - 1 s), so the whole window can still be read from the history
buffer when it closes. The 30 s before the first trigger are copied out of the history at
once and persisted with the ``accident.trigger`` record, so a power cut in the crash still
leaves a (``complete: false``) record with the pre-crash data after the restart.
"""

from __future__ import annotations

import bisect
import logging
import math
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from agent.monitors.base import Monitor
from agent.monitors.settings import LimitsConfig
from agent.signals import CATALOGUE
from agent.timefmt import iso_ms
from agent.vehicle.state import VehicleState

log = logging.getLogger(__name__)

STATE = "Vehicle.ADAS.CDA.State"
FUNCTION = "Vehicle.ADAS.CDA.Function"
SPEED = "Vehicle.Speed"
ODOMETER = "Vehicle.TraveledDistance"
LAT = "Vehicle.CurrentLocation.Latitude"
LON = "Vehicle.CurrentLocation.Longitude"
ACCEL = "Vehicle.Acceleration.Longitudinal"
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
DEPLOYMENTS = frozenset({"airbag", "restraint", "vru_protection"})   # injury possible: 24 h
DEADLINE_INJURY_S = 24 * 3600.0
DEADLINE_OTHER_S = 48 * 3600.0
ACCIDENT_NS = uuid.uuid5(uuid.NAMESPACE_URL, "icv-agent:accident")
OPEN_KEY = "accident.open"

SYSTEM_SIGNALS = (STATE, FUNCTION, "Vehicle.ADAS.CDA.ExitReason", "Vehicle.ADAS.CDA.WarningLevel",
                  "Vehicle.ADAS.CDA.WarningModality", "Vehicle.ADAS.CDA.OddStatus",
                  "Vehicle.ADAS.CDA.FaultCode", "Vehicle.ADAS.AEB.IsEngaged",
                  "Vehicle.ADAS.ELK.IsEngaged", "Vehicle.ADAS.FCW.IsWarning",
                  "Vehicle.Driver.IsHandsOnWheel", "Vehicle.Driver.IsEyesOnRoad",
                  "Vehicle.Driver.Monitoring.IsAvailable")
VEHICLE_SIGNALS = tuple(n for n in CATALOGUE if n not in SYSTEM_SIGNALS)

# Att.3 一 items only people or the backend can fill: carried as typed empty fields.
PEOPLE_FIELDS = (
    "basic.casualties", "basic.description", "basic.accident_type",
    "vehicle.edr_data", "vehicle.recall_and_maintenance_records",
    "vehicle.technical_service_activities", "vehicle.recall_activities",
    "vehicle.model_fleet_total_km", "vehicle.model_fleet_accident_count",
    "details.cctv_video", "details.dvr_data", "details.road", "details.signs_and_markings",
    "details.weather", "details.participants", "details.casualties",
    "details.cause_first_judgement", "cause.cda_relevance", "cause.analysis",
    "cause.planned_improvements", "photos",
)


def plain(value: Any) -> Any:
    """A signal value as records carry it: floats to 7 decimals (GNSS needs them)."""
    if isinstance(value, float):
        return round(value, 7) if math.isfinite(value) else None
    return value


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


class CrashTriggers:
    """Turns signal changes into accident triggers; shared by the accident and statistics
    monitors so both see the same crashes."""

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


DEADLINE_SLACK_S = 1.0


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
class Accident:
    id: str
    first: float
    triggers: list[Trigger] = field(default_factory=list)
    deadline_utc: float = 0.0
    announced: bool = False
    skeleton: dict[str, Any] = field(default_factory=dict)


class AccidentMonitor(Monitor):
    name = "accident"
    inputs = ()                                          # works with whatever is mapped
    watches = (*FLAG_TRIGGERS, ACCEL, STATE, FUNCTION)
    tick_s = 0.05

    def __init__(self, ctx: Any):
        super().__init__(ctx)
        self.triggers = CrashTriggers(ctx.state, ctx.limits)
        self.in_use = InUse()
        history = ctx.state.history
        self.grouper = CrashGrouper(ctx.limits.accident_after_s,
                                    max(ctx.limits.accident_after_s, history.seconds - 1.0))
        self.accident: Accident | None = None
        self.pending: list[Trigger] = []                 # fired, not yet announced
        self._save_due: Accident | None = None           # pre-window to persist next tick
        self.started_at: float | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, t: float) -> None:
        self.started_at = t
        unavailable = self.triggers.unavailable
        if unavailable:
            missing = [n for n, k in FLAG_TRIGGERS.items() if k in unavailable]
            if DELTA_V in unavailable:
                missing.append(ACCEL)
            log.warning("accident triggers unavailable (unmapped): %s", ", ".join(unavailable))
            self.emit("agent.monitor_degraded",
                      {"monitor": self.name, "missing": missing, "unavailable": unavailable,
                       "available": self.triggers.available}, t)
        left = self.ctx.load(OPEN_KEY, None)
        if isinstance(left, dict) and left.get("accident_id"):
            # The agent stopped (power cut?) before the post-window closed.
            data = dict(left)
            data["complete"] = False
            data["gaps"] = list(data.get("gaps", [])) + [
                {"signal": "*", "kind": "agent_restart", "from_s": 0.0,
                 "to_s": self.limits.accident_after_s}]
            self.emit("accident.record", data, t)
            self.ctx.persist(OPEN_KEY, None)

    def stop(self, t: float) -> None:
        self._announce(t)
        if self.accident is not None:
            due = self.grouper.due(t)
            self._finish((self.grouper.close or t) if due else t, complete=due)

    # -- input ---------------------------------------------------------------------------
    def on_signal(self, name: str, value: Any, t: float) -> None:
        if name == STATE:
            self.in_use.on_state(value, t, self.value(FUNCTION))
        elif name == FUNCTION:
            self.in_use.on_function(value)
        self._step(t)
        trig = self.triggers.on_signal(name, value, t)
        if trig is not None:
            self._fire(trig)

    def on_frame_end(self, t: float) -> None:
        """Triggers of one frame are complete: announce them now, not at the next tick."""
        if self.pending:
            self._announce(t)

    def on_tick(self, t: float) -> None:
        if self._save_due is not None:
            acc, self._save_due = self._save_due, None
            self._save(acc)
        self._step(t)
        trig = self.triggers.advance(t)
        if trig is not None:
            self._fire(trig)
            self._step(t)

    # -- core ----------------------------------------------------------------------------
    def _step(self, t: float) -> None:
        """Announce triggers of earlier instants (same-frame triggers are grouped first),
        then close a post-window that is due."""
        if self.pending and t > self.pending[0].t:
            self._announce(t)
        if self.accident is not None and self.grouper.due(t) and not self.pending:
            self._finish(self.grouper.close or t, complete=True)

    def _fire(self, trig: Trigger) -> None:
        if self.grouper.offer(trig.t):
            if self.accident is not None:         # a late close: finish the old one first
                self._finish(trig.t, complete=True)
                self.grouper.offer(trig.t)
            self.accident = self._open(trig)
        acc = self.accident
        assert acc is not None
        if any(x.kind == trig.kind for x in acc.triggers):
            return                                # e.g. a flag that toggled: listed once
        acc.triggers.append(trig)
        self.pending.append(trig)

    def _open(self, trig: Trigger) -> Accident:
        utc = self.ctx.utc(trig.t)
        aid = str(uuid.uuid5(ACCIDENT_NS, f"{self.ctx.vehicle.vin}:{iso_ms(utc)}"))
        return Accident(id=aid, first=trig.t)

    def _deadline(self, acc: Accident) -> float:
        hurt = any(x.kind in DEPLOYMENTS for x in acc.triggers)
        return self.ctx.utc(acc.first) + (DEADLINE_INJURY_S if hurt else DEADLINE_OTHER_S)

    def _announce(self, now: float) -> None:
        """``accident.trigger`` for the first triggers; again (same accident_id) if a later
        deployment shortens the deadline to 24 h."""
        acc = self.accident
        if not self.pending or acc is None:
            self.pending = []
            return
        fresh, self.pending = self.pending, []
        deadline = self._deadline(acc)
        # Live, utc() reads the wall clock's offset anew each time: the same instant comes
        # out microseconds apart. Only a real shortening (24 h, a deployment) is news.
        if acc.announced and deadline > acc.deadline_utc - DEADLINE_SLACK_S:
            self._save(acc)
            return
        first = min(fresh, key=lambda x: (x.t, TRIGGER_ORDER.index(x.kind)))
        lead = min(fresh, key=lambda x: (TRIGGER_ORDER.index(x.kind), x.t)) \
            if acc.announced else first
        t = acc.first
        data: dict[str, Any] = {
            "accident_id": acc.id,
            "trigger": lead.kind,
            "triggers": [x.kind for x in sorted(acc.triggers, key=lambda x: x.t)],
            "update": acc.announced,
            "cda_in_use_5s": self.in_use.within(t, self.limits.cda_in_use_short_s),
            "cda_in_use_30s": self.in_use.within(t, self.limits.cda_in_use_lookback_s),
            "cda_state": self._at(STATE, t),
            "speed": self._number(SPEED, t, 2),
            "location": self._location(t),
            "report_deadline": iso_ms(deadline),
            "ts_trigger": iso_ms(self.ctx.utc(t)),
        }
        first_announcement = not acc.announced
        if first_announcement:
            acc.skeleton = self._skeleton(acc, data)
        acc.announced = True
        acc.deadline_utc = deadline
        self.emit("accident.trigger", data, lead.t if data["update"] else t)
        if first_announcement:
            # The pre-window (30 s of every signal) is persisted at the next tick, in its
            # own commit: the small trigger record must not wait for it on its way out.
            self._save_due = acc
        else:
            self._save(acc)

    def _save(self, acc: Accident) -> None:
        """Persist what a restart needs to still emit the record (with the pre-window)."""
        skel = acc.skeleton
        skel["triggers"] = self._trigger_list(acc)
        skel["report_deadline"] = iso_ms(self._deadline(acc))
        self.ctx.persist(OPEN_KEY, skel)

    # -- values at the trigger -------------------------------------------------------------
    def _at(self, name: str, t: float) -> Any:
        """Value of ``name`` in force at ``t`` (t may lie a frame in the past)."""
        if not self.state.mapped(name):
            return None
        samples = self.state.history.window(name, t, t)
        return plain(samples[-1][1]) if samples else plain(self.value(name))

    def _number(self, name: str, t: float, digits: int) -> float | None:
        v = self._at(name, t)
        return round(float(v), digits) if isinstance(v, (int, float)) and not isinstance(
            v, bool) else None

    def _location(self, t: float) -> dict[str, float] | None:
        lat, lon = self._at(LAT, t), self._at(LON, t)
        if isinstance(lat, float) and isinstance(lon, float):
            return {"lat": lat, "lon": lon}
        return None

    def _trigger_list(self, acc: Accident) -> list[dict[str, Any]]:
        out = []
        for x in sorted(acc.triggers, key=lambda x: (x.t, TRIGGER_ORDER.index(x.kind))):
            out.append({"trigger": x.kind, "at_s": round(x.t - acc.first, 3),
                        "ts": iso_ms(self.ctx.utc(x.t))})
        return out

    def _skeleton(self, acc: Accident, trig: dict[str, Any]) -> dict[str, Any]:
        """Everything of the record known at the first trigger, plus the pre-window."""
        t = acc.first
        vehicle = self.ctx.vehicle
        extras = self.ctx.extras
        ecus = extras.get("software_versions")
        upgrades = extras.get("software_upgrades")
        since = self.in_use.seconds_since(t)
        function = self._at(FUNCTION, t)
        before_s = self.limits.accident_before_s
        pre = {name: [[round(ts - t, 3), plain(v)] for ts, v in
                      self.state.history.window(name, t - before_s, t)]
               for name in CATALOGUE if self.state.mapped(name)}
        when = iso_ms(self.ctx.utc(t))
        return {
            "accident_id": acc.id,
            "complete": False,
            "ts_trigger": when,
            "report_deadline": trig["report_deadline"],
            "triggers": [],
            "cda_in_use_5s": trig["cda_in_use_5s"],
            "cda_in_use_30s": trig["cda_in_use_30s"],
            "basic": {                                       # 事故基本信息
                "time": when,
                "location": trig["location"],
                "odometer_km": self._number(ODOMETER, t, 3),
                "data_source": "vehicle: icv-edge-agent event record from CAN",
                "casualties": {"deaths": None, "injuries": None},
                "description": "",
                "accident_type": None,
            },
            "vehicle": {                                     # 车辆基本信息
                "manufacturer": vehicle.manufacturer,
                "category": vehicle.category,
                "model": vehicle.model,
                "vin": vehicle.vin,
                "power_type": vehicle.power_type,
                "risk_mitigation_strategy": vehicle.risk_mitigation_strategy,
                "perception_system": vehicle.perception_system,
                "cda_function": function if trig["cda_state"] in IN_USE else None,
                "cda_function_last_in_use": self.in_use.function,
                "software_upgrade_records": upgrades if isinstance(upgrades, list) else None,
                "edr_data": None,
                "recall_and_maintenance_records": [],
                "technical_service_activities": [],
                "recall_activities": [],
                "model_fleet_total_km": None,
                "model_fleet_accident_count": None,
            },
            "details": {                                     # 事故详细信息
                "time": when,
                "system_state": {
                    "cda_in_use_5s": trig["cda_in_use_5s"],
                    "cda_in_use_30s": trig["cda_in_use_30s"],
                    "seconds_since_in_use": None if since is None else round(since, 3),
                    **{name: self._at(name, t) for name in SYSTEM_SIGNALS},
                },
                "vehicle_state": {name: self._at(name, t) for name in VEHICLE_SIGNALS},
                "ecu_info": {
                    "vehicle_software_version": vehicle.software_version or None,
                    "software_versions": ecus if isinstance(ecus, dict) else None,
                },
                "cctv_video": [],
                "dvr_data": None,
                "road": None,
                "signs_and_markings": None,
                "weather": None,
                "participants": [],
                "casualties": {"deaths": None, "injuries": None},
                "cause_first_judgement": None,
            },
            "cause": {                                       # 原因及预期改进措施
                "cda_relevance": None,
                "analysis": "",
                "planned_improvements": "",
            },
            "photos": [],
            "to_fill": list(PEOPLE_FIELDS),
            "window": {"from_s": -before_s, "to_s": 0.0, "signals": pre},
            "gaps": self._gaps(pre, t, -before_s, 0.0),
            "delta_v_peak_kmh": None,
        }

    # -- the record ------------------------------------------------------------------------
    def _finish(self, t: float, *, complete: bool) -> None:
        acc = self.accident
        self.accident = None
        self._save_due = None
        self.grouper.end()
        if acc is None:
            return
        if not acc.announced:
            self.pending = []
            return
        data = dict(acc.skeleton)
        data["complete"] = complete
        data["triggers"] = self._trigger_list(acc)
        data["report_deadline"] = iso_ms(self._deadline(acc))
        end = min(t, acc.first + self.grouper.max_span_s)
        before_s = self.limits.accident_before_s
        signals: dict[str, list[list[Any]]] = {}
        for name, pre in data["window"]["signals"].items():
            post = [[round(ts - acc.first, 3), plain(v)]
                    for ts, v in self.state.history.window(name, acc.first, end)
                    if ts > acc.first]
            signals[name] = pre + post
        to_s = round(end - acc.first, 3)
        data["window"] = {"from_s": -before_s, "to_s": to_s, "signals": signals}
        data["gaps"] = self._gaps(signals, acc.first, -before_s, to_s)
        if not complete:
            data["gaps"].append({"signal": "*", "kind": "stopped", "from_s": to_s,
                                 "to_s": self.limits.accident_after_s})
        accel = signals.get(ACCEL, [])
        k = max(0, bisect.bisect_right([s[0] for s in accel], -2.0) - 1)
        accel = accel[k:]
        peak = peak_delta_v_kmh(accel, self.limits.delta_v_window_s, to_s)
        data["delta_v_peak_kmh"] = None if peak is None else round(peak, 2)
        self.emit("accident.record", data, t)
        self.ctx.persist(OPEN_KEY, None)

    def _gaps(self, signals: dict[str, list[list[Any]]], first: float, from_s: float,
              to_s: float) -> list[dict[str, Any]]:
        """Where the window lacks data: unmapped signals, and stretches without a known
        value (stale, never seen, or before the agent started)."""
        gaps: list[dict[str, Any]] = [
            {"signal": n, "kind": "unmapped", "from_s": None, "to_s": None}
            for n in CATALOGUE if not self.state.mapped(n)]
        if self.started_at is not None and self.started_at - first > from_s:
            gaps.append({"signal": "*", "kind": "before_agent_start", "from_s": from_s,
                         "to_s": round(self.started_at - first, 3)})
        for name, samples in signals.items():
            cursor = from_s                  # known from here, unless a None says otherwise
            unknown_from: float | None = from_s
            times = [s[0] for s in samples]
            i = bisect.bisect_right(times, from_s)
            if i > 0 and samples[i - 1][1] is not None:
                unknown_from = None          # a value in force at the window's start
            for ts, v in samples[i:]:
                cursor = max(ts, from_s)
                if v is None and unknown_from is None:
                    unknown_from = cursor
                elif v is not None and unknown_from is not None:
                    if cursor > unknown_from:
                        gaps.append({"signal": name, "kind": "unknown",
                                     "from_s": unknown_from, "to_s": cursor})
                    unknown_from = None
            if unknown_from is not None and to_s > unknown_from:
                gaps.append({"signal": name, "kind": "unknown", "from_s": unknown_from,
                             "to_s": to_s})
        return gaps
