"""Accident records (Att.3 一): ``accident.trigger`` at once, ``accident.record`` when the
post-window closes, one of each per crash of ``crash.py`` (which decides what a crash is,
which triggers belong to it and when its window closes; the period statistics count the
same crashes). The monitor needs no input: it uses the triggers the mapping carries and
says once at start which it lacks.

The 30 s before the first trigger are copied out of the history at once and persisted with
the ``accident.trigger`` record, so a power cut in the crash still leaves a
(``complete: false``) record with the pre-crash data after the restart.

``edr`` (GB 39732, computed by ``crash.py``): whether an EDR would have triggered and
locked, with time zero; on ``accident.trigger`` as known then (``final`` false), on
``accident.record`` over the whole window. ``edr.locked`` true is what the journal keeps
forever (docs/journal.md: locked accident data is never pruned).
"""

from __future__ import annotations

import bisect
import logging
import math
import uuid
from dataclasses import dataclass, field
from typing import Any

from agent.monitors.base import Monitor
from agent.monitors.crash import (
    ACCEL,
    DELTA_V,
    FLAG_TRIGGERS,
    FUNCTION,
    IN_USE,
    STATE,
    TRIGGER_ORDER,
    Crash,
    CrashMonitor,
    Edr,
    Trigger,
    peak_delta_v_kmh,
)
from agent.signals import CATALOGUE
from agent.timefmt import iso_ms

log = logging.getLogger(__name__)

SPEED = "Vehicle.Speed"
ODOMETER = "Vehicle.TraveledDistance"
LAT = "Vehicle.CurrentLocation.Latitude"
LON = "Vehicle.CurrentLocation.Longitude"
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


DEADLINE_SLACK_S = 1.0


@dataclass
class Accident:
    """The record form of one crash of ``crash.py``."""

    id: str
    crash: Crash
    deadline_utc: float = 0.0
    announced: bool = False
    skeleton: dict[str, Any] = field(default_factory=dict)

    @property
    def first(self) -> float:
        return self.crash.first

    @property
    def triggers(self) -> list[Trigger]:
        return self.crash.triggers


class AccidentMonitor(Monitor):
    name = "accident"
    inputs = ()                                          # works with whatever is mapped
    uses = (CrashMonitor,)
    tick_s = 0.05

    def __init__(self, ctx: Any):
        super().__init__(ctx)
        self.crash = self.used(CrashMonitor)
        self.crash.listen(self)
        self.accident: Accident | None = None
        self._save_due: Accident | None = None           # pre-window to persist next tick
        self._save_due_tick = 0                          # ... after this crash tick
        self.started_at: float | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, t: float) -> None:
        self.started_at = t
        triggers = self.crash.triggers
        unavailable = triggers.unavailable
        if unavailable:
            missing = [n for n, k in FLAG_TRIGGERS.items() if k in unavailable]
            if DELTA_V in unavailable:
                missing.append(ACCEL)
            log.warning("accident triggers unavailable (unmapped): %s", ", ".join(unavailable))
            self.emit("agent.monitor_degraded",
                      {"monitor": self.name, "missing": missing, "unavailable": unavailable,
                       "available": triggers.available}, t)
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

    def on_tick(self, t: float) -> None:
        # The pre-window goes out in its own commit, after the one of the trigger record:
        # the crash monitor ticks first, so a trigger announced in this tick waits a tick.
        if self._save_due is not None and self.crash.ticks > self._save_due_tick:
            acc, self._save_due = self._save_due, None
            self._save(acc)

    # -- crashes -------------------------------------------------------------------------
    def on_crash_triggers(self, crash: Crash, fresh: list[Trigger], now: float) -> None:
        acc = self.accident
        if acc is None or acc.crash is not crash:
            acc = self.accident = self._open(crash)
        self._announce(acc, fresh)

    def on_crash_closed(self, crash: Crash, end: float, complete: bool, now: float) -> None:
        if self.accident is not None and self.accident.crash is crash:
            self._finish(end, complete=complete)

    def _open(self, crash: Crash) -> Accident:
        utc = self.ctx.utc(crash.first)
        aid = str(uuid.uuid5(ACCIDENT_NS, f"{self.ctx.vehicle.vin}:{iso_ms(utc)}"))
        return Accident(id=aid, crash=crash)

    def _deadline(self, acc: Accident) -> float:
        hurt = any(x.kind in DEPLOYMENTS for x in acc.triggers)
        return self.ctx.utc(acc.first) + (DEADLINE_INJURY_S if hurt else DEADLINE_OTHER_S)

    def _announce(self, acc: Accident, fresh: list[Trigger]) -> None:
        """``accident.trigger`` for the first triggers; again (same accident_id) if a later
        deployment shortens the deadline to 24 h."""
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
            "cda_in_use_5s": self.crash.in_use.within(t, self.limits.cda_in_use_short_s),
            "cda_in_use_30s": self.crash.in_use.within(t, self.limits.cda_in_use_lookback_s),
            "cda_state": self._at(STATE, t),
            "speed": self._number(SPEED, t, 2),
            "location": self._location(t),
            "report_deadline": iso_ms(deadline),
            "ts_trigger": iso_ms(self.ctx.utc(t)),
            "edr": self._edr(acc.crash.edr, t),
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
            self._save_due_tick = self.crash.ticks
        else:
            self._save(acc)

    def _save(self, acc: Accident) -> None:
        """Persist what a restart needs to still emit the record (with the pre-window)."""
        skel = acc.skeleton
        skel["triggers"] = self._trigger_list(acc)
        skel["report_deadline"] = iso_ms(self._deadline(acc))
        skel["edr"] = self._edr(acc.crash.edr, acc.first)
        self.ctx.persist(OPEN_KEY, skel)

    def _edr(self, edr: Edr | None, first: float) -> dict[str, Any] | None:
        """The EDR marks as records carry them: times as UTC and relative to the trigger."""
        if edr is None:
            return None
        lim = self.limits
        tz = edr.time_zero
        return {
            "triggered": edr.triggered,
            "locked": edr.locked,
            "trigger_reasons": edr.trigger_reasons,
            "lock_reasons": edr.lock_reasons,
            "delta_v_x_kmh": edr.delta_v_x_kmh,
            "delta_v_y_kmh": edr.delta_v_y_kmh,
            "time_zero": None if tz is None else iso_ms(self.ctx.utc(tz)),
            "time_zero_s": None if tz is None else round(tz - first, 3),
            "time_zero_basis": edr.time_zero_basis,
            "acceleration_cycle_s": edr.acceleration_cycle_s,
            "final": edr.final,
            "not_evaluated": edr.not_evaluated,
            "limits": {"trigger_delta_v_kmh": lim.edr_trigger_delta_v_kmh,
                       "lock_delta_v_kmh": lim.edr_lock_delta_v_kmh,
                       "window_s": lim.edr_window_s,
                       "time_zero_delta_v_kmh": lim.edr_time_zero_delta_v_kmh,
                       "time_zero_window_s": lim.edr_time_zero_window_s},
        }

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
        since = self.crash.in_use.seconds_since(t)
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
                "cda_function_last_in_use": self.crash.in_use.function,
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
        if acc is None:
            return
        data = dict(acc.skeleton)
        data["complete"] = complete
        data["triggers"] = self._trigger_list(acc)
        data["edr"] = self._edr(acc.crash.edr, acc.first)
        data["report_deadline"] = iso_ms(self._deadline(acc))
        end = min(t, acc.first + self.crash.max_span_s)
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
