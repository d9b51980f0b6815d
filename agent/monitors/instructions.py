"""Use-instructions confirmation per ignition cycle (draft GB 组合驾驶辅助系统安全要求: the
driver confirms the training / use instructions at every power-on before the system may be
activated; activating without it is misuse).

``cda.misuse`` when CDA is activated, or the driver tries to, without a confirmation of
this ignition cycle:

``kind``          ``activation`` (State entered ACTIVE) or ``activation_attempt`` (the
                  driver operated the activation control, ``IsActivationRequested``, and
                  the system did not become ACTIVE within ``ATTEMPT_SETTLE_S``)
``confirmation``  ``not_confirmed`` (false), or ``carried_over``: true, but not reset to
                  false since this cycle began, so it confirms an earlier cycle
``requested``     whether an activation request came with it (within
                  ``ATTEMPT_SETTLE_S`` before or ``SETTLE_S`` after; null: not mapped)
``ignition_cycle``, ``cycle_source``, ``cycle_start``: the cycle it happened in

An activation is judged on the confirmation at the State change and decided ``SETTLE_S``
later (the function and the request, from slower HMI frames, may come a little after the
State), stamped with the State change. An activation without confirmation also gives
``selfcheck.violation`` (rule
``instructions_confirmation_required``): the system should have refused it. With the limit
false nothing is judged. A confirmation that is unknown (stale, or an invalid value) at the
moment judges nothing either; where ``IsInstructionsConfirmed`` is unmapped the monitor says
so once (``agent.monitor_degraded``) and records nothing.

Ignition cycle: a change of ``Vehicle.IgnitionCycle`` where it is mapped, else
``LowVoltageSystemState`` entering ON or START from OFF or ACC. The HMI resets the flag to
false at every power-on, so in a cycle the agent saw begin, a confirmation counts only
after a false was seen in it (a true that goes unknown and comes back is still the same
true). The cycle the agent started in (``cycle_source`` ``agent_start``, ``cycle_start``
null: it began before) takes a true at first sight: the reset may have come before the
agent did. The counter and the confirmation are persisted (``ctx.persist``), so an agent
that starts with every ignition still sees the counter change and judges the new cycle
(``cycle_source`` ``counter``, ``cycle_start`` null); by power mode alone it cannot.

The period statistics count every record (``misuse.*``, ``selfcheck.*``) and every new
cycle (``ignition_cycles``) through ``on_count``.
"""

from __future__ import annotations

from typing import Any

from agent.monitors.base import CountedMonitor
from agent.monitors.cda import ACTIVE, ENGAGED, FUNCTION, SETTLE_S, SPEED, STATE, _name
from agent.monitors.selfcheck import INSTRUCTIONS_RULE, violation
from agent.timefmt import iso_ms

CONFIRMED = _name("Vehicle.ADAS.CDA.IsInstructionsConfirmed")
REQUEST = _name("Vehicle.ADAS.CDA.IsActivationRequested")
CYCLE = _name("Vehicle.IgnitionCycle")
POWER = _name("Vehicle.LowVoltageSystemState")
POWER_ON = frozenset({"ON", "START"})
POWER_OFF = frozenset({"OFF", "ACC"})

KEY = "monitor.instructions"
ATTEMPT_SETTLE_S = 1.0
"""After an activation request, how long the system has to become ACTIVE: within it the
request and the activation are one case (kind ``activation``), after it a refused attempt."""


class InstructionsMonitor(CountedMonitor):
    name = "instructions"
    inputs = (STATE,)
    watches = (STATE, CONFIRMED, REQUEST, CYCLE, POWER)
    tick_s = 0.25

    def __init__(self, ctx: Any):
        super().__init__(ctx)
        self.enabled = self.state.mapped(CONFIRMED)
        self.by_counter = self.state.mapped(CYCLE)
        self.request_mapped = self.state.mapped(REQUEST)
        self.cycle: Any = None                   # counter value of the running cycle
        self.cycle_start: float | None = None    # data time; None: before the agent started
        self.cycle_source = "agent_start"
        self.seen_begin = False                  # the agent saw this cycle begin
        self.reset_seen = False                  # a false seen in this cycle
        self.valid = False                       # the true now confirms this cycle
        self.last_confirmed: Any = None          # last known value
        self.power: Any = None
        self.engaged = False
        self.attempt: tuple[float, str | None] | None = None  # request edge, its verdict
        self.activation: tuple[float, str | None, bool] | None = None  # t, verdict, requested
        self.saved: dict[str, Any] | None = None  # persisted by the last run, until used

    def start(self, t: float) -> None:
        if not self.enabled:
            self.emit("agent.monitor_degraded", {
                "monitor": self.name, "missing": [CONFIRMED],
                "unavailable": ["instructions_confirmation"], "available": []}, t)
            return
        saved = self.ctx.load(KEY, None)
        if isinstance(saved, dict) and self.by_counter:
            self.saved = saved

    def stop(self, t: float) -> None:
        if self.activation is not None:
            self._decide_activation()
        if self.enabled:
            self._save()

    def _save(self) -> None:
        if self.by_counter and self.cycle is not None:
            self.ctx.persist(KEY, {"cycle": self.cycle, "confirmed": self.last_confirmed,
                                   "valid": self.valid, "reset_seen": self.reset_seen})

    # -- signals -------------------------------------------------------------------------
    def on_signal(self, name: str, value: Any, t: float) -> None:
        if not self.enabled:
            return
        if name == CYCLE:
            if value is not None:
                if self.cycle is None and self.saved is not None:
                    self._restore(value, t)
                elif self.cycle is not None and value != self.cycle:
                    self._new_cycle(t, "counter")
                self.cycle = value
                self._save()
        elif name == POWER:
            if (not self.by_counter and value in POWER_ON and self.power in POWER_OFF):
                self._new_cycle(t, "power_mode")
            if value is not None:
                self.power = value
        elif name == CONFIRMED:
            if value is None:
                return                      # unknown: the last known value stands
            if value is False:
                self.reset_seen, self.valid = True, False
            elif self.last_confirmed is not True:
                self.valid = self.reset_seen or not self.seen_begin
            if value != self.last_confirmed:
                self.last_confirmed = value
                self._save()
        elif name == REQUEST:
            if value is True and self.activation is not None:
                self.activation = (*self.activation[:2], True)
            elif value is True and not self.engaged and self.attempt is None:
                self.attempt = (t, self._unconfirmed())
        elif name == STATE and value is not None:
            was, self.engaged = self.engaged, value in ENGAGED
            if value == ACTIVE and not was:
                self._activated(t)

    def on_tick(self, t: float) -> None:
        if self.activation is not None and t >= self.activation[0] + SETTLE_S:
            self._decide_activation()
        if self.attempt is not None and t - self.attempt[0] >= ATTEMPT_SETTLE_S:
            (at, confirmation), self.attempt = self.attempt, None
            if confirmation is not None and self.limits.instructions_confirmation_required:
                self._misuse("activation_attempt", confirmation, at, requested=True)

    # -- cycles and judgements -------------------------------------------------------------
    def _new_cycle(self, t: float, source: str, *, begun: bool = True) -> None:
        """A new cycle seen at ``t``; ``begun`` false: it began while the agent was off."""
        self.cycle_start, self.cycle_source = (t if begun else None), source
        self.seen_begin, self.reset_seen, self.valid = True, False, False
        self.count("ignition_cycles", t)

    def _restore(self, value: Any, t: float) -> None:
        """First counter value after a start: the same cycle as before (its confirmation
        state) or a new one that began while the agent was off."""
        saved, self.saved = self.saved or {}, None
        if saved.get("cycle") == value:
            self.valid = bool(saved.get("valid"))
            self.reset_seen = bool(saved.get("reset_seen"))
            self.seen_begin = True
            self.cycle_source = "counter"
        else:
            self._new_cycle(t, "counter", begun=False)
        if saved.get("confirmed") in (True, False) and self.last_confirmed is None:
            self.last_confirmed = saved["confirmed"]

    def _unconfirmed(self) -> str | None:
        """Why the driver is not confirmed now: ``not_confirmed`` / ``carried_over``; None
        when confirmed or unknown."""
        value = self.value(CONFIRMED)
        if value is False:
            return "not_confirmed"
        if value is True and not self.valid:
            return "carried_over"
        return None

    def _activated(self, t: float) -> None:
        if self.activation is not None:
            self._decide_activation()
        self.activation = (t, self._unconfirmed(), self.attempt is not None)
        self.attempt = None

    def _decide_activation(self) -> None:
        assert self.activation is not None
        (t, confirmation, requested), self.activation = self.activation, None
        if confirmation is None or not self.limits.instructions_confirmation_required:
            return
        self._misuse("activation", confirmation, t,
                     requested=requested if self.request_mapped else None)
        violation(self, t, INSTRUCTIONS_RULE, True,
                  "activated without a confirmation of this ignition cycle"
                  if confirmation == "not_confirmed" else
                  "activated on a confirmation carried over from an earlier ignition cycle",
                  confirmation=confirmation, ignition_cycle=self._cycle_value())
        self.count(f"selfcheck.{INSTRUCTIONS_RULE}", t)

    def _cycle_value(self) -> int | None:
        return self.cycle if isinstance(self.cycle, int) else None

    def _misuse(self, kind: str, confirmation: str, t: float, *,
                requested: bool | None) -> None:
        start = self.cycle_start
        speed = self.value(SPEED)
        self.emit("cda.misuse", {
            "kind": kind,
            "confirmation": confirmation,
            "requested": requested,
            "function": self.value(FUNCTION),
            "cda_state": self.value(STATE),
            "speed": round(float(speed), 2) if isinstance(speed, (int, float)) else None,
            "ignition_cycle": self._cycle_value(),
            "cycle_source": self.cycle_source,
            "cycle_start": None if start is None else iso_ms(self.ctx.utc(start)),
        }, t)
        self.count(f"misuse.unconfirmed_{kind}", t)
