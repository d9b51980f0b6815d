"""Campaign settings that ``OtaConfig`` does not (yet) have fields for, read from
``[ota.extra]`` with the same typed loader (unknown keys and wrong types are errors)::

    [ota.extra]
    consent_timeout_s = 3600          # an offer nobody answers fails (consent_timeout)
    not_required = ["soc"]            # conditions whose unknown value does not block
    progress_step_percent = 25        # ota.progress records at 25/50/75 %

    [ota.extra.hmi]                   # HMI adapter on (local) MQTT, see docs/ota.md
    enabled = true
    host = ""                         # "" = the [uplink] broker and its TLS files
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.model import ConfigError, Problems, build
from agent.ota.preconditions import CONDITIONS


@dataclass
class HmiConfig:
    enabled: bool = True
    host: str = ""                 # "" = same broker as [uplink]
    port: int = 0                  # 0 = [uplink] port (or 1883 without uplink)
    tls: bool = True
    ca: str = ""
    cert: str = ""
    key: str = ""
    client_id: str = ""            # default "<VIN>-hmi"


@dataclass
class CampaignSettings:
    consent_timeout_s: float = field(default=3600.0, metadata={"above": 0})
    not_required: list[str] = field(default_factory=list, metadata={"each": {
        "choices": CONDITIONS, "message": "unknown condition {value!r}, known: "
        + ", ".join(CONDITIONS)}})
    progress_step_percent: int = field(default=25, metadata={
        "range": (1, 100), "message": "must be 1..100"})
    # how often the bench CLI's consent rows are looked for
    consent_poll_s: float = field(default=0.2, metadata={"above": 0})
    inventory_at_start: bool = True
    hmi: HmiConfig = field(default_factory=HmiConfig)


def campaign_settings(extra: dict[str, Any], file: str | Path = "config") -> CampaignSettings:
    """Typed ``[ota.extra]``; ``ConfigError`` naming the key on a problem."""
    problems = Problems()
    settings = build(CampaignSettings, extra or {}, file, problems, "ota.extra")
    if problems:
        raise ConfigError(problems)
    return settings
