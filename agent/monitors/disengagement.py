"""Driver disengagement: hands-off and eyes-off episodes while the system is engaged
(ACTIVE or OVERRIDE) above the monitoring speed, the warnings the system gave, and
whether they came in time (Att.1 §(七)3,5; UN R171 style ``[limits]``).

An episode starts when the driver signal is known False while the system is engaged and
the speed is above ``limits.monitoring_speed_kmh`` (whichever of the three comes last);
the speed gate applies at the start only, so an MRM slowing the car does not end it. It
ends when the driver is back (hands on; eyes on road for at least
``limits.eyes_back_min_s`` -- a shorter glance does not end an eyes-off episode, and the
episode then ends when the look began), when an MRM starts (outcome ``mrm``) or when the
system disengages (``deactivated``). An unknown driver signal neither starts nor ends one.

Which episodes are recorded: one that lasted longer than its first-warning limit (plus
``TIMING_TOLERANCE_S``) or during which the system gave a warning of its kind. A brief
hands-off that the system rightly ignored is ordinary driving: no record, no violation.

``driver.disengagement`` is emitted when the episode ends, stamped with its end and
carrying ``start``. ``warnings`` lists every change of the warning (level, modality)
while the episode ran: ``at_s`` from the start, ``modality`` the bit set of docs/signals.md
(1 visual, 2 acoustic, 4 haptic; null where unmapped) and ``modalities`` its names.
``compliance`` holds one verdict per limit that applies: ``ok``; ``late`` (it came after
limit + tolerance); ``missing`` (the episode outlasted the limit without it). A limit
whose starting event never happened, or whose time had not run out when the episode
ended, is left out. Every ``late``/``missing`` also gives a ``selfcheck.violation``.

Eyes-off is a separate monitor, so a vehicle without a driver camera still gets hands-off
monitoring (and one ``agent.monitor_off`` for eyes-off).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from agent.monitors.base import Monitor, finite
from agent.monitors.cda import (
    ACTIVE,
    DISENGAGED,
    EYES_ON,
    HANDS_ON,
    MODALITY,
    MRM,
    OVERRIDE,
    SPEED,
    STATE,
    TAKE_CONTROL,
    WARNING,
)
from agent.monitors.selfcheck import TIMING_TOLERANCE_S, violation
from agent.signals import modality_names
from agent.timefmt import iso_ms

MONITORED = frozenset({ACTIVE, OVERRIDE})
RANK = {"NONE": 0, "HANDS_ON_REQUEST": 1, "EYES_ON_REQUEST": 1, "HANDS_ON_ESCALATED": 2,
        "EYES_ON_ESCALATED": 2, TAKE_CONTROL: 3}
MERGE_S = 0.1
"""A warning change this soon after the previous one completes it (level and modality may
come in different frames or messages): it replaces that entry and keeps its time."""


@dataclass
class Episode:
    start_t: float
    warnings: list[dict[str, Any]] = field(default_factory=list)
    back_t: float | None = None     # eyes on road since (not yet confirmed)
    current: tuple[Any, Any] = (None, None)   # warning (level, modality) now


class DisengagementMonitor(Monitor):
    """One kind of episode; subclasses name the driver signal, the levels and the limits."""

    kind: ClassVar[str] = ""
    driver: ClassVar[str] = ""
    request_levels: ClassVar[frozenset[str]] = frozenset()
    escalated_levels: ClassVar[frozenset[str]] = frozenset()
    first_limit: ClassVar[str] = ""

    def __init__(self, ctx: Any):
        super().__init__(ctx)
        self._ep: Episode | None = None

    # -- signals -------------------------------------------------------------------------
    def on_signal(self, name: str, value: Any, t: float) -> None:
        ep = self._ep
        if ep is not None and ep.back_t is not None:
            self._confirm_back(t)
            ep = self._ep
        if name == self.driver:
            if ep is None:
                if value is False:
                    self._maybe_start(t)
            elif value is True:
                self._driver_back(ep, t)
            else:   # off again (a glance too short) or unknown: not back
                ep.back_t = None
        elif name == STATE:
            if ep is None:
                self._maybe_start(t)
            elif value == MRM:
                self._end(t, "mrm")
            elif value in DISENGAGED:
                self._end(t, "deactivated")
        elif name == SPEED:
            if ep is None:
                self._maybe_start(t)
        elif ep is not None:    # warning level or modality
            self._warning(ep, t)

    def on_tick(self, t: float) -> None:
        if self._ep is not None and self._ep.back_t is not None:
            self._confirm_back(t)

    def _maybe_start(self, t: float) -> None:
        if (self.value(self.driver) is False and self.value(STATE) in MONITORED
                and (self.value(SPEED) or 0.0) > self.limits.monitoring_speed_kmh):
            self._ep = Episode(start_t=t)
            if self.value(WARNING) not in (None, "NONE"):
                self._warning(self._ep, t)

    def _driver_back(self, ep: Episode, t: float) -> None:
        self._end(t, "reengaged")

    def _confirm_back(self, t: float) -> None:
        pass

    def _warning(self, ep: Episode, t: float) -> None:
        level, modality = self.value(WARNING), self.value(MODALITY)
        previous = ep.current
        if (level, modality) == previous:
            return
        ep.current = (level, modality)
        if level in (None, "NONE"):
            return
        at = t - ep.start_t
        last = ep.warnings[-1] if ep.warnings else None
        if last is not None and previous[0] not in (None, "NONE") and (
                at - last["at_s"] <= MERGE_S):
            last = ep.warnings.pop()    # the rest of one change, spread over two frames
            at = last["at_s"]
        ep.warnings.append({"level": level, "at_s": at, "modality": modality,
                            "modalities": modality_names(modality or 0)})

    # -- episode end ---------------------------------------------------------------------
    def _end(self, t: float, outcome: str) -> None:
        ep, self._ep = self._ep, None
        assert ep is not None
        duration = t - ep.start_t
        warnings = [w for w in ep.warnings if w["at_s"] <= duration + 1e-6]
        own = [w for w in warnings if w["level"] in self.request_levels]
        if not own and duration <= getattr(self.limits, self.first_limit) + TIMING_TOLERANCE_S:
            return
        mrm_at = duration if outcome == "mrm" else None
        verdicts: dict[str, str] = {}
        measured: dict[str, float | None] = {}
        for limit, ref, event in self._checks(warnings, mrm_at):
            verdict = self._judge(getattr(self.limits, limit), ref, event, duration)
            if verdict is not None:
                verdicts[limit] = verdict
                measured[limit] = None if event is None else event - ref
        max_warning = "NONE"
        for w in warnings:
            if RANK.get(w["level"], 0) > RANK[max_warning]:
                max_warning = w["level"]
        start = iso_ms(self.ctx.utc(ep.start_t))
        for w in warnings:
            w["at_s"] = finite(w["at_s"])
        self.emit("driver.disengagement", {
            "kind": self.kind,
            "start": start,
            "duration_s": finite(duration),
            "max_warning": max_warning,
            "warnings": warnings,
            "outcome": outcome,
            "compliance": verdicts,
        }, t)
        for limit, verdict in verdicts.items():
            if verdict != "ok":
                observed = measured[limit]
                violation(self, t, limit, getattr(self.limits, limit),
                          None if observed is None else finite(observed), verdict,
                          kind=self.kind, episode_start=start)

    def _checks(self, warnings: list[dict[str, Any]], mrm_at: float | None
                ) -> list[tuple[str, float | None, float | None]]:
        """(limit, from, to) in seconds from the episode start; None = did not happen."""
        raise NotImplementedError

    @staticmethod
    def _first(warnings: list[dict[str, Any]], levels: frozenset[str]) -> float | None:
        return next((w["at_s"] for w in warnings if w["level"] in levels), None)

    @staticmethod
    def _judge(limit: float, ref: float | None, event: float | None,
               end: float) -> str | None:
        if ref is None:
            return None
        if event is not None:
            return "ok" if event - ref <= limit + TIMING_TOLERANCE_S else "late"
        return "missing" if end - ref > limit + TIMING_TOLERANCE_S else None


class HandsOffMonitor(DisengagementMonitor):
    name = "hands_off"
    kind = "hands_off"
    driver = HANDS_ON
    inputs = (STATE, SPEED, HANDS_ON, WARNING)
    watches = (STATE, SPEED, HANDS_ON, WARNING, MODALITY)
    request_levels = frozenset({"HANDS_ON_REQUEST", "HANDS_ON_ESCALATED", TAKE_CONTROL})
    escalated_levels = frozenset({"HANDS_ON_ESCALATED", TAKE_CONTROL})
    first_limit = "hands_off_to_request_s"

    def _checks(self, warnings: list[dict[str, Any]], mrm_at: float | None
                ) -> list[tuple[str, float | None, float | None]]:
        request = self._first(warnings, self.request_levels)
        escalated = self._first(warnings, self.escalated_levels)
        return [("hands_off_to_request_s", 0.0, request),
                ("hands_request_to_escalated_s", request, escalated),
                ("escalated_to_mrm_s", escalated, mrm_at)]


class EyesOffMonitor(DisengagementMonitor):
    name = "eyes_off"
    kind = "eyes_off"
    driver = EYES_ON
    inputs = (STATE, SPEED, EYES_ON, WARNING)
    watches = (STATE, SPEED, EYES_ON, WARNING, MODALITY)
    tick_s = 0.1
    request_levels = frozenset({"EYES_ON_REQUEST", "EYES_ON_ESCALATED", TAKE_CONTROL})
    escalated_levels = frozenset({"EYES_ON_ESCALATED", TAKE_CONTROL})
    first_limit = "eyes_off_to_request_s"

    def _driver_back(self, ep: Episode, t: float) -> None:
        if ep.back_t is None:
            ep.back_t = t

    def _confirm_back(self, t: float) -> None:
        ep = self._ep
        if ep is not None and ep.back_t is not None and (
                t - ep.back_t >= self.limits.eyes_back_min_s - 1e-9):
            self._end(ep.back_t, "reengaged")

    def _checks(self, warnings: list[dict[str, Any]], mrm_at: float | None
                ) -> list[tuple[str, float | None, float | None]]:
        request = self._first(warnings, self.request_levels)
        escalated = self._first(warnings, self.escalated_levels)
        take = self._first(warnings, frozenset({TAKE_CONTROL}))
        return [("eyes_off_to_request_s", 0.0, request),
                ("eyes_request_to_escalated_s", request, escalated),
                ("eyes_escalated_to_take_control_s", escalated, take),
                ("escalated_to_mrm_s", escalated, mrm_at)]
