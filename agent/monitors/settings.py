"""The monitors' own section of the agent config (``[limits]``): owned here so that
importing the monitors loads nothing of the journal, the uplink or OTA."""

from __future__ import annotations

from dataclasses import dataclass, field

NOT_NEGATIVE = {"range": (0, None)}
POSITIVE = {"above": 0}


@dataclass
class LimitsConfig:
    """Default limits (UN R171, CN L2 draft, GB 39732, NHTSA SGO); each explained in
    config/full.toml. No limit is negative; the delta-V thresholds and windows are > 0 (the
    windows divide)."""

    monitoring_speed_kmh: float = field(default=10.0, metadata=NOT_NEGATIVE)
    hands_off_to_request_s: float = field(default=5.0, metadata=NOT_NEGATIVE)
    hands_request_to_escalated_s: float = field(default=10.0, metadata=NOT_NEGATIVE)
    eyes_off_to_request_s: float = field(default=5.0, metadata=NOT_NEGATIVE)
    eyes_request_to_escalated_s: float = field(default=3.0, metadata=NOT_NEGATIVE)
    eyes_escalated_to_take_control_s: float = field(default=5.0, metadata=NOT_NEGATIVE)
    escalated_to_mrm_s: float = field(default=10.0, metadata=NOT_NEGATIVE)
    eyes_back_min_s: float = field(default=0.2, metadata=NOT_NEGATIVE)
    lockout_after_mrm: int = field(default=1, metadata=NOT_NEGATIVE)
    lockout_after_escalations: int = field(default=3, metadata=NOT_NEGATIVE)
    escalation_window_s: float = field(default=1800.0, metadata=NOT_NEGATIVE)
    lockout_min_s: float = field(default=1800.0, metadata=NOT_NEGATIVE)
    mrm_requires_hazard_lights: bool = True
    delta_v_kmh: float = field(default=8.0, metadata=POSITIVE)
    delta_v_window_s: float = field(default=0.15, metadata=POSITIVE)
    accident_before_s: float = field(default=30.0, metadata=NOT_NEGATIVE)
    accident_after_s: float = field(default=10.0, metadata=NOT_NEGATIVE)
    cda_in_use_lookback_s: float = field(default=30.0, metadata=NOT_NEGATIVE)
    cda_in_use_short_s: float = field(default=5.0, metadata=NOT_NEGATIVE)
    # Draft GB 组合驾驶辅助系统安全要求: the use instructions confirmed at every ignition
    # before activation (else misuse, and a violation if the system activated anyway);
    # AEB not suppressed while CDA is in use.
    instructions_confirmation_required: bool = True
    aeb_must_stay_available: bool = True
    # GB 39732-2020 (EDR) on the CAN acceleration: trigger, lock and time zero.
    edr_trigger_delta_v_kmh: float = field(default=8.0, metadata=POSITIVE)
    edr_lock_delta_v_kmh: float = field(default=25.0, metadata=POSITIVE)
    edr_window_s: float = field(default=0.15, metadata=POSITIVE)
    edr_time_zero_delta_v_kmh: float = field(default=0.8, metadata=POSITIVE)
    edr_time_zero_window_s: float = field(default=0.02, metadata=POSITIVE)
