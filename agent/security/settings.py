"""Security section of the agent config (``[security]``, GB 44495)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SecurityConfig:
    # Endpoints the agent may connect to (the MQTT broker, the OTA repositories), as
    # ``host:port`` patterns: ``*`` and ``?`` match in the host (case-insensitive), the
    # port is a number or ``*``; IPv6 as ``[::1]:8883``. Empty: exactly the endpoints the
    # config names itself ([uplink] host:port, [ota.uptane] director_url and image_url).
    # A connection to anything else is refused and recorded (``security.endpoint_refused``).
    allowed_endpoints: list[str] = field(default_factory=list)
    # At most this many security.* records per kind and window; the rest are counted and
    # told in the next record of that kind (``suppressed``), so a flood of forged
    # commands cannot push the update records out of their lane.
    events_per_window: int = 20
    window_s: float = 60.0
