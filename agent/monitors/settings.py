"""The monitors' own section of the agent config (``[limits]``): owned here so that
importing the monitors loads nothing of the journal, the uplink or OTA."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class LimitsConfig:
    """Default limits (UN R171, CN L2 draft, GB 39732, NHTSA SGO); each explained in
    config/full.toml."""

    monitoring_speed_kmh: float = 10.0
    hands_off_to_request_s: float = 5.0
    hands_request_to_escalated_s: float = 10.0
    eyes_off_to_request_s: float = 5.0
    eyes_request_to_escalated_s: float = 3.0
    eyes_escalated_to_take_control_s: float = 5.0
    escalated_to_mrm_s: float = 10.0
    eyes_back_min_s: float = 0.2
    lockout_after_mrm: int = 1
    lockout_after_escalations: int = 3
    escalation_window_s: float = 1800.0
    lockout_min_s: float = 1800.0
    mrm_requires_hazard_lights: bool = True
    delta_v_kmh: float = 8.0
    delta_v_window_s: float = 0.15
    accident_before_s: float = 30.0
    accident_after_s: float = 10.0
    cda_in_use_lookback_s: float = 30.0
    cda_in_use_short_s: float = 5.0
