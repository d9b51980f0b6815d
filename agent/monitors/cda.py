"""CDA sessions: ``cda.activated`` when State enters ACTIVE, ``cda.deactivated`` when it
leaves ACTIVE/OVERRIDE/MRM for OFF/STANDBY/FAULT/INHIBITED (the regulation's
"activation / exit with its reason").

Exit reason: the system's own ``ExitReason`` when it names one (set since the session
began), else inferred from what was seen at the exit, first match wins: FAULT state or a
fault code -> system_failure; the session was in MRM -> mrm; ODD EXCEEDED -> odd_exit;
a hands/eyes/take-over warning running or INHIBITED -> driver_disengaged; OVERRIDE or
brake pedal -> driver; else unknown. ``exit_reason_source`` says which.

``function`` of ``cda.deactivated`` is the function engaged longest in the session;
``function_s`` gives the seconds of each (ACC, then LCC, ...).

``cda.activated`` is decided ``SETTLE_S`` after the State change and ``cda.deactivated``
``EXIT_SETTLE_S`` after it, because function, exit reason and fault code may come later in
the same frame or a few cycles of another message later; both carry the time of the State
change. The exit rule (``decide_exit``) is the one the period statistics count with.
An unknown (stale) State neither starts nor ends a session; one still open when the input
ends (trace end, service stop) has no exit to report and is not.

Distance is the odometer delta where ``Vehicle.TraveledDistance`` is mapped and known at
both ends, else the integral of the speed (which holds until it changes, so the sum is
exact for what the bus showed); ``distance_source`` says which. Next to an odometer
distance, ``distance_speed_km`` gives the speed integral too: odometers count in 0.1 km
or coarser steps, which matters for short sessions.

The canonical names the driving monitors share are defined here once.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.monitors.base import Monitor, finite
from agent.signals import CATALOGUE
from agent.timefmt import iso_ms


def _name(name: str) -> str:
    """A canonical name, checked against the catalogue at import."""
    return CATALOGUE[name].name


SPEED = _name("Vehicle.Speed")
ODOMETER = _name("Vehicle.TraveledDistance")
ACCEL_LONG = _name("Vehicle.Acceleration.Longitudinal")
BRAKE = _name("Vehicle.Chassis.Brake.IsPressed")
HAZARD = _name("Vehicle.Body.Lights.Hazard.IsSignaling")
HANDS_ON = _name("Vehicle.Driver.IsHandsOnWheel")
EYES_ON = _name("Vehicle.Driver.IsEyesOnRoad")
STATE = _name("Vehicle.ADAS.CDA.State")
FUNCTION = _name("Vehicle.ADAS.CDA.Function")
EXIT_REASON = _name("Vehicle.ADAS.CDA.ExitReason")
WARNING = _name("Vehicle.ADAS.CDA.WarningLevel")
MODALITY = _name("Vehicle.ADAS.CDA.WarningModality")
ODD = _name("Vehicle.ADAS.CDA.OddStatus")
FAULT_CODE = _name("Vehicle.ADAS.CDA.FaultCode")
AEB = _name("Vehicle.ADAS.AEB.IsEngaged")
ELK = _name("Vehicle.ADAS.ELK.IsEngaged")
FCW = _name("Vehicle.ADAS.FCW.IsWarning")

# State values.
ACTIVE, OVERRIDE, MRM = "ACTIVE", "OVERRIDE", "MRM"
OFF, STANDBY, FAULT, INHIBITED = "OFF", "STANDBY", "FAULT", "INHIBITED"
ENGAGED = frozenset({ACTIVE, OVERRIDE, MRM})
DISENGAGED = frozenset({OFF, STANDBY, FAULT, INHIBITED})

# Warning levels.
HANDS_LEVELS = frozenset({"HANDS_ON_REQUEST", "HANDS_ON_ESCALATED"})
EYES_LEVELS = frozenset({"EYES_ON_REQUEST", "EYES_ON_ESCALATED"})
DRIVER_LEVELS = HANDS_LEVELS | EYES_LEVELS
TAKE_CONTROL = "TAKE_CONTROL"
ESCALATED = frozenset({"HANDS_ON_ESCALATED", "EYES_ON_ESCALATED"})

EXIT_REASONS = {"DRIVER": "driver", "SYSTEM_FAILURE": "system_failure",
                "ODD_EXIT": "odd_exit", "DRIVER_DISENGAGED": "driver_disengaged",
                "MRM": "mrm"}

SETTLE_S = 0.25
"""Wait after entering ACTIVE for the function that was engaged (a few 10-100 ms cycles)."""
EXIT_SETTLE_S = 0.5
"""Wait after leaving the engaged states for what explains it: the system's ExitReason
may come a few cycles after the State. One value for the record and the statistics."""


def fault_active(code: Any) -> bool:
    return isinstance(code, int) and code != 0


def exit_cues(value: Callable[[str], Any]) -> set[str]:
    """What explains an exit at this moment: ODD exceeded, brake, a driver warning, a fault."""
    cues = set()
    if value(ODD) == "EXCEEDED":
        cues.add("odd")
    if value(BRAKE) is True:
        cues.add("brake")
    level = value(WARNING)
    if level in DRIVER_LEVELS or level == TAKE_CONTROL:
        cues.add("warning")
    if fault_active(value(FAULT_CODE)):
        cues.add("fault")
    return cues


def decide_exit(to_state: str, was_mrm: bool, cues: set[str], own: Any,
                own_since: float | None, session_start: float | None) -> tuple[str, str]:
    """(reason, source) of an exit: the one rule of ``cda.deactivated`` and of the period
    statistics, so the regulator's event report and the event records cannot disagree."""
    if (own in EXIT_REASONS and own_since is not None and session_start is not None
            and own_since >= session_start):
        return EXIT_REASONS[own], "system"
    if to_state == FAULT or "fault" in cues:
        return "system_failure", "inferred"
    if was_mrm:
        return "mrm", "inferred"
    if "odd" in cues:
        return "odd_exit", "inferred"
    if "warning" in cues or to_state == INHIBITED:
        return "driver_disengaged", "inferred"
    if "override" in cues or "brake" in cues:
        return "driver", "inferred"
    return "unknown", "inferred"


@dataclass
class Session:
    start_t: float
    speed: float | None
    odo_start: float | None
    fn: Any = None                  # function now, and since when
    fn_t: float = 0.0
    function_s: dict[str, float] = field(default_factory=dict)
    announced: bool = False
    last_state: str = ACTIVE
    was_mrm: bool = False
    integrated_km: float = 0.0


@dataclass
class Exit:
    t: float
    to_state: str
    session: Session
    distance_km: float | None
    distance_source: str | None
    cues: set[str]


class CdaSessionMonitor(Monitor):
    name = "cda_session"
    inputs = (STATE,)
    watches = (STATE, FUNCTION, SPEED, ODD, BRAKE)
    tick_s = 0.1

    def __init__(self, ctx: Any):
        super().__init__(ctx)
        self._session: Session | None = None
        self._exit: Exit | None = None
        self._speed: float | None = None
        self._speed_t = 0.0
        self._odometer = self.state.mapped(ODOMETER)
        self._speed_mapped = self.state.mapped(SPEED)

    # -- signals -------------------------------------------------------------------------
    def on_signal(self, name: str, value: Any, t: float) -> None:
        s = self._session
        if name == SPEED:
            if s is not None:
                self._integrate(s, t)
            self._speed, self._speed_t = value, t
        elif name == FUNCTION:
            if s is not None:
                self._function(s, value, t)
        elif name == STATE:
            self._on_state(value, t)
        elif self._exit is not None:   # ODD / brake while the exit settles
            self._exit.cues |= self._cues_now()

    def _on_state(self, value: Any, t: float) -> None:
        if value is None:
            return
        s = self._session
        if s is None:
            if value == ACTIVE:
                if self._exit is not None:
                    self._finish_exit()
                self._begin(t)
            return
        if value in ENGAGED:
            s.last_state = value
            s.was_mrm = s.was_mrm or value == MRM
            return
        # left the engaged states: the session ends here
        if not s.announced:
            self._announce(s)
        self._integrate(s, t)
        self._function(s, None, t)
        distance, source = self._distance(s)
        cues = self._cues_now()
        if s.last_state == OVERRIDE:
            cues.add("override")
        self._exit = Exit(t, value, s, distance, source, cues)
        self._session = None

    def on_tick(self, t: float) -> None:
        s = self._session
        if s is not None and not s.announced and t >= s.start_t + SETTLE_S:
            self._announce(s)
        if self._exit is not None and t >= self._exit.t + EXIT_SETTLE_S:
            self._finish_exit()

    def stop(self, t: float) -> None:
        """Finish what is decided; an open session has no exit to report."""
        if self._session is not None and not self._session.announced:
            self._announce(self._session)
        if self._exit is not None:
            self._finish_exit()

    # -- session -------------------------------------------------------------------------
    def _begin(self, t: float) -> None:
        odo = self.value(ODOMETER) if self._odometer else None
        self._session = Session(start_t=t, speed=self.value(SPEED), odo_start=odo,
                                fn=self.value(FUNCTION), fn_t=t)

    def _announce(self, s: Session) -> None:
        s.announced = True
        self.emit("cda.activated", {"function": self.value(FUNCTION, "NONE"),
                                    "speed": finite(s.speed, 2)}, s.start_t)

    @staticmethod
    def _function(s: Session, value: Any, t: float) -> None:
        if s.fn not in (None, "NONE"):
            s.function_s[s.fn] = s.function_s.get(s.fn, 0.0) + (t - s.fn_t)
        s.fn, s.fn_t = value, t

    def _integrate(self, s: Session, t: float) -> None:
        if self._speed is not None:
            since = max(self._speed_t, s.start_t)
            s.integrated_km += self._speed * max(0.0, t - since) / 3600.0
        self._speed_t = t

    def _distance(self, s: Session) -> tuple[float | None, str | None]:
        if self._odometer:
            end = self.value(ODOMETER)
            if s.odo_start is not None and end is not None and end >= s.odo_start:
                return end - s.odo_start, "odometer"
        if self._speed_mapped:
            return s.integrated_km, "speed"
        return None, None

    def _cues_now(self) -> set[str]:
        return exit_cues(self.value)

    def _finish_exit(self) -> None:
        ex, self._exit = self._exit, None
        assert ex is not None
        s = ex.session
        fault = self.value(FAULT_CODE)
        reason, source = decide_exit(ex.to_state, s.was_mrm, ex.cues | self._cues_now(),
                                     self.value(EXIT_REASON), self.state.since(EXIT_REASON),
                                     s.start_t)
        main = max(s.function_s, key=s.function_s.__getitem__, default="NONE")
        data: dict[str, Any] = {
            "function": main,
            "function_s": {fn: finite(sec) for fn, sec in s.function_s.items()},
            "exit_reason": reason,
            "exit_reason_source": source,
            "to_state": ex.to_state,
            "start": iso_ms(self.ctx.utc(s.start_t)),
            "duration_s": finite(ex.t - s.start_t),
            "distance_km": finite(ex.distance_km, 4) if ex.distance_km is not None else None,
            "distance_source": ex.distance_source,
            "distance_speed_km": (finite(s.integrated_km, 4) if ex.distance_source == "odometer"
                                  and self._speed_mapped else None),
            "fault_code": fault if isinstance(fault, int) else None,
        }
        self.emit("cda.deactivated", data, ex.t)

