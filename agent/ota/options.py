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
    consent_timeout_s: float = 3600.0
    not_required: list[str] = field(default_factory=list)
    progress_step_percent: int = 25
    consent_poll_s: float = 0.2    # how often the bench CLI's consent rows are looked for
    inventory_at_start: bool = True
    hmi: HmiConfig = field(default_factory=HmiConfig)


def campaign_settings(extra: dict[str, Any], file: str | Path = "config") -> CampaignSettings:
    """Typed ``[ota.extra]``; ``ConfigError`` naming the key on a problem."""
    problems = Problems()
    settings = build(CampaignSettings, extra or {}, file, problems, "ota.extra")
    if settings.consent_timeout_s <= 0:
        problems.add(file, "ota.extra.consent_timeout_s", "must be > 0")
    if not 1 <= settings.progress_step_percent <= 100:
        problems.add(file, "ota.extra.progress_step_percent", "must be 1..100")
    if settings.consent_poll_s <= 0:
        problems.add(file, "ota.extra.consent_poll_s", "must be > 0")
    for i, name in enumerate(settings.not_required):
        if name not in CONDITIONS:
            problems.add(file, f"ota.extra.not_required[{i}]",
                         f"unknown condition {name!r}, known: {', '.join(CONDITIONS)}")
    if problems:
        raise ConfigError(problems)
    return settings
