"""Self-check: ``selfcheck.violation`` when the monitored system breaks one of the
``[limits]``.

Each check lives in the monitor that already follows the behaviour (one state machine
per concern, no second copy of it); this module names the rules and builds the record,
so every violation reads the same way:

``rule``      the ``LimitsConfig`` field of the broken limit
``expected``  that limit's configured value
``observed``  what the system did: seconds, a state or a bool; null = it never happened
``verdict``   ``late`` / ``missing`` for timing rules, else ``broken``

Rules and where they are checked:

- ``hands_off_to_request_s``, ``hands_request_to_escalated_s``, ``eyes_off_to_request_s``,
  ``eyes_request_to_escalated_s``, ``eyes_escalated_to_take_control_s``,
  ``escalated_to_mrm_s``: a warning came late or never (``disengagement``, when the
  episode ends).
- ``lockout_after_mrm``, ``lockout_after_escalations``: misuse called for a lockout but
  the system was not INHIBITED when the session ended (within ``LOCKOUT_GRACE_S``) or was
  activated again (``lockout``).
- ``lockout_min_s``: a misuse lockout cleared before the minimum duration (``lockout``).
- ``mrm_requires_hazard_lights``: an MRM ran without hazard lights (``mrm``).
- ``instructions_confirmation_required``: CDA became ACTIVE although the driver had not
  confirmed the use instructions in this ignition cycle (``instructions``).
- ``aeb_must_stay_available``: AEB became unavailable while CDA was in use
  (``aeb_availability``).
"""

from __future__ import annotations

from typing import Any

from agent.monitors.base import Monitor

TIMING_RULES = ("hands_off_to_request_s", "hands_request_to_escalated_s",
                "eyes_off_to_request_s", "eyes_request_to_escalated_s",
                "eyes_escalated_to_take_control_s", "escalated_to_mrm_s")
LOCKOUT_RULES = ("lockout_after_mrm", "lockout_after_escalations", "lockout_min_s")
HAZARD_RULE = "mrm_requires_hazard_lights"
INSTRUCTIONS_RULE = "instructions_confirmation_required"
AEB_RULE = "aeb_must_stay_available"

TIMING_TOLERANCE_S = 0.25
"""Slack on timing limits: the delay between two bus signals is only known to about one
cycle of each message (10-100 ms), so a warning is late only beyond limit + tolerance."""


def violation(monitor: Monitor, t: float, rule: str, expected: Any, observed: Any,
              verdict: str = "broken", **context: Any) -> None:
    """Emit one ``selfcheck.violation`` at ``t`` (context: extra fields naming the case)."""
    data: dict[str, Any] = {"rule": rule, "expected": expected, "observed": observed,
                            "verdict": verdict, "monitor": monitor.name}
    data.update(context)
    monitor.emit("selfcheck.violation", data, t)
