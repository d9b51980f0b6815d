"""Active-safety interventions: ``safety.aeb``, ``safety.elk``, ``safety.fcw``
(Att.2 #31-34: activation of AEB / emergency lateral assist, with speed).

One record per engagement, emitted when it ends and stamped with its end: ``speed`` and
``cda_state`` at the onset, ``start`` (UTC), ``duration_s``, ``speed_end``. Emitting at
the end rather than at the onset gives one record with the whole engagement instead of
two; the accident monitor keeps the onset in its signal history anyway. An engagement
that goes unknown (stale) ends there with ``ended`` = ``unknown``; one still running at
the end of input is reported with ``duration_s`` null and ``ended`` = ``input_end``.
One monitor per function, so a vehicle without ELK still reports AEB and FCW.
"""

from __future__ import annotations

from typing import Any, ClassVar

from agent.monitors.base import Monitor, finite
from agent.monitors.cda import AEB, ELK, FCW, SPEED, STATE
from agent.timefmt import iso_ms


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
