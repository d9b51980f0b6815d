"""Lockout (activation prohibited after misuse): ``cda.lockout`` when State enters
INHIBITED, ``cda.lockout_cleared`` when it leaves it, and the lockout self-checks.

Misuse that calls for a lockout (``[limits]``): ``lockout_after_mrm`` MRMs begun
while the driver was being warned (hands/eyes), or ``lockout_after_escalations``
escalated hands/eyes warnings within ``escalation_window_s``. ``reason`` is
``mrm_driver_unresponsive`` / ``escalated_warnings`` for those, ``escalated_warnings``
too when fewer escalations than the limit preceded it (the system may be stricter),
else ``other``. An escalation is the warning reaching HANDS_ON_ESCALATED or
EYES_ON_ESCALATED from a lower level; a take-over alert after it is the same one.

A lockout ends when the state shows activation is possible again (STANDBY, ACTIVE, ...);
OFF or FAULT after INHIBITED do not end it.

Self-checks: when misuse calls for a lockout and the system, after the session ended, is
available again (STANDBY, with no INHIBITED within ``LOCKOUT_GRACE_S``) or is activated
again, ``selfcheck.violation`` (rule ``lockout_after_mrm`` / ``lockout_after_escalations``).
A misuse lockout that clears before ``lockout_min_s`` gives rule ``lockout_min_s``.

The lockout start, the escalation times and a pending expectation are persisted
(``ctx.persist``) in UTC, because data time restarts with the agent: a lockout that
spans a restart is timed from its persisted UTC start (``across_restart`` true; the end
is when the agent first saw the state again, so the duration is an upper bound and a
violation judged on it is certain).
"""

from __future__ import annotations

from typing import Any

from agent.monitors.base import Monitor, finite
from agent.monitors.cda import (
    ACTIVE,
    ESCALATED,
    FAULT,
    INHIBITED,
    MRM,
    OFF,
    OVERRIDE,
    STANDBY,
    STATE,
    TAKE_CONTROL,
    WARNING,
)
from agent.monitors.mrm import WarningSequence
from agent.monitors.selfcheck import violation
from agent.timefmt import iso_ms

KEY = "monitor.lockout"
AVAILABLE = frozenset({STANDBY, ACTIVE, OVERRIDE, MRM})
"""States that show activation is possible again: only these end a lockout (OFF or FAULT
after INHIBITED says nothing about it, e.g. OFF while the ADCU powers up)."""
LOCKOUT_GRACE_S = 3.0
"""After the session ends, time allowed for the state to move on to INHIBITED."""
MISUSE_REASONS = {"mrm_driver_unresponsive": "lockout_after_mrm",
                  "escalated_warnings": "lockout_after_escalations"}


class LockoutMonitor(Monitor):
    name = "lockout"
    inputs = (STATE,)
    watches = (STATE, WARNING)
    tick_s = 0.5

    def __init__(self, ctx: Any):
        super().__init__(ctx)
        self._lock: dict[str, Any] | None = None    # start_utc, reason, (start_t this run)
        self._escalations: list[float] = []         # UTC
        self._mrms: list[float] = []                # UTC, MRMs for disengagement
        self._due: dict[str, Any] | None = None     # reason, utc: misuse wants a lockout
        self._grace_until: float | None = None
        self._level: Any = None
        self._state: Any = None
        self._warnings = WarningSequence()

    def start(self, t: float) -> None:
        saved = self.ctx.load(KEY, None) or {}
        self._lock = saved.get("lock")
        if self._lock is not None:
            self._lock["restored"] = True
        self._escalations = list(saved.get("escalations", []))
        self._mrms = list(saved.get("mrms", []))
        self._due = saved.get("due")

    def stop(self, t: float) -> None:
        if self._lock is not None and self._state == INHIBITED:
            self._lock["seen_utc"] = self.ctx.utc(t)
            self._save()

    def _save(self) -> None:
        lock = None
        if self._lock is not None:
            lock = {k: v for k, v in self._lock.items() if k in ("start_utc", "reason",
                                                                 "seen_utc")}
        self.ctx.persist(KEY, {"lock": lock, "escalations": self._escalations,
                               "mrms": self._mrms, "due": self._due})

    # -- signals -------------------------------------------------------------------------
    def on_signal(self, name: str, value: Any, t: float) -> None:
        if value is None:
            return
        if name == WARNING:
            self._warnings.update(value, t)
            if value in ESCALATED and self._level not in ESCALATED | {TAKE_CONTROL}:
                self._escalation(t)
            self._level = value
            return
        prev, self._state = self._state, value
        if value == INHIBITED:
            if self._lock is None:
                self._begin(t)
            return
        if self._lock is not None:
            if value not in AVAILABLE:
                return      # switched off or failed: activation still impossible
            self._clear(t)
        if value == MRM and prev != MRM and self._warnings.driver_warned(t):
            self._mrms = self._recent(self._mrms, t) + [self.ctx.utc(t)]
            if len(self._mrms) >= self.limits.lockout_after_mrm:
                self._expect("mrm_driver_unresponsive", t)
            self._save()
        elif self._due is None:
            pass
        elif value == ACTIVE and self._due.get("ended"):
            self._missing(t, "activated again")
        elif value in (OFF, STANDBY, FAULT):
            self._due["ended"] = True
            if value == STANDBY and self._grace_until is None:
                self._grace_until = t + LOCKOUT_GRACE_S

    def on_tick(self, t: float) -> None:
        if self._grace_until is not None and t >= self._grace_until:
            self._grace_until = None
            if self._due is not None and self._state == STANDBY:
                self._missing(t, "available again (STANDBY)")

    # -- misuse --------------------------------------------------------------------------
    def _recent(self, times: list[float], t: float) -> list[float]:
        now = self.ctx.utc(t)
        return [u for u in times if now - u <= self.limits.escalation_window_s]

    def _escalation(self, t: float) -> None:
        self._escalations = self._recent(self._escalations, t) + [self.ctx.utc(t)]
        if len(self._escalations) >= self.limits.lockout_after_escalations:
            self._expect("escalated_warnings", t)
        self._save()

    def _expect(self, reason: str, t: float) -> None:
        if self._due is None and self._lock is None:
            self._due = {"reason": reason, "utc": self.ctx.utc(t), "ended": False}

    def _missing(self, t: float, observed: str) -> None:
        due, self._due = self._due, None
        self._grace_until = None
        assert due is not None
        rule = MISUSE_REASONS[due["reason"]]
        violation(self, t, rule, getattr(self.limits, rule), observed,
                  expected_state=INHIBITED, misuse_at=iso_ms(due["utc"]))
        if due["reason"] == "escalated_warnings":
            self._escalations = []
        else:
            self._mrms = []
        self._save()

    # -- lockout -------------------------------------------------------------------------
    def _begin(self, t: float) -> None:
        if self._due is not None:
            reason = self._due["reason"]
        elif self._recent(self._escalations, t):
            reason = "escalated_warnings"
        else:
            reason = "other"
        escalations = len(self._recent(self._escalations, t))
        self._lock = {"start_utc": self.ctx.utc(t), "reason": reason, "start_t": t}
        self._due, self._grace_until = None, None
        self._escalations, self._mrms = [], []
        self._save()
        self.emit("cda.lockout", {"reason": reason, "escalations": escalations,
                                  "min_s": self.limits.lockout_min_s}, t)

    def _clear(self, t: float) -> None:
        lock, self._lock = self._lock, None
        assert lock is not None
        restored = bool(lock.get("restored"))
        duration = (self.ctx.utc(t) - lock["start_utc"]) if restored else t - lock["start_t"]
        duration = max(0.0, duration)
        data: dict[str, Any] = {"duration_s": finite(duration), "reason": lock["reason"],
                                "start": iso_ms(lock["start_utc"]),
                                "across_restart": restored}
        if restored and lock.get("seen_utc") is not None:
            data["last_seen_inhibited"] = iso_ms(lock["seen_utc"])
        self._save()
        self.emit("cda.lockout_cleared", data, t)
        if lock["reason"] in MISUSE_REASONS and duration < self.limits.lockout_min_s:
            violation(self, t, "lockout_min_s", self.limits.lockout_min_s, finite(duration),
                      reason=lock["reason"], lockout_start=data["start"])
