"""Period statistics for the event report (Att.3 二): active time and distance per CDA
function and event counts, per calendar quarter and year in the vehicle's time zone.

"Active" is the set docs/signals.md calls "in use": State ACTIVE, OVERRIDE or MRM. Sessions are
those of ``cda.py``: one starts when State enters ACTIVE and ends when it leaves the set
for OFF/STANDBY/FAULT/INHIBITED; exit reasons follow the same rule. While the state is
unknown (stale) the session neither ends nor counts time.

Time is summed from data time. Distance is the integral of the vehicle speed (which holds
between its changes, as the vehicle state holds it); where the speed is unknown, the
odometer delta fills in. ``odometer_km`` carries the plain odometer deltas as a
cross-check: a 0.1 km odometer cannot give per-session figures to the metre, a 10 ms
speed signal can.

Exact across restarts: totals accumulate unrounded (rounded only in records) and are
persisted at every session change, every count and every ``CHECKPOINT_S`` of active time;
the write rides with the next record commit. After a power cut a session counts up to its
last checkpoint. Periods are closed in data time (``ctx.utc``); a period that ended while
the agent was off is closed at the next start.

The monitor counts the events itself from the same signals the other monitors read
(monitors do not see each other's records), with their rules: exits by ``cda.decide_exit``,
crashes as the one ``CrashMonitor`` of the pipeline announces them (the accident records
come from the same crashes), the EDR marks when a crash closes, misuse and the AEB and
instructions self-checks as their monitors decide them (``CountedMonitor.on_count``); see
``COUNTS`` for the keys.

UN R171 categories (the report's second view, ``reports/period.py``) are counted here too,
while CDA is in use: hands-on and eyes-on warnings (entering the level from another one),
take-over alerts, system-initiated manoeuvres (where ``SystemInitiatedManoeuvre`` is
mapped) and boundary exceedances (OddStatus entering EXCEEDED); MRMs by the cause their
``cda.mrm`` record gives (``MrmMonitor``, counted when the MRM ends):
``cda.mrm.driver_unresponsive`` is the response to an unavailable driver.
``not_signalled`` names the categories the mapping cannot count, so a 0 is never a guess.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

from agent.monitors.base import Monitor
from agent.monitors.cda import (
    ESCALATED,
    EXIT_SETTLE_S,
    EYES_LEVELS,
    HANDS_LEVELS,
    TAKE_CONTROL,
    decide_exit,
    exit_cues,
)
from agent.monitors.crash import ACCEL, IN_USE, Crash, CrashMonitor, Trigger
from agent.monitors.instructions import CONFIRMED, InstructionsMonitor
from agent.monitors.mrm import MrmMonitor
from agent.monitors.safety import AEB_AVAILABLE, AebAvailabilityMonitor
from agent.timefmt import EARLIEST, LATEST, iso_ms, plausible

log = logging.getLogger(__name__)

STATE = "Vehicle.ADAS.CDA.State"
FUNCTION = "Vehicle.ADAS.CDA.Function"
EXIT = "Vehicle.ADAS.CDA.ExitReason"
ODD = "Vehicle.ADAS.CDA.OddStatus"
BRAKE = "Vehicle.Chassis.Brake.IsPressed"
WARNING = "Vehicle.ADAS.CDA.WarningLevel"
FAULT_CODE = "Vehicle.ADAS.CDA.FaultCode"
SPEED = "Vehicle.Speed"
ODOMETER = "Vehicle.TraveledDistance"
EXIT_CUES = (ODD, BRAKE, WARNING, FAULT_CODE)   # what explains an exit (cda.exit_cues)
SAFETY = {"Vehicle.ADAS.AEB.IsEngaged": "safety.aeb", "Vehicle.ADAS.ELK.IsEngaged": "safety.elk",
          "Vehicle.ADAS.FCW.IsWarning": "safety.fcw"}
MANOEUVRE = "Vehicle.ADAS.CDA.SystemInitiatedManoeuvre"
# R171 / draft GB categories -> the signal without which they cannot be counted.
SIGNALLED_BY = {"warnings": WARNING, "system_initiated_manoeuvres": MANOEUVRE,
                "boundary_exceedances": ODD, "instructions_confirmation": CONFIRMED,
                "aeb_availability": AEB_AVAILABLE, "edr_delta_v": ACCEL}

OPEN_KEY = "stats.period.open"          # running quarter and year
CLOSED_KEY = "stats.period.closed"      # the last closed periods, by period name
KEEP_CLOSED = 12
CHECKPOINT_S = 5.0                      # persist at least this often while active
TOTAL = "total"


COUNTS = (
    "cda.activated",                    # sessions started (entering ACTIVE/OVERRIDE/MRM)
    "cda.deactivated",                  # sessions ended, and per exit reason:
    "cda.deactivated.<exit_reason>",    # driver system_failure odd_exit driver_disengaged
                                        # mrm unknown
    "cda.mrm",                          # State entered MRM (risk mitigation triggered)
    "safety.aeb", "safety.elk", "safety.fcw",              # engagements (rising edges)
    "safety.aeb.cda_in_use", "safety.elk.cda_in_use", "safety.fcw.cda_in_use",
    "accident", "accident.cda_in_use",  # crashes (several triggers = one), in use <= 30 s
    "accident.edr_triggered", "accident.edr_locked",   # GB 39732 marks, when the crash closes
    # UN R171 categories, while in use:
    "warning.hands_on", "warning.hands_on.escalated",  # hands-on requests, escalations
    "warning.eyes_on", "warning.eyes_on.escalated",    # eyes-on-road warnings, escalations
    "warning.take_control",                            # take-over alerts
    "cda.manoeuvre", "cda.manoeuvre.<kind>",           # system-initiated: lane_change ramp other
    "cda.mrm.<cause>",                  # ended MRMs by cause (MrmMonitor): driver_unresponsive
                                        # (driver-unavailability responses) system_failure other
    "cda.boundary_exceeded",                           # OddStatus entered EXCEEDED
    # draft GB 组合驾驶辅助系统安全要求 (from InstructionsMonitor / AebAvailabilityMonitor):
    "ignition_cycles",                                 # ignition cycles begun
    "misuse.unconfirmed_activation", "misuse.unconfirmed_activation_attempt",
    "selfcheck.instructions_confirmation_required", "selfcheck.aeb_must_stay_available",
)


def _local(utc: float, tz: ZoneInfo) -> datetime:
    if not plausible(utc):
        # NaN, inf or 1e300 has no calendar period (datetime raises on most of it): the
        # nearest plausible time keeps the periods valid. ``_advance`` ignores such times.
        utc = LATEST - 1.0 if utc > EARLIEST else EARLIEST
    return datetime.fromtimestamp(utc, tz=timezone.utc).astimezone(tz)


def _finite(value: Any) -> Any:
    """A number that can be summed, else None (unknown): a float DBC signal may decode as
    NaN or inf."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def quarter_of(utc: float, tz: ZoneInfo) -> tuple[str, float, float]:
    """(name, start, end) of the calendar quarter holding ``utc``; start inclusive."""
    d = _local(utc, tz)
    q = (d.month - 1) // 3
    start = datetime(d.year, 3 * q + 1, 1, tzinfo=tz)
    end = datetime(d.year + 1, 1, 1, tzinfo=tz) if q == 3 else datetime(d.year, 3 * q + 4, 1,
                                                                         tzinfo=tz)
    return f"{d.year}Q{q + 1}", start.timestamp(), end.timestamp()


def year_of(utc: float, tz: ZoneInfo) -> tuple[str, float, float]:
    d = _local(utc, tz)
    start = datetime(d.year, 1, 1, tzinfo=tz)
    end = datetime(d.year + 1, 1, 1, tzinfo=tz)
    return str(d.year), start.timestamp(), end.timestamp()


@dataclass
class Totals:
    """One period's accumulators, unrounded."""

    period: str
    start: float                        # UTC epoch, inclusive
    end: float                          # UTC epoch, exclusive
    active_s: dict[str, float] = field(default_factory=dict)
    distance_km: dict[str, float] = field(default_factory=dict)
    odometer_km: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"period": self.period, "start": self.start, "end": self.end,
                "active_s": self.active_s, "distance_km": self.distance_km,
                "odometer_km": self.odometer_km, "counts": self.counts}

    @classmethod
    def from_json(cls, d: Any) -> Totals | None:
        try:
            t = cls(str(d["period"]), float(d["start"]), float(d["end"]),
                    {str(k): float(v) for k, v in d["active_s"].items()},
                    {str(k): float(v) for k, v in d["distance_km"].items()},
                    {str(k): float(v) for k, v in d["odometer_km"].items()},
                    {str(k): int(v) for k, v in d["counts"].items()})
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            return None
        # JSON may carry NaN/Infinity: such totals would poison every later sum
        numbers = [t.start, t.end, *t.active_s.values(), *t.distance_km.values(),
                   *t.odometer_km.values()]
        if not all(math.isfinite(x) for x in numbers):
            return None
        return t

    def record(self, tz: str, *, odometer: bool, closed: str, as_of: float,
               not_signalled: list[str] | None = None) -> dict[str, Any]:
        """``stats.period`` data: per-function figures and a total, rounded to the ms / m."""
        def rounded(values: dict[str, float], digits: int) -> dict[str, float]:
            out = {k: round(v, digits) for k, v in sorted(values.items())}
            out[TOTAL] = round(sum(values.values()), digits)
            return out
        return {
            "period": self.period,
            "kind": "year" if "Q" not in self.period else "quarter",
            "start": iso_ms(self.start),
            "end": iso_ms(self.end),
            "timezone": tz,
            "active_s": rounded(self.active_s, 3),
            "distance_km": rounded(self.distance_km, 3),
            "odometer_km": rounded(self.odometer_km, 3) if odometer else None,
            "counts": dict(sorted(self.counts.items())),
            "closed": closed,
            "as_of": iso_ms(as_of),
            "not_signalled": list(not_signalled or []),
        }


class PeriodStatsMonitor(Monitor):
    name = "stats"
    inputs = (STATE,)
    watches = (STATE, FUNCTION, EXIT, SPEED, ODOMETER, MANOEUVRE, *SAFETY, *EXIT_CUES)
    uses = (CrashMonitor, InstructionsMonitor, AebAvailabilityMonitor, MrmMonitor)
    tick_s = 0.5

    def __init__(self, ctx: Any):
        super().__init__(ctx)
        self.tz_name = ctx.vehicle.timezone or "Asia/Shanghai"
        self.tz = ZoneInfo(self.tz_name)
        self.crash = self.used(CrashMonitor)
        self.crash.listen(self)
        for counted in (InstructionsMonitor, AebAvailabilityMonitor, MrmMonitor):
            self.used(counted).on_count(self._count)
        self.not_signalled = sorted(k for k, sig in SIGNALLED_BY.items()
                                    if not ctx.state.mapped(sig))
        self.level: Any = None                  # warning level, as last known
        self.manoeuvre: Any = None
        self.odd: Any = None
        self.quarter: Totals | None = None
        self.year: Totals | None = None
        self.has_odometer = ctx.state.mapped(ODOMETER)
        # session
        self.state_value: Any = None
        self.in_session = False
        self.session_start: float | None = None
        self.function: Any = None
        self.seg_t: float | None = None         # accumulated up to here (None: not active)
        self.speed: float | None = None
        self.odo: float | None = None
        self.seg_odo: float | None = None
        self.gap_odo: float | None = None       # odometer where the speed became unknown
        self.exit_value: Any = None
        self.exit_changed: float | None = None
        self.pending_exit: tuple[float, Any, set[str]] | None = None
        self.was_mrm = False
        self.last_engaged: Any = None
        self.safety_known_false: dict[str, bool] = dict.fromkeys(SAFETY, False)
        self.last_checkpoint: float | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, t: float) -> None:
        saved = self.ctx.load(OPEN_KEY, None) or {}
        self.quarter = Totals.from_json(saved.get("quarter"))
        self.year = Totals.from_json(saved.get("year"))
        u = self.ctx.utc(t)
        if self.quarter is None or self.year is None:
            if saved:
                log.error("persisted statistics unreadable; starting new periods")
            self.quarter = Totals(*quarter_of(u, self.tz))
            self.year = Totals(*year_of(u, self.tz))
        self._advance(t)
        self._checkpoint(t)

    def stop(self, t: float) -> None:
        self._advance(t)
        self._resolve_exit(t, force=True)
        self._checkpoint(t)

    # -- input -----------------------------------------------------------------------------
    def on_signal(self, name: str, value: Any, t: float) -> None:
        self._advance(t)
        if name in (WARNING, MANOEUVRE, ODD):
            self._r171(name, value, t)
        if name == STATE:
            self._on_state(value, t)
        elif name == FUNCTION:
            if value != self.function:
                self.function = value
                if self.seg_t is not None:
                    self._checkpoint(t)
        elif name == SPEED:
            self._on_speed(value)
        elif name == ODOMETER:
            self.odo = _finite(value)
            if self.seg_odo is None:
                self.seg_odo = self.odo
        elif name == EXIT:
            self.exit_value = value
            self.exit_changed = t
        elif name in EXIT_CUES and self.pending_exit is not None:  # while the exit settles
            self.pending_exit[2].update(exit_cues(self.value))
        elif name in SAFETY:
            if value is True and self.safety_known_false[name]:
                key = SAFETY[name]
                self._count(key, t)
                if self.state_value in IN_USE:
                    self._count(f"{key}.cda_in_use", t)
            if value is not None:
                self.safety_known_false[name] = value is False

    def on_tick(self, t: float) -> None:
        self._advance(t)
        self._resolve_exit(t)
        if self.seg_t is not None and (self.last_checkpoint is None
                                       or t - self.last_checkpoint >= CHECKPOINT_S):
            self._checkpoint(t)

    # -- sessions --------------------------------------------------------------------------
    def _on_state(self, value: Any, t: float) -> None:
        before = self.state_value
        self.state_value = value
        if value is None:                           # unknown: pause, neither start nor end
            self._pause()
            return
        if not self.in_session:
            if value != "ACTIVE":                   # sessions start when State enters ACTIVE
                return
            self._resolve_exit(t, force=True)
            self.in_session = True
            self.session_start = t
            self.was_mrm = False
            self._count("cda.activated", t)
        if value in IN_USE:
            if value == "MRM" and before != "MRM":
                self.was_mrm = True
                self._count("cda.mrm", t)
            self.last_engaged = value
            if self.seg_t is None:
                self._begin(t)
            return
        self._pause()
        self.in_session = False
        self.pending_exit = (t, value, exit_cues(self.value))
        self._resolve_exit(t)
        self._checkpoint(t)

    def _pause(self) -> None:
        if self.seg_t is not None:
            self.seg_t = None                       # accumulated up to now by _advance
            self._end_gap()

    def _begin(self, t: float) -> None:
        self.seg_t = t
        self.seg_odo = self.odo
        self.gap_odo = self.odo if self.speed is None else None

    def _resolve_exit(self, t: float, *, force: bool = False) -> None:
        """Count the exit ``EXIT_SETTLE_S`` after it (earlier when a new session starts or
        the input ends), with the reason ``cda.decide_exit`` gives ``cda.deactivated``."""
        if self.pending_exit is None:
            return
        at, new_state, cues = self.pending_exit
        if not (force or t - at >= EXIT_SETTLE_S):
            return
        self.pending_exit = None
        cues = cues | exit_cues(self.value)
        if self.last_engaged == "OVERRIDE":
            cues.add("override")
        reason, _source = decide_exit(new_state, self.was_mrm, cues, self.exit_value,
                                      self.exit_changed, self.session_start)
        self._count("cda.deactivated", t)
        self._count(f"cda.deactivated.{reason}", t)

    def _on_speed(self, value: Any) -> None:
        value = _finite(value)
        if self.seg_t is not None:
            if value is None and self.speed is not None:
                self.gap_odo = self.odo
            elif value is not None and self.speed is None:
                self._end_gap()
        self.speed = value

    def _end_gap(self) -> None:
        """Distance over a stretch without speed: the odometer delta, if it knows."""
        if self.gap_odo is not None and self.odo is not None and self.odo > self.gap_odo:
            self._add("distance_km", self._fn(), self.odo - self.gap_odo)
        self.gap_odo = None

    def _fn(self) -> str:
        return self.function if isinstance(self.function, str) else "UNKNOWN"

    # -- accumulation ----------------------------------------------------------------------
    def _advance(self, t: float) -> None:
        """Bring the totals up to ``t``, closing every period that ended before it."""
        assert self.quarter is not None and self.year is not None
        u = self.ctx.utc(t)
        if not plausible(u):   # a damaged time: inf would close periods forever
            return
        while u >= min(self.quarter.end, self.year.end):
            boundary = min(self.quarter.end, self.year.end)
            self._accumulate(t - (u - boundary))
            if self.quarter.end <= boundary:
                self._close("quarter", t)
            if self.year.end <= boundary:
                self._close("year", t)
        self._accumulate(t)

    def _accumulate(self, t: float) -> None:
        if self.seg_t is None or t <= self.seg_t:
            return
        fn = self._fn()
        dt = t - self.seg_t
        self._add("active_s", fn, dt)
        if self.speed is not None:
            self._add("distance_km", fn, max(float(self.speed), 0.0) * dt / 3600.0)
        if self.odo is not None and self.seg_odo is not None and self.odo > self.seg_odo:
            self._add("odometer_km", fn, self.odo - self.seg_odo)
        self.seg_odo = self.odo
        self.seg_t = t

    def _add(self, what: str, fn: str, amount: float) -> None:
        if not math.isfinite(amount):   # e.g. 1e300 km/h over a second: keep the sums usable
            return
        for totals in (self.quarter, self.year):
            assert totals is not None
            bucket = getattr(totals, what)
            bucket[fn] = bucket.get(fn, 0.0) + amount

    def _count(self, key: str, t: float) -> None:
        self._advance(t)
        for totals in (self.quarter, self.year):
            assert totals is not None
            totals.counts[key] = totals.counts.get(key, 0) + 1
        self._checkpoint(t)

    def on_crash_triggers(self, crash: Crash, fresh: list[Trigger], now: float) -> None:
        """A crash is counted when first announced, as ``accident.trigger`` reports it: in
        use by the same ``cda_in_use_30s`` test, on the crash monitor's in-use state."""
        if crash.announced:
            return
        self._count("accident", now)
        if self.crash.in_use.within(crash.first, self.limits.cda_in_use_lookback_s):
            self._count("accident.cda_in_use", now)

    def on_crash_closed(self, crash: Crash, end: float, complete: bool, now: float) -> None:
        """The EDR marks are final when the window closes: counted then."""
        if crash.edr is not None and crash.edr.triggered:
            self._count("accident.edr_triggered", now)
        if crash.edr is not None and crash.edr.locked:
            self._count("accident.edr_locked", now)

    # -- R171 categories -------------------------------------------------------------------
    def _r171(self, name: str, value: Any, t: float) -> None:
        """Warnings, manoeuvres and boundary exceedances while in use (module docstring)."""
        if value is None:
            return                                  # unknown: no news, no edge
        in_use = self.state_value in IN_USE
        if name == WARNING:
            before, self.level = self.level, value
            if not in_use or value == before:
                return
            for levels, key in ((HANDS_LEVELS, "warning.hands_on"),
                                (EYES_LEVELS, "warning.eyes_on")):
                if value in levels:
                    if before not in levels:
                        self._count(key, t)
                    if value in ESCALATED and before not in ESCALATED:
                        self._count(f"{key}.escalated", t)
            if value == TAKE_CONTROL:
                self._count("warning.take_control", t)
        elif name == MANOEUVRE:
            before, self.manoeuvre = self.manoeuvre, value
            if in_use and value != "NONE" and value != before:
                self._count("cda.manoeuvre", t)
                self._count(f"cda.manoeuvre.{str(value).lower()}", t)
        else:
            before, self.odd = self.odd, value
            if in_use and value == "EXCEEDED" and before != "EXCEEDED":
                self._count("cda.boundary_exceeded", t)

    # -- periods and persistence -----------------------------------------------------------
    def _close(self, kind: str, t: float) -> None:
        totals = self.quarter if kind == "quarter" else self.year
        assert totals is not None
        u = self.ctx.utc(t)
        closed = "period_end" if u - totals.end < 60.0 else "late"
        data = totals.record(self.tz_name, odometer=self.has_odometer, closed=closed, as_of=u,
                             not_signalled=self.not_signalled)
        self.emit("stats.period", data, t)
        history = dict(self.ctx.load(CLOSED_KEY, None) or {})
        history[totals.period] = data
        keep = sorted(history, key=lambda k: history[k].get("end", ""))[-KEEP_CLOSED:]
        self.ctx.persist(CLOSED_KEY, {k: history[k] for k in keep})
        of = quarter_of if kind == "quarter" else year_of
        nxt = of(totals.end, self.tz)
        if u >= nxt[2]:       # off (or no clock) for whole periods: no empty records for them
            nxt = of(u, self.tz)
        if kind == "quarter":
            self.quarter = Totals(*nxt)
        else:
            self.year = Totals(*nxt)
        self._checkpoint(t)

    def _checkpoint(self, t: float) -> None:
        assert self.quarter is not None and self.year is not None
        self.last_checkpoint = t
        self.ctx.persist(OPEN_KEY, {
            "quarter": self.quarter.to_json(), "year": self.year.to_json(),
            "as_of": self.ctx.utc(t), "timezone": self.tz_name,
            "odometer_mapped": self.has_odometer,
            "not_signalled": self.not_signalled,
            "active": self.seg_t is not None,
        })
