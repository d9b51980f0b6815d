"""Active-safety interventions: ``safety.aeb``, ``safety.elk``, ``safety.fcw``
(Att.2 #31-34: activation of AEB / emergency lateral assist, with speed).

One record per engagement, emitted when it ends and stamped with its end: ``speed`` and
``cda_state`` at the onset, ``start`` (UTC), ``duration_s``, ``speed_end``. Emitting at
the end rather than at the onset gives one record with the whole engagement instead of
two; the accident monitor keeps the onset in its signal history anyway. An engagement
that goes unknown (stale) ends there with ``ended`` = ``unknown``; one still running at
the end of input is reported with ``duration_s`` null and ``ended`` = ``input_end``.
One monitor per function, so a vehicle without ELK still reports AEB and FCW.

AEB availability (draft GB 组合驾驶辅助系统安全要求: the system must not suppress AEB while
active): ``AebAvailabilityMonitor`` gives ``selfcheck.violation`` (rule
``aeb_must_stay_available``) when ``Vehicle.ADAS.AEB.IsAvailable`` goes from true to false
while CDA is in use (ACTIVE, OVERRIDE, MRM), with the state, function and speed; once per
drop (it must be available again before the next one counts). An unknown (stale) value is
no drop; where the signal is unmapped the monitor says so once (``agent.monitor_degraded``)
and judges nothing. A failure that takes the CDA down first (State FAULT before AEB goes) is not
judged: the CDA was no longer in use. The period statistics count each violation.
"""

from __future__ import annotations

from typing import Any, ClassVar

from agent.monitors.base import CountedMonitor, Monitor, finite
from agent.monitors.cda import AEB, ELK, ENGAGED, FCW, FUNCTION, SPEED, STATE, _name
from agent.monitors.selfcheck import AEB_RULE, violation
from agent.timefmt import iso_ms

AEB_AVAILABLE = _name("Vehicle.ADAS.AEB.IsAvailable")


class InterventionMonitor(Monitor):
    signal: ClassVar[str] = ""
    event: ClassVar[str] = ""

    def __init__(self, ctx: Any):
        super().__init__(ctx)
        self._onset: tuple[float, Any, Any] | None = None    # t, speed, cda_state

    def on_signal(self, name: str, value: Any, t: float) -> None:
        if value is True:
            if self._onset is None:
                self._onset = (t, self.value(SPEED), self.value(STATE))
        elif self._onset is not None:
            self._report(t, "released" if value is False else "unknown")

    def stop(self, t: float) -> None:
        if self._onset is not None:
            self._report(t, "input_end")

    def _report(self, t: float, ended: str) -> None:
        onset_t, speed, state = self._onset or (t, None, None)
        self._onset = None
        self.emit(self.event, {
            "speed": finite(speed, 2),
            "cda_state": state,
            "start": iso_ms(self.ctx.utc(onset_t)),
            "duration_s": None if ended == "input_end" else finite(t - onset_t),
            "speed_end": finite(self.value(SPEED), 2),
            "ended": ended,
        }, t)


class AebMonitor(InterventionMonitor):
    name = "aeb"
    signal = AEB
    event = "safety.aeb"
    inputs = watches = (AEB,)


class ElkMonitor(InterventionMonitor):
    name = "elk"
    signal = ELK
    event = "safety.elk"
    inputs = watches = (ELK,)


class FcwMonitor(InterventionMonitor):
    name = "fcw"
    signal = FCW
    event = "safety.fcw"
    inputs = watches = (FCW,)


class AebAvailabilityMonitor(CountedMonitor):
    name = "aeb_availability"
    inputs = (STATE,)
    watches = (STATE, AEB_AVAILABLE)

    def __init__(self, ctx: Any):
        super().__init__(ctx)
        self._available: bool | None = None     # last known value

    def start(self, t: float) -> None:
        if not self.state.mapped(AEB_AVAILABLE):
            self.emit("agent.monitor_degraded", {
                "monitor": self.name, "missing": [AEB_AVAILABLE],
                "unavailable": ["aeb_availability"], "available": []}, t)

    def on_signal(self, name: str, value: Any, t: float) -> None:
        if name != AEB_AVAILABLE or value is None:
            return
        was, self._available = self._available, value is True
        if was is True and value is False and self.value(STATE) in ENGAGED:
            if not self.limits.aeb_must_stay_available:
                return
            violation(self, t, AEB_RULE, True, False, cda_state=self.value(STATE),
                      function=self.value(FUNCTION), speed=finite(self.value(SPEED), 2))
            self.count(f"selfcheck.{AEB_RULE}", t)
