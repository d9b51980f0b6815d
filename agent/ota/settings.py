"""OTA section of the agent config (``[ota]``, ``[[ecu]]``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class OtaConfig:
    enabled: bool = False
    # Preconditions for the safe state (regulation §2).
    require_gear: str = "P"
    require_parking_brake: bool = True
    max_speed_kmh: float = 0.0
    allowed_power_states: list[str] = field(default_factory=lambda: ["ON"])
    min_lv_voltage: float = 12.0
    min_soc_percent: float = 30.0
    require_cda_off: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class EcuConfig:
    name: str = ""
    bus: str = ""
    txid: int = 0
    rxid: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
