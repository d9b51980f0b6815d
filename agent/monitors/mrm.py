"""Risk mitigation (minimal risk manoeuvre): ``cda.mrm`` when State leaves MRM.

``cause``: ``driver_unresponsive`` when a hands-on/eyes-on warning sequence was running
as the MRM began (or had ended within ``SEQUENCE_GRACE_S``; a take-over alert after it
belongs to the same sequence) or the system named DRIVER_DISENGAGED; else
``system_failure`` when a fault code, a SYSTEM_FAILURE exit reason or the FAULT state was
seen from just before the MRM to its end; else ``other``.
``outcome``: ``standstill`` when the speed reached ``STANDSTILL_KMH`` during the MRM,
else ``driver_override`` (the driver took over while the car was still moving).
``peak_decel``: the largest deceleration (m/s², positive) from
``Vehicle.Acceleration.Longitudinal`` during the MRM, null where that is unmapped.
``hazard_lights``: true if they were on at any time during the MRM, false if known off
throughout, null if unknown (unmapped or stale) -- only a known false is a violation.
An unknown (stale) State neither starts nor ends an MRM.
The period statistics count each ``cda.mrm`` by its cause (``cda.mrm.<cause>``, through
``on_count``): ``cda.mrm.driver_unresponsive`` is R171's driver-unavailability response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.monitors.base import CountedMonitor, finite
from agent.monitors.cda import (
    ACCEL_LONG,
    DRIVER_LEVELS,
    EXIT_REASON,
    FAULT,
    FAULT_CODE,
    HAZARD,
    MRM,
    SPEED,
    STATE,
    WARNING,
    fault_active,
)
from agent.monitors.selfcheck import HAZARD_RULE, violation
from agent.timefmt import iso_ms

STANDSTILL_KMH = 1.0
SEQUENCE_GRACE_S = 2.0


class WarningSequence:
    """Follows the system's warning sequence (from a level other than NONE back to NONE)
    to tell whether the driver was being warned -- the mark of a misuse MRM."""

    def __init__(self) -> None:
        self.running = False
        self.driver = False
        self.ended_at: float | None = None

    def update(self, level: Any, t: float) -> None:
        if level is None:           # unknown: no news
            return
        if level == "NONE":
            if self.running:
                self.running, self.ended_at = False, t
            return
        if not self.running:
            self.running, self.driver = True, False
        if level in DRIVER_LEVELS:
            self.driver = True

    def driver_warned(self, t: float) -> bool:
        if not self.driver:
            return False
        return self.running or (self.ended_at is not None
                                and t - self.ended_at <= SEQUENCE_GRACE_S)


@dataclass
class Manoeuvre:
    start_t: float
    speed: float | None
    driver: bool
    fault: bool
    hazard: bool | None
    peak: float | None
    stop_t: float | None


class MrmMonitor(CountedMonitor):
    name = "mrm"
    inputs = (STATE,)
    watches = (STATE, WARNING, SPEED, ACCEL_LONG, HAZARD, FAULT_CODE, EXIT_REASON)

    def __init__(self, ctx: Any):
        super().__init__(ctx)
        self._m: Manoeuvre | None = None
        self._warnings = WarningSequence()
        self._fault_t: float | None = None     # last time a fault was shown

    def on_signal(self, name: str, value: Any, t: float) -> None:
        m = self._m
        if name == STATE:
            if value == MRM and m is None:
                self._begin(t)
            elif value == FAULT:
                self._fault_t = t
                if m is not None:
                    m.fault = True
            if m is not None and value is not None and value != MRM:
                self._end(t, value)
            return
        if name == WARNING:
            self._warnings.update(value, t)
            if m is not None and value in DRIVER_LEVELS:
                m.driver = True
        elif name in (FAULT_CODE, EXIT_REASON):
            if fault_active(value) or value == "SYSTEM_FAILURE":
                self._fault_t = t
                if m is not None:
                    m.fault = True
            elif m is not None and value == "DRIVER_DISENGAGED":
                m.driver = True
        elif m is None:
            return
        elif name == SPEED:
            if value is not None and value <= STANDSTILL_KMH and m.stop_t is None:
                m.stop_t = t
        elif name == ACCEL_LONG:
            if value is not None:
                m.peak = max(m.peak or 0.0, -value)
        elif name == HAZARD:
            if value is True:
                m.hazard = True
            elif value is False and m.hazard is None:
                m.hazard = False

    def _begin(self, t: float) -> None:
        speed = self.value(SPEED)
        accel = self.value(ACCEL_LONG)
        fault = (fault_active(self.value(FAULT_CODE))
                 or self.value(EXIT_REASON) == "SYSTEM_FAILURE"
                 or (self._fault_t is not None and t - self._fault_t <= SEQUENCE_GRACE_S))
        self._m = Manoeuvre(
            start_t=t, speed=speed, driver=self._warnings.driver_warned(t), fault=fault,
            hazard=self.value(HAZARD),
            peak=None if accel is None else max(0.0, -accel),
            stop_t=t if speed is not None and speed <= STANDSTILL_KMH else None)

    def _end(self, t: float, to_state: str) -> None:
        m, self._m = self._m, None
        assert m is not None
        if m.driver:
            cause = "driver_unresponsive"
        elif m.fault:
            cause = "system_failure"
        else:
            cause = "other"
        start = iso_ms(self.ctx.utc(m.start_t))
        self.emit("cda.mrm", {
            "cause": cause,
            "start": start,
            "duration_s": finite(t - m.start_t),
            "outcome": "standstill" if m.stop_t is not None else "driver_override",
            "stop_s": None if m.stop_t is None else finite(m.stop_t - m.start_t),
            "speed": finite(m.speed, 2),
            "peak_decel": finite(m.peak, 2),
            "hazard_lights": m.hazard,
            "to_state": to_state,
        }, t)
        self.count(f"cda.mrm.{cause}", t)
        if m.hazard is False and self.limits.mrm_requires_hazard_lights:
            violation(self, t, HAZARD_RULE, True, False, mrm_start=start)
